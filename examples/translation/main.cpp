// torchattn-translate: trains, runs, evaluates and visualises a small English -> French
// translation model built from torchattn's attention modules. See README.md in this directory.

#include "attention_views.h"
#include "bleu.h"
#include "corpus.h"
#include "data.h"
#include "decode.h"
#include "ensemble.h"
#include "heatmap.h"
#include "trainer.h"

#include <torchattn/distributed/process_group.h>
#include <torchattn/ops/capability.h>

#include <fmt/format.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace fs = std::filesystem;
using namespace translate;

namespace {

std::string default_dir(const char* name) {
  return name;
}

/// Trains the SentencePiece models of both sides on the training split (`subwords` unigram or
/// bpe), or removes stale ones (`subwords` none), in the data directory `out`.
void prepare_subwords(
    const std::vector<Example>& train, const fs::path& out, const std::string& subwords,
    int64_t vocab_size) {
  const fs::path src_model = out / kSrcSentencePiece, tgt_model = out / kTgtSentencePiece;
  if (subwords == "none") {
    fs::remove(src_model);
    fs::remove(tgt_model);
    return;
  }
  std::vector<std::string> src, tgt;
  for (const auto& e : train) {
    src.push_back(e.source);
    tgt.insert(tgt.end(), e.references.begin(), e.references.end());
  }
  const auto start = std::chrono::steady_clock::now();
  Tokenizer::train_sentencepiece(src, src_model.string(), subwords, vocab_size);
  Tokenizer::train_sentencepiece(tgt, tgt_model.string(), subwords, vocab_size);
  fmt::print(
      stderr, "prepare: trained {} SentencePiece models of {} pieces a side in {:.1f} s\n",
      subwords, vocab_size,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

int cmd_prepare(
    const std::string& data, const std::string& out, const std::string& cache, double dev,
    double test, uint64_t seed, const std::string& subwords, int64_t vocab_size) {
  std::vector<Example> examples;
  if (!data.empty()) {
    examples = read_examples(data);
    fmt::print(stderr, "prepare: {} source sentences from '{}'\n", examples.size(), data);
  } else {
    examples = gettext_corpus(cache);
  }
  const Split s = split_examples(std::move(examples), dev, test, seed);
  fs::create_directories(out);
  write_examples((fs::path(out) / "train.tsv").string(), s.train);
  write_examples((fs::path(out) / "dev.tsv").string(), s.dev);
  write_examples((fs::path(out) / "test.tsv").string(), s.test);
  prepare_subwords(s.train, out, subwords, vocab_size);
  auto pairs = [](const std::vector<Example>& v) {
    size_t n = 0;
    for (const auto& e : v)
      n += e.references.size();
    return n;
  };
  fmt::print(
      "prepare: wrote '{}': train {} sources ({} pairs), dev {} ({}), test {} ({})\n", out,
      s.train.size(), pairs(s.train), s.dev.size(), pairs(s.dev), s.test.size(), pairs(s.test));
  return 0;
}

/// A finite number in [lo, hi] (CLI::Range lets NaN through).
CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double x = 0;
        try {
          size_t used = 0;
          x = std::stod(s, &used);
          if (used != s.size())
            return "'" + s + "' is not a number";
        } catch (const std::exception&) {
          return "'" + s + "' is not a number";
        }
        if (!std::isfinite(x) || x < lo || x > hi) {
          return fmt::format("{} is not a finite number in [{}, {}]", s, lo, hi);
        }
        return {};
      },
      fmt::format("FINITE in [{} - {}]", lo, hi));
}

/// Checks the sentences to translate: well-formed UTF-8 and not empty, and says which ones
/// are longer than the model reads. `from_stdin`: empty lines are kept (so that output lines
/// match input lines) with a warning; as arguments they are errors.
void check_sentences(
    const std::vector<std::string>& sentences, bool from_stdin, const Translator& t) {
  const int64_t max_len = t.options.max_len;
  const char* what = from_stdin ? "line" : "sentence";
  for (size_t i = 0; i < sentences.size(); ++i) {
    const auto& s = sentences[i];
    if (!utf8_valid(s)) {
      throw std::runtime_error(
          fmt::format("translate: {} {} is not valid UTF-8: '{}'", what, i + 1, printable(s)));
    }
    const auto tokens = t.tok.src.encode(s).size();
    if (tokens == 0) {
      if (!from_stdin)
        throw std::runtime_error(fmt::format("translate: sentence {} has no words", i + 1));
      fmt::print(
          stderr, "torchattn-translate: warning: line {} has no words; its translation is empty\n",
          i + 1);
    } else if (static_cast<int64_t>(tokens) > max_len) {
      fmt::print(
          stderr,
          "torchattn-translate: warning: {} {} has {} tokens; the model reads the first {} (its "
          "max_len)\n",
          what, i + 1, tokens, max_len);
    }
  }
}

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"torchattn-translate: English -> French translation with torchattn attention"};
  app.require_subcommand(1);
  const std::vector<std::string> commands{"prepare",  "train", "translate",
                                          "evaluate", "plot",  "import"};
  if (argc > 1 && argv[1][0] != '-' &&
      std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    fmt::print(
        stderr,
        "torchattn-translate: error: unknown subcommand '{}'; expected one of {} (--help lists "
        "them)\n",
        printable(argv[1]), fmt::join(commands, ", "));
    return 2;
  }

  // prepare
  auto* prepare = app.add_subcommand(
      "prepare", "Build train/dev/test splits (default corpus: Debian's French gettext catalogs)");
  std::string p_data, p_out = default_dir("translate-data"), p_cache;
  double p_dev = 0.03, p_test = 0.1;
  uint64_t p_seed = 1;
  prepare
      ->add_option(
          "--data", p_data,
          "A TSV file of English<TAB>French[<TAB>French...] lines instead of the default corpus")
      ->check(CLI::ExistingFile);
  prepare->add_option("--out", p_out, "Directory for train.tsv, dev.tsv and test.tsv")
      ->capture_default_str();
  prepare->add_option(
      "--cache", p_cache,
      "Where downloaded packages are kept (default: $XDG_CACHE_HOME/torchattn/gettext)");
  prepare->add_option("--dev", p_dev, "Fraction of source sentences for dev")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.5));
  prepare->add_option("--test", p_test, "Fraction of source sentences for test")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.5));
  prepare->add_option("--seed", p_seed, "Split seed")->capture_default_str();
  std::string p_subwords = "none";
  int64_t p_vocab_size = 8000;
  prepare
      ->add_option(
          "--subwords", p_subwords,
          "Subword vocabularies: a SentencePiece model (unigram or bpe) trained on the "
          "training split for each side; none: word-level vocabularies")
      ->capture_default_str()
      ->check(CLI::IsMember({"unigram", "bpe", "none"}));
  prepare->add_option("--vocab-size", p_vocab_size, "SentencePiece pieces per side (at most)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{16}, int64_t{1000000}));

  // train
  auto* train_cmd = app.add_subcommand("train", "Train a model; writes the model directory --out");
  TrainConfig tc;
  tc.out_dir = default_dir("translate-model");
  std::string t_data = default_dir("translate-data");
  bool t_resume = false, t_quiet = false;
  double t_dist_timeout = 300;
  train_cmd->add_option("--data", t_data, "Directory written by prepare (train.tsv, dev.tsv)")
      ->capture_default_str();
  train_cmd->add_option("--out", tc.out_dir, "Model directory to write")->capture_default_str();
  train_cmd->add_flag(
      "--resume", t_resume, "Continue the run in --out from its last finished epoch");
  train_cmd->add_option("--model", tc.model.kind, "gru or transformer")
      ->capture_default_str()
      ->check(CLI::IsMember({"gru", "transformer"}));
  train_cmd
      ->add_option(
          "--attention", tc.model.attention,
          "GRU attention: dot, scaled, cosine, additive or general")
      ->capture_default_str()
      ->check(CLI::IsMember({"dot", "scaled", "cosine", "additive", "general"}));
  train_cmd->add_option("--embed-dim", tc.model.embed_dim, "GRU embedding size")
      ->capture_default_str();
  train_cmd->add_option("--hidden-dim", tc.model.hidden_dim, "GRU hidden size / Transformer width")
      ->capture_default_str();
  train_cmd
      ->add_option("--layers", tc.model.layers, "Transformer layers (encoder and decoder each)")
      ->capture_default_str();
  train_cmd->add_option("--heads", tc.model.heads, "Transformer attention heads")
      ->capture_default_str();
  train_cmd->add_option("--ff-dim", tc.model.ff_dim, "Transformer feed-forward size")
      ->capture_default_str();
  train_cmd->add_option("--dropout", tc.model.dropout, "Dropout")->capture_default_str();
  train_cmd
      ->add_option(
          "--word-dropout", tc.word_dropout,
          "Replace each source word by <unk> with this probability in training, so that the "
          "model learns what to do with words it has not seen")
      ->capture_default_str()
      ->check(finite_range(0, 0.99));
  train_cmd->add_flag(
      "--tie-embeddings,!--no-tie-embeddings", tc.model.tie_embeddings,
      "Transformer: the output layer's weight is the target embedding");
  train_cmd->add_option("--epochs", tc.epochs, "Epochs")->capture_default_str();
  train_cmd
      ->add_option(
          "--time-budget", tc.time_budget, "Stop after this many seconds of training (0: none)")
      ->capture_default_str()
      ->check(finite_range(0, 1e9));
  train_cmd->add_option("--max-tokens", tc.max_tokens, "Padded tokens per batch")
      ->capture_default_str();
  train_cmd->add_option("--lr", tc.lr, "Peak learning rate (Adam)")->capture_default_str();
  train_cmd->add_option("--warmup", tc.warmup, "Warm-up steps")->capture_default_str();
  train_cmd
      ->add_option(
          "--schedule", tc.schedule,
          "Learning rate after the warm-up: inverse-sqrt, or linear (to 0 at the end of the "
          "time budget, of --max-steps or of --epochs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"inverse-sqrt", "linear"}));
  train_cmd
      ->add_option(
          "--ema", tc.ema,
          "Evaluate and save an exponential moving average of the weights with this decay "
          "(0: the last step's weights)")
      ->capture_default_str()
      ->check(finite_range(0, 0.9999));
  train_cmd->add_option("--clip", tc.clip, "Gradient norm clipping")->capture_default_str();
  train_cmd->add_option("--label-smoothing", tc.label_smoothing, "Label smoothing")
      ->capture_default_str();
  train_cmd->add_option("--min-freq", tc.min_freq, "Vocabulary: minimum token count")
      ->capture_default_str();
  train_cmd->add_option("--max-vocab", tc.max_vocab, "Vocabulary cap per side (0: none)")
      ->capture_default_str();
  train_cmd->add_flag(
      "--pack", tc.pack,
      "Packed batches: sentences back to back (at most --max-tokens), each attending only to "
      "itself, no padding (Transformer)");
  train_cmd->add_flag(
      "--words", tc.words,
      "Word-level vocabularies even where prepare trained SentencePiece models");
  train_cmd->add_option("--seed", tc.seed, "Seed (same seed and thread count: same model)")
      ->capture_default_str();
  train_cmd
      ->add_option(
          "--precision", tc.precision,
          "fp32, or bf16: forward and loss under LibTorch's CPU autocast in bfloat16 (float32 "
          "master weights and optimizer), or auto: bf16 where torchattn's kernels multiply "
          "bfloat16 natively (kernel capability amx or avx512_bf16), else fp32")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "auto"}));
  train_cmd
      ->add_option("--max-steps", tc.max_steps, "Stop after this many optimizer steps (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  train_cmd
      ->add_option(
          "--dist-timeout", t_dist_timeout,
          "Under a launcher: seconds after which a dead or stalled rank makes the others fail")
      ->capture_default_str()
      ->check(finite_range(1, 1e6));
  train_cmd->add_flag("--quiet", t_quiet, "No progress bar");

  // translate
  auto* translate_cmd = app.add_subcommand(
      "translate", "Translate sentences given as arguments, or stdin line by line");
  std::string m_dir = default_dir("translate-model");
  // translate and evaluate: one model directory, or several trained on the same prepared
  // data, decoded as an ensemble (their next-token probabilities averaged)
  std::vector<std::string> m_dirs{m_dir};
  const char* const ensemble_help =
      "Model directory; several (comma-separated, or --model repeated; trained on the same "
      "prepared data) "
      "decode as an ensemble";
  Translator::Options topt;
  std::vector<std::string> sentences;
  translate_cmd->add_option("--model", m_dirs, ensemble_help)
      ->delimiter(',')
      ->allow_extra_args(false)
      ->capture_default_str();
  translate_cmd->add_option("--beam", topt.beam, "Beam size (1: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  translate_cmd->add_option("--alpha", topt.alpha, "Length normalisation exponent")
      ->capture_default_str()
      ->check(finite_range(0, 10));
  translate_cmd->add_option("sentences", sentences, "Sentences to translate (default: read stdin)");
  std::string align_path;
  translate_cmd->add_option(
      "--align", align_path,
      "Also write word alignments from the cross-attention to this file, one line per "
      "sentence in the Pharaoh format (i-j: source word i, output word j, from 0)");

  // evaluate
  auto* evaluate_cmd = app.add_subcommand(
      "evaluate", "Corpus BLEU on a TSV file (all references of a source count)");
  std::string e_data = (fs::path(default_dir("translate-data")) / "test.tsv").string();
  int64_t e_show = 0;
  evaluate_cmd->add_option("--model", m_dirs, ensemble_help)
      ->delimiter(',')
      ->allow_extra_args(false)
      ->capture_default_str();
  evaluate_cmd->add_option("--data", e_data, "TSV file: source<TAB>reference[<TAB>reference...]")
      ->capture_default_str();
  evaluate_cmd->add_option("--beam", topt.beam, "Beam size (1: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  evaluate_cmd->add_option("--alpha", topt.alpha, "Length normalisation exponent")
      ->capture_default_str()
      ->check(finite_range(0, 10));
  evaluate_cmd->add_option("--show", e_show, "Print this many sample translations")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  // plot
  auto* plot_cmd = app.add_subcommand(
      "plot",
      "Draw every layer and head of a sentence's attention (encoder self-, decoder self- and "
      "cross-attention) and the encoder's attention rollout as one grid, PNG and SVG");
  std::string plot_out = "attention";
  std::string plot_sentence;
  PanelChoice plot_choice;
  bool plot_no_rollout = false;
  plot_cmd->add_option("--layer", plot_choice.layer, "Only this layer (from 1; 0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  plot_cmd->add_option("--head", plot_choice.head, "Only this head (from 1; 0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  plot_cmd->add_flag("--no-rollout", plot_no_rollout, "Leave out the encoder attention rollout");
  plot_cmd->add_option("--model", m_dir, "Model directory")->capture_default_str();
  plot_cmd
      ->add_option("--out", plot_out, "Output path without extension (.png and .svg are written)")
      ->capture_default_str();
  plot_cmd->add_option("sentence", plot_sentence, "The English sentence")->required();

  // import
  auto* import_cmd = app.add_subcommand(
      "import",
      "Make a model directory from a TorchScript GRU model trained in Python "
      "(bench/translation_bench.py)");
  std::string i_ts, i_vocab, i_out = default_dir("translate-model");
  import_cmd
      ->add_option(
          "--torchscript", i_ts, "TorchScript file of bench/translation_models.py's GruSeq2Seq")
      ->required();
  import_cmd
      ->add_option(
          "--vocab", i_vocab, "Directory with the src.vocab and tgt.vocab it was trained with")
      ->required();
  import_cmd->add_option("--out", i_out, "Model directory to write")->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  try {
    if (prepare->parsed()) {
      return cmd_prepare(p_data, p_out, p_cache, p_dev, p_test, p_seed, p_subwords, p_vocab_size);
    }
    if (train_cmd->parsed()) {
      TrainSummary s;
      // Under a launcher (torchrun, scripts/launch.sh: WORLD_SIZE > 1), data-parallel.
      const auto launch = torchattn::distributed::launch_env();
      if (launch.world_size > 1) {
        tc.group = torchattn::distributed::init_process_group(
            launch, std::chrono::milliseconds(static_cast<int64_t>(t_dist_timeout * 1000)));
      }
      if (t_resume) {
        const bool epochs_given = train_cmd->count("--epochs") > 0;
        s = resume(
            tc.out_dir, epochs_given ? tc.epochs : 0,
            train_cmd->count("--time-budget") > 0 ? tc.time_budget : 0, !t_quiet, tc.group,
            train_cmd->count("--max-steps") > 0 ? tc.max_steps : 0);
      } else {
        tc.train_path = (fs::path(t_data) / "train.tsv").string();
        tc.dev_path = (fs::path(t_data) / "dev.tsv").string();
        tc.progress = !t_quiet;
        if (tc.precision == "auto") { // resolved here; train.txt keeps what ran
          const std::string cap = torchattn::ops::kernel_capability();
          tc.precision = cap == "amx" || cap == "avx512_bf16" ? "bf16" : "fp32";
          if (launch.rank == 0)
            fmt::print(
                stderr, "train: --precision auto: {} (kernel capability {})\n", tc.precision, cap);
        }
        s = train(tc);
      }
      if (s.interrupted)
        return 130;
      if (launch.rank != 0)
        return 0;
      fmt::print(
          "train: {} epochs in {:.0f} s; best dev BLEU {:.2f} at epoch {}; model in '{}'\n",
          s.epochs_done, s.seconds, s.best_bleu, s.best_epoch, tc.out_dir);
      return 0;
    }
    if (translate_cmd->parsed()) {
      const Translator t = load_ensemble(m_dirs);
      const bool from_stdin = sentences.empty();
      if (from_stdin)
        sentences = read_lines(std::cin);
      check_sentences(sentences, from_stdin, t);
      topt.keep_attention = !align_path.empty();
      std::ofstream align;
      if (!align_path.empty()) {
        align.open(align_path);
        if (!align)
          throw std::runtime_error("translate: cannot write '" + align_path + "'");
      }
      for (const auto& r : t.translate(sentences, topt)) {
        std::cout << r.text << '\n';
        if (align.is_open())
          align << pharaoh_alignment(t.tok, r) << '\n';
      }
      if (align.is_open() && !align.flush())
        throw std::runtime_error("translate: cannot write '" + align_path + "'");
      return 0;
    }
    if (evaluate_cmd->parsed()) {
      const Translator t = load_ensemble(m_dirs);
      const auto examples = read_examples(e_data);
      std::vector<std::string> sources, hyps;
      std::vector<std::vector<std::string>> refs;
      for (const auto& e : examples) {
        sources.push_back(e.source);
        refs.push_back(e.references);
      }
      const auto start = std::chrono::steady_clock::now();
      for (auto& r : t.translate(sources, topt))
        hyps.push_back(std::move(r.text));
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const BleuScore b = corpus_bleu(hyps, refs);
      for (int64_t i = 0; i < std::min<int64_t>(e_show, static_cast<int64_t>(sources.size()));
           ++i) {
        fmt::print("  {}\n    -> {}\n    ref: {}\n", sources[i], hyps[i], refs[i][0]);
      }
      fmt::print(
          "BLEU = {:.2f} {:.1f}/{:.1f}/{:.1f}/{:.1f} (BP = {:.3f} ratio = {:.3f} hyp_len = {} "
          "ref_len = {}) "
          "on {} sentences of '{}', beam {}, {:.1f} s\n",
          b.score, b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3],
          b.brevity_penalty,
          b.ref_len ? static_cast<double>(b.hyp_len) / static_cast<double>(b.ref_len) : 0.0,
          b.hyp_len, b.ref_len, sources.size(), e_data, topt.beam, secs);
      return 0;
    }
    if (import_cmd->parsed()) {
      import_torchscript(i_ts, i_vocab, i_out);
      fmt::print("import: wrote model directory '{}' from '{}'\n", i_out, i_ts);
      return 0;
    }
    if (plot_cmd->parsed()) {
      const Translator t = load_translator(m_dir);
      topt.keep_attention = true;
      const auto r = t.translate({plot_sentence}, topt).at(0);
      if (!r.attention.defined())
        throw std::runtime_error("plot: the sentence has no tokens");
      plot_choice.rollout = !plot_no_rollout;
      int per_row = 1;
      const auto panels = attention_panels(attention_maps_of(t, r), r, plot_choice, per_row);
      write_heatmap_grid_svg(plot_out + ".svg", panels, per_row);
      write_heatmap_grid_png(plot_out + ".png", panels, per_row);
      fmt::print(
          "{}\nwrote {}.png and {}.svg: {} panels\n", r.text, plot_out, plot_out, panels.size());
      return 0;
    }
  } catch (const c10::Error& e) {
    // LibTorch's own errors (a TorchScript file that is not one): the message, not the backtrace.
    fmt::print(stderr, "torchattn-translate: error: {}\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "torchattn-translate: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
