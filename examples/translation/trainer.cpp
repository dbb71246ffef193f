#include "trainer.h"

#include "bleu.h"
#include "data.h"
#include "ranks.h"
#include "speedups/fused_adam.h"
#include "speedups/fused_loss.h"
#include "speedups/speedups.h"
#include "weight_average.h"

#include <torchattn/autocast.h>
#include <torchattn/jit/state_dict.h>

#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/serialize.h>

#include <fmt/format.h>

#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace translate {
namespace fs = std::filesystem;
using torch::Tensor;

namespace {

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_signal(int) {
  g_interrupted = 1;
}

std::string num(double x) {
  return fmt::format("{:.17g}", x);
}

int64_t to_int(const std::map<std::string, std::string>& m, const std::string& k) {
  try {
    return std::stoll(m.at(k));
  } catch (const std::exception&) {
    throw std::runtime_error("missing or bad integer '" + k + "'");
  }
}
double to_double(const std::map<std::string, std::string>& m, const std::string& k) {
  try {
    return std::stod(m.at(k));
  } catch (const std::exception&) {
    throw std::runtime_error("missing or bad number '" + k + "'");
  }
}

void rename_over(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec)
    throw std::runtime_error(
        "cannot rename '" + from.string() + "' to '" + to.string() + "': " + ec.message());
}

void save_archive(torch::serialize::OutputArchive& a, const fs::path& path) {
  const fs::path tmp = path.string() + ".tmp";
  a.save_to(tmp.string());
  rename_over(tmp, path);
}

void save_module(const torch::nn::Module& m, const fs::path& path) {
  torch::serialize::OutputArchive a;
  m.save(a);
  save_archive(a, path);
}

void load_module(torch::nn::Module& m, const fs::path& path) {
  if (!fs::exists(path))
    throw std::runtime_error("missing weights file '" + path.string() + "'");
  // Module::load replaces each tensor whatever its shape, so the shapes are checked here.
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  for (const auto& p : m.named_parameters())
    expected.emplace_back(p.key(), p.value().sizes().vec());
  for (const auto& b : m.named_buffers())
    expected.emplace_back(b.key(), b.value().sizes().vec());
  try {
    torch::serialize::InputArchive a;
    a.load_from(path.string());
    m.load(a);
  } catch (const c10::Error& e) {
    throw std::runtime_error(
        "'" + path.string() +
        "' is not a weights file that matches options.txt (truncated, corrupt "
        "or from another model): " +
        e.what_without_backtrace());
  }
  auto params = m.named_parameters();
  auto buffers = m.named_buffers();
  for (const auto& [name, shape] : expected) {
    const torch::Tensor* t = params.find(name);
    if (t == nullptr)
      t = buffers.find(name);
    if (t == nullptr || t->sizes().vec() != shape) {
      throw std::runtime_error(fmt::format(
          "'{}' is not a weights file that matches options.txt: '{}' has shape [{}], the model "
          "expects [{}]",
          path.string(), name, t ? fmt::format("{}", fmt::join(t->sizes(), ", ")) : "none",
          fmt::format("{}", fmt::join(shape, ", "))));
    }
  }
}

struct Progress {
  int64_t epoch = 0, step = 0;
  double seconds = 0, best_bleu = -1, best_loss = 1e300;
  int64_t best_epoch = 0;
};

std::map<std::string, std::string> to_map(const Progress& p) {
  return {{"epoch", std::to_string(p.epoch)}, {"step", std::to_string(p.step)},
          {"seconds", num(p.seconds)},        {"best_bleu", num(p.best_bleu)},
          {"best_loss", num(p.best_loss)},    {"best_epoch", std::to_string(p.best_epoch)}};
}

Progress progress_from(const std::map<std::string, std::string>& m) {
  Progress p;
  p.epoch = to_int(m, "epoch");
  p.step = to_int(m, "step");
  p.seconds = to_double(m, "seconds");
  p.best_bleu = to_double(m, "best_bleu");
  p.best_loss = to_double(m, "best_loss");
  p.best_epoch = to_int(m, "best_epoch");
  return p;
}

std::string clock(double s) {
  const auto t = static_cast<int64_t>(std::max(0.0, s));
  return fmt::format("{}:{:02d}", t / 60, t % 60);
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Mean token NLL on `pairs` without label smoothing or dropout.
double evaluate_loss(
    Seq2SeqImpl& model, const std::vector<EncodedPair>& pairs, int64_t max_tokens) {
  torch::NoGradGuard no_grad;
  std::mt19937_64 rng(0);
  double total = 0;
  int64_t tokens = 0;
  for (const auto& idx : bucket_batches(pairs, max_tokens, rng)) {
    const Batch b = make_batch(pairs, idx);
    const Tensor logits = model.forward(b.src, b.src_pad, b.tgt_in);
    total += torch::nn::functional::cross_entropy(
                 logits.reshape({-1, logits.size(-1)}), b.tgt_out.reshape(-1),
                 torch::nn::functional::CrossEntropyFuncOptions()
                     .ignore_index(Vocab::kPad)
                     .reduction(torch::kSum))
                 .item<double>();
    tokens += b.target_tokens;
  }
  return tokens ? total / static_cast<double>(tokens) : 0.0;
}

} // namespace

Tensor training_loss(Seq2SeqImpl& model, const PackedBatch& b, double label_smoothing) {
  const Tensor h = model.features_packed(b); // [T, d]: real tokens only
  const auto out = model.output_layer();
  if (!speedups().loss) {
    return torch::nn::functional::cross_entropy(
        torch::linear(h, out->weight, out->bias), b.tgt_out,
        torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
  }
  return linear_cross_entropy(h, out->weight, out->bias, b.tgt_out, label_smoothing, Vocab::kPad);
}

Tensor training_loss(Seq2SeqImpl& model, const Batch& b, double label_smoothing) {
  const Tensor h = model.features(b.src, b.src_pad, b.tgt_in);
  const auto out = model.output_layer();
  if (!speedups().loss) {
    const Tensor logits = torch::linear(h, out->weight, out->bias);
    return torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), b.tgt_out.reshape(-1),
        torch::nn::functional::CrossEntropyFuncOptions()
            .ignore_index(Vocab::kPad)
            .label_smoothing(label_smoothing));
  }
  // Speed-up (speedups/fused_loss.h): only the rows of real target tokens go through the
  // output layer, and the layer and the loss are one autograd function.
  const Tensor rows = b.tgt_out.reshape(-1).ne(Vocab::kPad).nonzero().squeeze(1);
  return linear_cross_entropy(
      h.reshape({-1, h.size(-1)}).index_select(0, rows), out->weight, out->bias,
      b.tgt_out.reshape(-1).index_select(0, rows), label_smoothing, Vocab::kPad);
}

namespace {

struct SignalGuard {
  void (*old_int)(int), (*old_term)(int);
  SignalGuard() {
    g_interrupted = 0;
    old_int = std::signal(SIGINT, on_signal);
    old_term = std::signal(SIGTERM, on_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

/// The tokenizers `kind` names ("words" or "sentencepiece"), the SentencePiece models read
/// from `dir`; `what` names the directory in errors.
Tokenizers load_tokenizers(const fs::path& dir, const std::string& kind, const std::string& what) {
  Tokenizers t;
  if (kind != "sentencepiece")
    return t;
  try {
    t.src = Tokenizer::load_sentencepiece((dir / kSrcSentencePiece).string());
    t.tgt = Tokenizer::load_sentencepiece((dir / kTgtSentencePiece).string());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(what + ": " + e.what());
  }
  return t;
}

/// The tokenizers training uses: the data directory's SentencePiece models where `prepare`
/// trained them (one file without the other is an error naming it) and `--words` is not
/// given; else words.
Tokenizers training_tokenizers(const TrainConfig& c) {
  const fs::path data = fs::path(c.train_path).parent_path();
  const bool has_models =
      fs::exists(data / kSrcSentencePiece) || fs::exists(data / kTgtSentencePiece);
  if (c.words || !has_models)
    return {};
  return load_tokenizers(data, "sentencepiece", "data directory '" + data.string() + "'");
}

/// The choices train() and a saved train.txt share: precision, schedule, ema, word_dropout.
void check_recipe(const TrainConfig& c) {
  if (c.precision != "fp32" && c.precision != "bf16")
    throw std::runtime_error("train: bad precision '" + c.precision + "', expected fp32 or bf16");
  if (c.schedule != "inverse-sqrt" && c.schedule != "linear") {
    throw std::runtime_error(
        "train: schedule is '" + c.schedule + "', expected inverse-sqrt or linear");
  }
  if (!(c.ema >= 0 && c.ema < 1))
    throw std::runtime_error("train: ema must be in [0, 1) (0: no average)");
  if (!(c.word_dropout >= 0 && c.word_dropout < 1))
    throw std::runtime_error("train: word_dropout must be in [0, 1)");
}

TrainSummary run(const TrainConfig& c, bool resuming) {
  // Before anything is written (a resumed run passed this check when it started).
  if (!resuming && c.pack && c.model.kind != "transformer") {
    throw std::runtime_error(
        "--pack needs the Transformer (--model transformer); the " + c.model.kind +
        " model pads its batches");
  }
  const fs::path dir(c.out_dir);
  Ranks ranks(c.group);
  const auto train_examples = read_examples(c.train_path);
  const auto dev_examples = read_examples(c.dev_path);
  Vocab src_vocab, tgt_vocab;
  Tokenizers tok;
  ModelOptions mo = c.model;
  if (resuming) {
    src_vocab = Vocab::load((dir / "src.vocab").string());
    tgt_vocab = Vocab::load((dir / "tgt.vocab").string());
    mo = ModelOptions::from_map(read_key_values((dir / "options.txt").string()));
    tok = load_tokenizers(dir, mo.tokenizer, "model directory '" + dir.string() + "'");
  } else {
    tok = training_tokenizers(c);
    mo.tokenizer = tok.src.kind();
    std::tie(src_vocab, tgt_vocab) = build_vocabs(train_examples, tok, c.min_freq, c.max_vocab);
    mo.src_vocab = src_vocab.size();
    mo.tgt_vocab = tgt_vocab.size();
    mo.validate();
    if (ranks.leader()) { // the other ranks build the same vocabularies from the same data
      fs::create_directories(dir);
      if (mo.tokenizer == "sentencepiece") {
        const fs::path data = fs::path(c.train_path).parent_path();
        for (const char* f : {kSrcSentencePiece, kTgtSentencePiece})
          fs::copy_file(data / f, dir / f, fs::copy_options::overwrite_existing);
      }
      src_vocab.save((dir / "src.vocab").string());
      tgt_vocab.save((dir / "tgt.vocab").string());
      write_key_values((dir / "options.txt").string(), mo.to_map());
      write_key_values((dir / "train.txt").string(), c.to_map());
      std::ofstream(dir / "history.tsv") << "epoch\ttrain_loss\tdev_loss\tdev_bleu\tseconds\n";
    }
  }

  torch::manual_seed(c.seed);
  auto model = make_model(mo);
  // Speed-up (speedups/fused_adam.h): Adam's step in one pass per parameter, the same state.
  auto optimizer =
      make_adam(model->parameters(), torch::optim::AdamOptions(c.lr).betas({0.9, 0.98}).eps(1e-9));
  Progress state;
  fs::path ck = dir / "checkpoint"; // the checkpoint a resumed run reads
  if (resuming) {                   // every rank reads the same checkpoint
    if (!fs::exists(ck) && fs::exists(dir / "checkpoint.old"))
      ck = dir / "checkpoint.old";
    if (!fs::exists(ck / "progress.txt")) {
      throw std::runtime_error("'" + dir.string() + "' has no finished epoch to resume from");
    }
    load_module(*model, ck / "weights.pt");
    try {
      torch::serialize::InputArchive a;
      a.load_from((ck / "optimizer.pt").string());
      optimizer->load(a);
    } catch (const c10::Error& e) {
      throw std::runtime_error(
          "'" + (ck / "optimizer.pt").string() + "' is corrupt: " + e.what_without_backtrace());
    }
    try {
      state = progress_from(read_key_values((ck / "progress.txt").string()));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("'" + (ck / "progress.txt").string() + "': " + e.what());
    }
  }

  ranks.attach(*model); // after loading: the ranks start from rank 0's weights
  // The weights that are evaluated and saved: the running average's, or the model's.
  std::unique_ptr<WeightAverage> average;
  if (c.ema > 0) {
    average = std::make_unique<WeightAverage>(make_model(mo), *model, c.ema);
    if (resuming) // missing, it is an error that names the file, as the weights' is
      load_module(*average->model(), ck / "average.pt");
  }
  const std::shared_ptr<Seq2SeqImpl> evaluated = average ? average->model() : model;
  size_t too_long = 0;
  const auto pairs = encode_pairs(train_examples, tok, src_vocab, tgt_vocab, mo.max_len, &too_long);
  const auto dev_pairs =
      encode_pairs(dev_examples, tok, src_vocab, tgt_vocab, mo.max_len, &too_long);
  if (too_long > 0 && !resuming && ranks.leader()) {
    fmt::print(
        stderr,
        "train: warning: {} pairs have a sentence longer than max_len ({} tokens) and are left "
        "out\n",
        too_long, mo.max_len);
  }
  if (pairs.empty())
    throw std::runtime_error("no training pairs in '" + c.train_path + "'");
  std::vector<std::string> dev_sources;
  std::vector<std::vector<std::string>> dev_refs;
  for (const auto& e : dev_examples) {
    dev_sources.push_back(e.source);
    dev_refs.push_back(e.references);
  }
  const Translator translator{mo, src_vocab, tgt_vocab, evaluated, tok};
  if (ranks.leader() && !resuming) { // rank 0 prints
    fmt::print(
        stderr,
        "train: {} pairs ({} sources), dev {} sources; vocabularies {} / {}; {} parameters\n",
        pairs.size(), train_examples.size(), dev_examples.size(), src_vocab.size(),
        tgt_vocab.size(), [&] {
          int64_t n = 0;
          for (const auto& p : model->parameters())
            n += p.numel();
          return n;
        }());
    if (ranks.distributed()) {
      fmt::print(
          stderr, "train: data-parallel over {} ranks, each with its share of every batch\n",
          ranks.size());
    }
    std::mt19937_64 rng(c.seed);
    const auto [src_pad, tgt_pad] =
        padding_fraction(pairs, bucket_batches(pairs, c.max_tokens, rng));
    fmt::print(
        stderr,
        "train: {}; length-bucketed batches would pad {:.1f}% of encoder and {:.1f}% of "
        "decoder positions\n",
        c.pack ? "packed batches, no padding" : "length-bucketed batches", 100 * src_pad,
        100 * tgt_pad);
  } else if (ranks.leader()) {
    fmt::print(
        stderr, "train: resuming '{}' after epoch {} ({} of training so far)\n", dir.string(),
        state.epoch, clock(state.seconds));
  }

  SignalGuard signals;
  double steps_seconds = 0;
  int64_t steps_tokens = 0;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const double session_start = now(), seconds_before = state.seconds;
  TrainSummary summary;
  auto elapsed = [&] { return seconds_before + (now() - session_start); };
  auto step_limit_reached = [&] { return c.max_steps > 0 && state.step >= c.max_steps; };
  for (int64_t epoch = state.epoch + 1; epoch <= c.epochs; ++epoch) {
    torch::manual_seed(c.seed * 1000003 + static_cast<uint64_t>(epoch));
    std::mt19937_64 rng(c.seed * 7919 + static_cast<uint64_t>(epoch));
    const auto batches = c.pack ? packed_batches(pairs, c.max_tokens, rng)
                                : bucket_batches(pairs, c.max_tokens, rng);
    model->train();
    double loss_sum = 0;
    int64_t tokens = 0, batch_tokens_sum = 0;
    const double epoch_start = now();
    double last_print = 0;
    bool out_of_time = false;
    for (size_t i = 0; i < batches.size(); ++i) {
      if (step_limit_reached()) { // a resumed run that got there
        out_of_time = true;
        break;
      }
      if (ranks.any(g_interrupted != 0)) { // every rank stops at the same step
        if (ranks.leader()) {
          fmt::print(
              stderr,
              "\ntrain: interrupted in epoch {}; the {} finished epochs are saved in '{}'. "
              "Continue with: torchattn-translate train --resume --out {}\n",
              epoch, epoch - 1, (dir / "checkpoint").string(), dir.string());
        }
        summary.interrupted = true;
        summary.epochs_done = epoch - 1;
        summary.best_bleu = state.best_bleu;
        summary.best_epoch = state.best_epoch;
        summary.seconds = elapsed();
        return summary;
      }
      ++state.step;
      const double lr = c.lr * lr_factor(c, state.step, elapsed(), batches.size());
      for (auto& g : optimizer->param_groups())
        static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
      optimizer->zero_grad();
      // This rank's share of the global batch (all of it with one process).
      const auto mine = ranks.shard(batches[i]);
      int64_t batch_tokens = 0;
      for (size_t k : batches[i])
        batch_tokens += static_cast<int64_t>(pairs[k].tgt.size()) + 1;
      if (!mine.empty()) {
        Tensor loss;
        int64_t share_tokens = 0;
        {
          // Mixed precision: the forward and the loss under autocast; backward and Adam
          // outside it, on the float32 parameters.
          torchattn::AutocastCpu autocast(torch::kBFloat16, c.precision == "bf16");
          if (c.pack) {
            PackedBatch b = make_packed_batch(pairs, mine);
            b.src = drop_words(b.src, c.word_dropout);
            share_tokens = b.target_tokens;
            loss = training_loss(*model, b, c.label_smoothing);
          } else {
            Batch b = make_batch(pairs, mine);
            b.src = drop_words(b.src, c.word_dropout);
            share_tokens = b.target_tokens;
            loss = training_loss(*model, b, c.label_smoothing);
          }
        }
        // The loss is the mean over this share's target tokens; weighted by the share's
        // fraction of the batch's tokens, times the ranks (whose gradients are averaged), the
        // ranks' gradients average to those of the batch's mean loss in one process.
        const double weight =
            static_cast<double>(share_tokens) / static_cast<double>(batch_tokens) * ranks.size();
        (ranks.distributed() ? loss * weight : loss).backward();
        loss_sum += loss.item<double>() * static_cast<double>(share_tokens);
        tokens += share_tokens;
      }
      ranks.reduce_gradients();
      torch::nn::utils::clip_grad_norm_(model->parameters(), c.clip);
      optimizer->step();
      if (average)
        average->update(state.step);
      batch_tokens_sum += batch_tokens;
      const double t = now();
      if (c.progress && ranks.leader() &&
          (t - last_print > (tty ? 0.25 : 15.0) || i + 1 == batches.size())) {
        last_print = t;
        const double done = static_cast<double>(i + 1) / static_cast<double>(batches.size());
        const double spent = t - epoch_start;
        constexpr int kWidth = 24;
        const int filled = static_cast<int>(done * kWidth);
        fmt::print(
            stderr, "{}epoch {:>2}/{} [{}{}] {:>3.0f}% loss {:.3f} {:>6.0f} tok/s ETA {} | {}{}{}",
            tty ? "\r" : "", epoch, c.epochs, std::string(filled, '#'),
            std::string(kWidth - filled, '.'), 100 * done,
            loss_sum / static_cast<double>(std::max<int64_t>(tokens, 1)),
            static_cast<double>(batch_tokens_sum) / spent, clock(spent / done - spent),
            clock(elapsed()), c.time_budget > 0 ? " of " + clock(c.time_budget) : "",
            tty ? "" : "\n");
      }
      const bool stop = (c.time_budget > 0 && elapsed() >= c.time_budget) || step_limit_reached();
      if (ranks.any(stop)) {
        out_of_time = true;
        break;
      }
    }
    steps_seconds += now() - epoch_start;
    steps_tokens += batch_tokens_sum;
    const double train_loss =
        ranks.sum(loss_sum) / std::max(ranks.sum(static_cast<double>(tokens)), 1.0);
    state.epoch = epoch;
    summary.epochs_done = epoch;
    if (!ranks.leader()) {
      ranks.barrier(); // while rank 0 evaluates and writes the checkpoint
      if (out_of_time)
        break;
      continue;
    }
    if (c.progress && tty)
      fmt::print(stderr, "\n");
    model->eval();
    const double dev_loss = evaluate_loss(*evaluated, dev_pairs, c.max_tokens);
    std::vector<std::string> hyps;
    for (auto& r : translator.translate(dev_sources, {}))
      hyps.push_back(std::move(r.text));
    const double bleu = corpus_bleu(hyps, dev_refs).score;
    state.seconds = elapsed();
    const bool best =
        bleu > state.best_bleu || (bleu == state.best_bleu && dev_loss < state.best_loss);
    if (best) {
      state.best_bleu = bleu;
      state.best_loss = dev_loss;
      state.best_epoch = epoch;
      save_module(*evaluated, dir / "model.pt");
    }
    std::ofstream(dir / "history.tsv", std::ios::app) << fmt::format(
        "{}\t{:.4f}\t{:.4f}\t{:.2f}\t{:.1f}\n", epoch, train_loss, dev_loss, bleu, state.seconds);
    fmt::print(
        stderr, "epoch {:>2}: train loss {:.3f}, dev loss {:.3f}, dev BLEU {:.2f}{}{}\n", epoch,
        train_loss, dev_loss, bleu, best ? " (best)" : "",
        !out_of_time           ? std::string()
        : step_limit_reached() ? fmt::format(" — step limit of {} reached", c.max_steps)
                               : fmt::format(" — time budget of {} reached", clock(c.time_budget)));
    // The finished epoch, written beside the old checkpoint and swapped in.
    const fs::path tmp = dir / "checkpoint.tmp", ck = dir / "checkpoint",
                   old = dir / "checkpoint.old";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    save_module(*model, tmp / "weights.pt");
    if (average)
      save_module(*average->model(), tmp / "average.pt");
    {
      torch::serialize::OutputArchive a;
      optimizer->save(a);
      save_archive(a, tmp / "optimizer.pt");
    }
    write_key_values((tmp / "progress.txt").string(), to_map(state));
    fs::remove_all(old);
    if (fs::exists(ck))
      rename_over(ck, old);
    rename_over(tmp, ck);
    fs::remove_all(old);
    ranks.barrier();
    if (out_of_time)
      break;
  }
  summary.best_bleu = state.best_bleu;
  summary.best_epoch = state.best_epoch;
  summary.seconds = state.seconds;
  if (ranks.leader() && steps_seconds > 0) {
    // Training steps only (not the dev evaluations): what bench/data_parallel_bench.sh compares.
    fmt::print(
        stderr, "train: {:.0f} target tokens per second in the training steps ({:.1f} s){}\n",
        static_cast<double>(steps_tokens) / steps_seconds, steps_seconds,
        ranks.distributed()
            ? fmt::format(
                  "; {} ranks, {:.2f} s of it waiting for gradient all-reduces after backward",
                  ranks.size(), ranks.reduce_wait_seconds())
            : "");
  }
  return summary;
}

} // namespace

double lr_factor(const TrainConfig& c, int64_t step, double elapsed, size_t batches_per_epoch) {
  const double s = static_cast<double>(step), w = static_cast<double>(c.warmup);
  if (c.schedule != "linear")
    return std::min(s / w, std::sqrt(w / s));
  const double total = c.max_steps > 0
                           ? static_cast<double>(c.max_steps)
                           : static_cast<double>(c.epochs) * static_cast<double>(batches_per_epoch);
  const double done = c.time_budget > 0 ? elapsed / c.time_budget : s / total;
  return std::clamp(std::min(s / w, 1.0 - done), 0.0, 1.0);
}

std::map<std::string, std::string> read_key_values(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot open '" + path + "'");
  std::map<std::string, std::string> m;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line[0] == '#')
      continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::runtime_error(
          "'" + path + "', line " + std::to_string(n) + ": expected key=value, got '" +
          printable(line) + "'");
    }
    m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

void write_key_values(const std::string& path, const std::map<std::string, std::string>& m) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    for (const auto& [k, v] : m)
      out << k << '=' << v << '\n';
    if (!out)
      throw std::runtime_error("cannot write '" + tmp + "'");
  }
  rename_over(tmp, path);
}

std::map<std::string, std::string> TrainConfig::to_map() const {
  return {
      {"train", train_path},
      {"dev", dev_path},
      {"out", out_dir},
      {"epochs", std::to_string(epochs)},
      {"time_budget", num(time_budget)},
      {"max_tokens", std::to_string(max_tokens)},
      {"lr", num(lr)},
      {"warmup", std::to_string(warmup)},
      {"clip", num(clip)},
      {"label_smoothing", num(label_smoothing)},
      {"min_freq", std::to_string(min_freq)},
      {"max_vocab", std::to_string(max_vocab)},
      {"seed", std::to_string(seed)},
      {"precision", precision},
      {"max_steps", std::to_string(max_steps)},
      {"pack", pack ? "1" : "0"},
      {"schedule", schedule},
      {"ema", num(ema)},
      {"word_dropout", num(word_dropout)}};
}

TrainConfig TrainConfig::from_map(const std::map<std::string, std::string>& m) {
  TrainConfig c;
  c.train_path = m.at("train");
  c.dev_path = m.at("dev");
  c.out_dir = m.at("out");
  c.epochs = to_int(m, "epochs");
  c.time_budget = to_double(m, "time_budget");
  c.max_tokens = to_int(m, "max_tokens");
  c.lr = to_double(m, "lr");
  c.warmup = to_int(m, "warmup");
  c.clip = to_double(m, "clip");
  c.label_smoothing = to_double(m, "label_smoothing");
  c.min_freq = to_int(m, "min_freq");
  c.max_vocab = to_int(m, "max_vocab");
  c.seed = static_cast<uint64_t>(to_int(m, "seed"));
  c.max_steps = m.count("max_steps") ? to_int(m, "max_steps") : 0;
  // Runs saved before --precision existed trained in float32, before --pack padded their
  // batches, before --schedule and --ema used inverse square root and no average.
  c.precision = m.count("precision") ? m.at("precision") : "fp32";
  c.pack = m.count("pack") != 0 && m.at("pack") == "1";
  c.schedule = m.count("schedule") ? m.at("schedule") : "inverse-sqrt";
  c.ema = m.count("ema") ? to_double(m, "ema") : 0.0;
  c.word_dropout = m.count("word_dropout") ? to_double(m, "word_dropout") : 0.0;
  check_recipe(c);
  return c;
}

TrainSummary train(const TrainConfig& config) {
  // Rank 0 looks, before any rank writes, and every rank learns the answer.
  Ranks ranks(config.group);
  const bool taken = ranks.leader() && (fs::exists(fs::path(config.out_dir) / "checkpoint") ||
                                        fs::exists(fs::path(config.out_dir) / "train.txt"));
  if (ranks.any(taken)) {
    throw std::runtime_error(
        "'" + config.out_dir +
        "' already holds a training run: continue it with "
        "'train --resume --out " +
        config.out_dir + "', or choose another --out");
  }
  if (config.max_tokens < config.model.max_len) {
    throw std::runtime_error(fmt::format(
        "train: max_tokens is {}, expected at least max_len ({}): a batch must hold the longest "
        "sentence",
        config.max_tokens, config.model.max_len));
  }
  if (config.epochs <= 0 || config.max_tokens <= 0 || config.warmup <= 0 || !(config.lr > 0) ||
      !(config.clip > 0) || !(config.label_smoothing >= 0 && config.label_smoothing < 1)) {
    throw std::runtime_error(
        "train: epochs, max_tokens, warmup, lr and clip must be positive and "
        "label_smoothing in [0, 1)");
  }
  check_recipe(config);
  return run(config, /*resuming=*/false);
}

TrainSummary resume(
    const std::string& out_dir, int64_t epochs, double time_budget, bool progress,
    c10::intrusive_ptr<c10d::ProcessGroup> group, int64_t max_steps) {
  const auto path = (fs::path(out_dir) / "train.txt").string();
  if (!fs::exists(path))
    throw std::runtime_error("'" + out_dir + "' holds no training run to resume");
  TrainConfig c;
  try {
    c = TrainConfig::from_map(read_key_values(path));
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "' is not a valid training configuration: " + e.what());
  }
  c.out_dir = out_dir;
  c.progress = progress;
  c.group = std::move(group);
  if (epochs > 0)
    c.epochs = epochs;
  if (time_budget > 0)
    c.time_budget = time_budget;
  if (max_steps > 0)
    c.max_steps = max_steps;
  return run(c, /*resuming=*/true);
}

Translator load_translator(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d))
    throw std::runtime_error(
        "model directory '" + dir +
        "' does not exist; train one with 'torchattn-translate train --out " + dir + "'");
  Translator t;
  try {
    t.options = ModelOptions::from_map(read_key_values((d / "options.txt").string()));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("model directory '" + dir + "': options.txt: " + e.what());
  }
  t.src_vocab = Vocab::load((d / "src.vocab").string());
  t.tgt_vocab = Vocab::load((d / "tgt.vocab").string());
  if (t.src_vocab.size() != t.options.src_vocab || t.tgt_vocab.size() != t.options.tgt_vocab) {
    throw std::runtime_error(
        "model directory '" + dir + "': the vocabularies hold " +
        std::to_string(t.src_vocab.size()) + " / " + std::to_string(t.tgt_vocab.size()) +
        " tokens but options.txt says " + std::to_string(t.options.src_vocab) + " / " +
        std::to_string(t.options.tgt_vocab));
  }
  t.tok = load_tokenizers(d, t.options.tokenizer, "model directory '" + dir + "'");
  t.model = make_model(t.options);
  load_module(*t.model, d / "model.pt");
  t.model->eval();
  return t;
}

void import_torchscript(
    const std::string& torchscript, const std::string& vocab_dir, const std::string& out_dir) {
  const fs::path out(out_dir);
  if (fs::exists(out / "model.pt"))
    throw std::runtime_error("'" + out_dir + "' already holds a model");
  const auto src = torchattn::jit::load_torchscript(torchscript);
  std::map<std::string, Tensor> tensors;
  for (const auto& p : src.named_parameters())
    tensors[p.name] = p.value;
  for (const char* name :
       {"src_embedding.weight", "tgt_embedding.weight", "decoder.weight_hh_l0"}) {
    if (tensors.count(name) == 0) {
      throw std::runtime_error(
          "'" + torchscript + "' is not a GruSeq2Seq of bench/translation_models.py: it has no '" +
          name + "'");
    }
  }
  ModelOptions o;
  o.kind = "gru";
  o.attention = "additive";
  o.src_vocab = tensors["src_embedding.weight"].size(0);
  o.tgt_vocab = tensors["tgt_embedding.weight"].size(0);
  o.embed_dim = tensors["src_embedding.weight"].size(1);
  o.hidden_dim = tensors["decoder.weight_hh_l0"].size(1);
  const Vocab src_vocab = Vocab::load((fs::path(vocab_dir) / "src.vocab").string());
  const Vocab tgt_vocab = Vocab::load((fs::path(vocab_dir) / "tgt.vocab").string());
  if (src_vocab.size() != o.src_vocab || tgt_vocab.size() != o.tgt_vocab) {
    throw std::runtime_error(fmt::format(
        "the vocabularies in '{}' hold {} / {} tokens, the model's embeddings {} / {}", vocab_dir,
        src_vocab.size(), tgt_vocab.size(), o.src_vocab, o.tgt_vocab));
  }
  auto model = make_model(o);
  torchattn::jit::load_state_dict(*model, src); // strict: every name, shape and dtype
  fs::create_directories(out);
  src_vocab.save((out / "src.vocab").string());
  tgt_vocab.save((out / "tgt.vocab").string());
  write_key_values((out / "options.txt").string(), o.to_map());
  save_module(*model, out / "model.pt");
}

} // namespace translate
