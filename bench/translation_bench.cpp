// Training throughput (target tokens per second) of examples/translation's GRU and Transformer
// models against the same models written in Python PyTorch (bench/translation_models.py), on
// the same batches, with the same thread count, in one run.
//
//   torchattn-bench-translation --data DIR [--steps 40] [--warmup 5] [--threads 2] [--rounds 3]
//                               [--models gru,transformer] [--save-python-model OUT]
//
// --save-python-model keeps what the Python GRU learned, after --python-epochs (8) more passes
// over the batches once its first round is timed: OUT/python_gru.pt (TorchScript) and
// the vocabularies OUT/src.vocab, OUT/tgt.vocab, which `torchattn-translate import` turns into
// a model directory.
//
// DIR is a directory written by `torchattn-translate prepare` (its train.tsv is used).

#include <data.h>
#include <model.h>
#include <trainer.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unistd.h>

using namespace translate;

namespace {

double train_steps(Seq2SeqImpl& model, const std::vector<Batch>& batches, int warmup, int steps,
                   int64_t* tokens_out) {
  torch::optim::Adam opt(model.parameters(), torch::optim::AdamOptions(1e-3).betas({0.9, 0.98}).eps(1e-9));
  model.train();
  auto step = [&](const Batch& b) {
    const auto loss = training_loss(model, b, /*label_smoothing=*/0.1);  // what train runs
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    opt.step();
    return b.target_tokens;
  };
  for (int i = 0; i < warmup; ++i) step(batches[i % batches.size()]);
  int64_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) tokens += step(batches[(warmup + i) % batches.size()]);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *tokens_out = tokens;
  return seconds;
}

} // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args = {{"--data", ""}, {"--steps", "40"}, {"--warmup", "5"},
                                             {"--threads", "2"}, {"--python", "/usr/bin/python3"},
                                             {"--save-python-model", ""}, {"--python-epochs", "8"}, {"--rounds", "3"},
                                             {"--models", "gru,transformer"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (args.count(argv[i]) == 0) {
      fmt::print(stderr, "unknown option {}\n", argv[i]);
      return 2;
    }
    args[argv[i]] = argv[i + 1];
  }
  if (args["--data"].empty()) {
    fmt::print(stderr, "usage: {} --data DIR [--steps 40] [--warmup 5] [--threads 2] [--python /usr/bin/python3]\n", argv[0]);
    return 2;
  }
  const int steps = std::stoi(args["--steps"]), warmup = std::stoi(args["--warmup"]);
  const int threads = std::stoi(args["--threads"]);
  const int rounds = std::max(1, std::stoi(args["--rounds"]));
  torch::set_num_threads(threads);

  const auto examples = read_examples(args["--data"] + "/train.tsv");
  const auto [src, tgt] = build_vocabs(examples, /*min_freq=*/1, /*max_size=*/0);  // train's defaults
  const auto pairs = encode_pairs(examples, src, tgt, 128);
  std::mt19937_64 rng(1);
  const auto order = bucket_batches(pairs, 1024, rng);
  std::vector<Batch> batches;
  const auto batches_path = std::filesystem::temp_directory_path() / fmt::format("torchattn_bench_batches_{}.txt", ::getpid());
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
        for (int64_t j = 0; j < flat.numel(); ++j) out << (j ? " " : "") << p[j];
        out << '\n';
      }
    }
  }
  fmt::print("translation training throughput: {} pairs, vocabularies {} / {}, {} timed steps after {} warm-up, "
             "{} threads, batches of <= 1024 padded tokens\n",
             pairs.size(), src.size(), tgt.size(), steps, warmup, threads);
  // The machine is shared and its speed drifts: C++ and Python take turns, `rounds` times,
  // and the medians are compared.
  fmt::print("{} rounds, C++ and Python alternating; medians (and the ratio of each round)\n", rounds);
  fmt::print("| model | C++ torchattn tok/s | Python PyTorch tok/s | ratio of medians | ratios per round |\n"
             "|---|---|---|---|---|\n");
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
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
  for (const std::string& kind : kinds) {
    std::vector<double> ours, theirs, ratios;
    for (int round = 0; round < rounds; ++round) {
      ModelOptions o;
      o.kind = kind;
      o.attention = "additive";
      o.src_vocab = src.size();
      o.tgt_vocab = tgt.size();
      torch::manual_seed(1);
      auto model = make_model(o);
      int64_t tokens = 0;
      const double seconds = train_steps(*model, batches, warmup, steps, &tokens);
      ours.push_back(static_cast<double>(tokens) / seconds);
      std::string save;
      if (kind == "gru" && round == 0 && !args["--save-python-model"].empty()) {
        const std::string dir = args["--save-python-model"];
        std::filesystem::create_directories(dir);
        src.save(dir + "/src.vocab");
        tgt.save(dir + "/tgt.vocab");
        save = fmt::format(" --save-torchscript '{}/python_gru.pt' --extra-epochs {}", dir, args["--python-epochs"]);
      }
      const std::string cmd = fmt::format(
          "OMP_NUM_THREADS={} '{}' '{}/translation_bench.py' --batches '{}' --model {} --src-vocab {} --tgt-vocab {} "
          "--steps {} --warmup {} --threads {}",
          threads, args["--python"], TORCHATTN_BENCH_DIR, batches_path.string(), kind, src.size(), tgt.size(), steps,
          warmup, threads) + save;
      double rate = 0;
      if (FILE* p = popen(cmd.c_str(), "r")) {
        char line[256];
        while (fgets(line, sizeof line, p)) {
          char name[32], model_name[32];
          double r = 0;
          if (std::sscanf(line, "%31s %31s %lf", name, model_name, &r) == 3 && std::string(name) == "python") rate = r;
        }
        pclose(p);
      }
      if (rate <= 0) {
        fmt::print("| {} | {:.0f} | (python failed: {}) | - | - |\n", kind, ours.back(), cmd);
        break;
      }
      theirs.push_back(rate);
      ratios.push_back(ours.back() / rate);
    }
    if (!theirs.empty()) {
      std::vector<std::string> each;
      for (double r : ratios) each.push_back(fmt::format("{:.2f}", r));
      fmt::print("| {} | {:.0f} | {:.0f} | {:.2f}x | {} |\n", kind, median(ours), median(theirs),
                 median(ours) / median(theirs), fmt::join(each, ", "));
    }
    std::fflush(stdout);
  }
  if (std::getenv("TORCHATTN_BENCH_KEEP")) fmt::print("batches kept in {}\n", batches_path.string()); else std::filesystem::remove(batches_path);
  return 0;
}
