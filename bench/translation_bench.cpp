// Training throughput (target tokens per second) of examples/translation's GRU and Transformer
// models against the same models written in Python PyTorch (bench/translation_models.py), on
// the same batches, with the same thread count, in one run.
//
//   torchattn-bench-translation --data DIR [--steps 40] [--warmup 5] [--threads 2] [--rounds 3]
//                               [--models gru,transformer] [--save-python-model OUT]
//                               [--ablation 1]
//
// --ablation 1 measures what each of the example's speed-ups (examples/translation/speedups)
// buys instead: the C++ models with all of them, each one off, and none.
//
// --save-python-model keeps what the Python GRU learned, after --python-epochs (8) more passes
// over the batches once its first round is timed: OUT/python_gru.pt (TorchScript) and
// the vocabularies OUT/src.vocab, OUT/tgt.vocab, which `torchattn-translate import` turns into
// a model directory.
//
// DIR is a directory written by `torchattn-translate prepare` (its train.tsv is used).

#include <data.h>
#include <model.h>
#include <speedups/fused_adam.h>
#include <speedups/speedups.h>
#include <trainer.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>

using namespace translate;

namespace {

// Trains `steps` steps after `warmup` and returns each timed step's seconds.
std::vector<double> train_steps(
    Seq2SeqImpl& model, const std::vector<Batch>& batches, int warmup, int steps) {
  auto opt = make_adam( // as train
      model.parameters(), torch::optim::AdamOptions(1e-3).betas({0.9, 0.98}).eps(1e-9));
  model.train();
  auto step = [&](const Batch& b) {
    const auto loss = training_loss(model, b, /*label_smoothing=*/0.1); // what train runs
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    opt->step();
  };
  for (int i = 0; i < warmup; ++i)
    step(batches[i % batches.size()]);
  std::vector<double> seconds;
  for (int i = 0; i < steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step(batches[(warmup + i) % batches.size()]);
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}

// Runs `cmd` and returns the step times of its `steps t1 t2 ...` line (empty on failure).
std::vector<double> python_steps(const std::string& cmd) {
  std::string output;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buffer[4096];
    for (size_t n; (n = fread(buffer, 1, sizeof buffer, p)) > 0;)
      output.append(buffer, n);
    pclose(p);
  }
  std::vector<double> seconds;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string first;
    if (words >> first && first == "steps") {
      for (double t; words >> t;)
        seconds.push_back(t);
    }
  }
  return seconds;
}

/// --ablation: what each speed-up of examples/translation/speedups buys. The C++ models train
/// with all speed-ups, with each one turned off, and with none, taking turns `rounds` times;
/// the table gives each configuration's tokens/s (fastest time of each step over the rounds)
/// and its ratio to all speed-ups on.
void ablation(
    const std::vector<std::string>& kinds, const std::vector<Batch>& batches, int64_t src_vocab,
    int64_t tgt_vocab, int warmup, int steps, int rounds) {
  const std::vector<std::pair<std::string, std::string>> configs{
      {"all speed-ups", ""},        {"plain GRU", "gru"},   {"plain loss", "loss"},
      {"plain dropout", "dropout"}, {"plain Adam", "adam"}, {"no speed-up", "all"}};
  // The Transformer has no GRU.
  auto applies = [&](const std::string& kind, size_t c) {
    return kind == "gru" || configs[c].second != "gru";
  };
  int64_t tokens = 0;
  for (int i = 0; i < steps; ++i)
    tokens += batches[(warmup + i) % batches.size()].target_tokens;
  fmt::print(
      "\nWhat each speed-up buys: tokens/s (fastest time of each step over {} rounds, "
      "configurations alternating)\n| model | configuration | tok/s | all speed-ups / this |\n"
      "|---|---|---|---|\n",
      rounds);
  for (const std::string& kind : kinds) {
    std::vector<std::vector<double>> best(configs.size(), std::vector<double>(steps, 1e30));
    for (int round = 0; round < rounds; ++round) {
      for (size_t c = 0; c < configs.size(); ++c) {
        if (!applies(kind, c))
          continue;
        speedups() = speedups_without(configs[c].second);
        ModelOptions o;
        o.kind = kind;
        o.attention = "additive";
        o.src_vocab = src_vocab;
        o.tgt_vocab = tgt_vocab;
        torch::manual_seed(1);
        auto model = make_model(o);
        const auto seconds = train_steps(*model, batches, warmup, steps);
        for (int i = 0; i < steps; ++i)
          best[c][i] = std::min(best[c][i], seconds[i]);
      }
    }
    speedups() = Speedups{};
    auto rate = [&](size_t c) {
      return static_cast<double>(tokens) / std::accumulate(best[c].begin(), best[c].end(), 0.0);
    };
    for (size_t c = 0; c < configs.size(); ++c) {
      if (!applies(kind, c))
        continue;
      fmt::print(
          "| {} | {} | {:.0f} | {:.2f} |\n", kind, configs[c].first, rate(c), rate(0) / rate(c));
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args = {
      {"--data", ""},           {"--steps", "40"},       {"--warmup", "5"},
      {"--threads", "2"},       {"--python", "python3"}, {"--save-python-model", ""},
      {"--python-epochs", "8"}, {"--rounds", "3"},       {"--models", "gru,transformer"},
      {"--ablation", "0"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (args.count(argv[i]) == 0) {
      fmt::print(stderr, "unknown option {}\n", argv[i]);
      return 2;
    }
    args[argv[i]] = argv[i + 1];
  }
  if (args["--data"].empty()) {
    fmt::print(
        stderr,
        "usage: {} --data DIR [--steps 40] [--warmup 5] [--threads 2] [--python "
        "python3] [--ablation 1]\n",
        argv[0]);
    return 2;
  }
  const int steps = std::stoi(args["--steps"]), warmup = std::stoi(args["--warmup"]);
  const int threads = std::stoi(args["--threads"]);
  const int rounds = std::max(1, std::stoi(args["--rounds"]));
  torch::set_num_threads(threads);

  const auto examples = read_examples(args["--data"] + "/train.tsv");
  // Word-level, as the Python twin tokenises.
  const Tokenizers words;
  const auto [src, tgt] =
      build_vocabs(examples, words, /*min_freq=*/1, /*max_size=*/0); // train's defaults
  const auto pairs = encode_pairs(examples, words, src, tgt, 128);
  std::mt19937_64 rng(1);
  const auto order = bucket_batches(pairs, 1024, rng);
  std::vector<Batch> batches;
  const auto batches_path = std::filesystem::temp_directory_path() /
                            fmt::format("torchattn_bench_batches_{}.txt", ::getpid());
  {
    std::ofstream out(batches_path);
    // Every batch of an epoch: the timed steps use the first ones, --save-python-model all.
    for (size_t i = 0; i < order.size(); ++i) {
      batches.push_back(make_batch(pairs, order[i]));
      const Batch& b = batches.back();
      out << b.src.size(0) << ' ' << b.src.size(1) << ' ' << b.tgt_in.size(1) << '\n';
      for (const auto* t : {&b.src, &b.tgt_in, &b.tgt_out}) {
        const auto flat = t->contiguous().view(-1);
        const auto* p = flat.data_ptr<int64_t>();
        for (int64_t j = 0; j < flat.numel(); ++j)
          out << (j ? " " : "") << p[j];
        out << '\n';
      }
    }
  }
  fmt::print(
      "translation training throughput: {} pairs, vocabularies {} / {}, {} timed steps after {} "
      "warm-up, "
      "{} threads, batches of <= 1024 padded tokens\n",
      pairs.size(), src.size(), tgt.size(), steps, warmup, threads);
  // The machine is shared and its speed drifts: C++ and Python take turns, `rounds` times.
  // Two estimates: the ratio of the rounds' median rates, and the ratio of the "best" rates,
  // tokens over the sum of each step's fastest time in any round (other work on the machine
  // only ever adds time, so the fastest of several runs of the same step is the least
  // disturbed; both sides are measured alike).
  fmt::print(
      "{} rounds, C++ and Python alternating; median of the rounds' rates, best time of each step "
      "over the "
      "rounds, and the ratio of each round\n",
      rounds);
  fmt::print(
      "| model | C++ tok/s median / best | Python tok/s median / best | ratio of medians | ratio "
      "of bests | "
      "ratios per round |\n|---|---|---|---|---|---|\n");
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  int64_t timed_tokens = 0;
  for (int i = 0; i < steps; ++i)
    timed_tokens += batches[(warmup + i) % batches.size()].target_tokens;
  // Tokens per second of the fastest time of each step over the rounds.
  auto best_rate = [&](const std::vector<std::vector<double>>& rounds_seconds) {
    double total = 0;
    for (int i = 0; i < steps; ++i) {
      double best = rounds_seconds.front()[i];
      for (const auto& r : rounds_seconds)
        best = std::min(best, r[i]);
      total += best;
    }
    return static_cast<double>(timed_tokens) / total;
  };
  auto rate = [&](const std::vector<double>& seconds) {
    return static_cast<double>(timed_tokens) / std::accumulate(seconds.begin(), seconds.end(), 0.0);
  };
  std::vector<std::string> kinds;
  for (std::stringstream models(args["--models"]); models.good();) {
    std::string kind;
    std::getline(models, kind, ',');
    if (kind != "gru" && kind != "transformer") {
      fmt::print(stderr, "--models: '{}' is not gru or transformer\n", kind);
      return 2;
    }
    kinds.push_back(kind);
  }
  if (args["--ablation"] != "0") {
    ablation(kinds, batches, src.size(), tgt.size(), warmup, steps, rounds);
    std::filesystem::remove(batches_path);
    return 0;
  }
  for (const std::string& kind : kinds) {
    std::vector<std::vector<double>> ours, theirs;
    for (int round = 0; round < rounds; ++round) {
      ModelOptions o;
      o.kind = kind;
      o.attention = "additive";
      o.src_vocab = src.size();
      o.tgt_vocab = tgt.size();
      torch::manual_seed(1);
      auto model = make_model(o);
      ours.push_back(train_steps(*model, batches, warmup, steps));
      std::string save;
      if (kind == "gru" && round == 0 && !args["--save-python-model"].empty()) {
        const std::string dir = args["--save-python-model"];
        std::filesystem::create_directories(dir);
        src.save(dir + "/src.vocab");
        tgt.save(dir + "/tgt.vocab");
        save = fmt::format(
            " --save-torchscript '{}/python_gru.pt' --extra-epochs {}", dir,
            args["--python-epochs"]);
      }
      const std::string cmd =
          fmt::format(
              "OMP_NUM_THREADS={} '{}' '{}/translation_bench.py' --batches '{}' --model {} "
              "--src-vocab {} --tgt-vocab {} "
              "--steps {} --warmup {} --threads {}",
              threads, args["--python"], TORCHATTN_BENCH_DIR, batches_path.string(), kind,
              src.size(), tgt.size(), steps, warmup, threads) +
          save;
      auto python = python_steps(cmd);
      if (python.size() != static_cast<size_t>(steps)) {
        fmt::print(
            "| {} | {:.0f} | (python failed: {}) | - | - | - |\n", kind, rate(ours.back()), cmd);
        ours.clear();
        break;
      }
      theirs.push_back(std::move(python));
    }
    if (!theirs.empty()) {
      std::vector<double> our_rates, their_rates;
      std::vector<std::string> each;
      for (size_t r = 0; r < ours.size(); ++r) {
        our_rates.push_back(rate(ours[r]));
        their_rates.push_back(rate(theirs[r]));
        each.push_back(fmt::format("{:.2f}", our_rates.back() / their_rates.back()));
      }
      fmt::print(
          "| {} | {:.0f} / {:.0f} | {:.0f} / {:.0f} | {:.2f}x | {:.2f}x | {} |\n", kind,
          median(our_rates), best_rate(ours), median(their_rates), best_rate(theirs),
          median(our_rates) / median(their_rates), best_rate(ours) / best_rate(theirs),
          fmt::join(each, ", "));
    }
    std::fflush(stdout);
  }
  if (std::getenv("TORCHATTN_BENCH_KEEP"))
    fmt::print("batches kept in {}\n", batches_path.string());
  else
    std::filesystem::remove(batches_path);
  return 0;
}
