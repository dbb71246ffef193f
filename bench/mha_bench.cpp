// MultiheadAttention against LibTorch's torch::nn::MultiheadAttention in the same process, with
// and without the attention weights, and incremental decoding with the key/value cache against
// recomputing the whole prefix. Google Benchmark; the table at the end gives the ratio LibTorch
// time / torchattn time of each pair (> 1: we are faster), the two run back to back.
//
// With weights (need_weights true) both modules run the same math (the weights are returned);
// without them ours takes the fused kernel, where LibTorch 1.13's module still forms the
// [B, H, L, L] weights.
//
// Usage: torchattn-bench-mha [--benchmark_filter=...] [--benchmark_min_time=...]

#include <torchattn/torchattn.h>

#include <benchmark/benchmark.h>
#include <fmt/core.h>

#include <map>
#include <string>
#include <vector>

namespace {

namespace tnn = torchattn::nn;
constexpr int64_t kBatch = 4, kEmbed = 512, kHeads = 8;

/// Both modules with the same parameters.
struct Pair {
  tnn::MultiheadAttention ours{kEmbed, kHeads};
  torch::nn::MultiheadAttention theirs{kEmbed, kHeads};
  Pair() {
    torch::NoGradGuard no_grad;
    auto dst = theirs->named_parameters();
    for (const auto& p : ours->named_parameters())
      dst[p.key()].copy_(p.value());
  }
};

void BM_Mha(
    benchmark::State& state, bool ours, int64_t L, bool need_weights, bool backward, int threads) {
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  Pair pair;
  auto x = torch::randn({L, kBatch, kEmbed}).requires_grad_(backward);
  for (auto _ : state) {
    torch::AutoGradMode grad(backward);
    auto out = ours ? std::get<0>(pair.ours->forward(x, x, x, {}, need_weights))
                    : std::get<0>(pair.theirs->forward(x, x, x, {}, need_weights));
    if (backward)
      out.sum().backward();
    benchmark::DoNotOptimize(out);
  }
}

// Decoding `steps` tokens with causal self-attention: the cache (ours) or the whole prefix
// again at every step.
void BM_Decode(benchmark::State& state, bool cached, int64_t steps) {
  torch::set_num_threads(2);
  torch::NoGradGuard no_grad;
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(kEmbed, kHeads).batch_first(true));
  mha->eval();
  auto x = torch::randn({kBatch, steps, kEmbed});
  for (auto _ : state) {
    if (cached) {
      tnn::MultiheadAttentionCache cache;
      for (int64_t t = 0; t < steps; ++t)
        mha->forward_step(x.slice(1, t, t + 1), cache);
    } else {
      for (int64_t t = 1; t <= steps; ++t) {
        auto prefix = x.slice(1, 0, t);
        mha->forward(
            prefix, prefix, prefix, {}, /*need_weights=*/false, {}, true,
            /*is_causal=*/true);
      }
    }
  }
}

/// Prints Google Benchmark's console output and keeps each result's milliseconds.
class Collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> ms;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median")
        continue;
      ms[run.run_name.function_name] = run.GetAdjustedRealTime();
    }
  }
};

std::string mha_name(const char* who, int64_t L, bool weights, bool backward, int threads) {
  return fmt::format(
      "mha/{}/L:{}/weights:{}/backward:{}/threads:{}", who, L, weights ? 1 : 0, backward ? 1 : 0,
      threads);
}

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::vector<std::vector<int64_t>> configs;
  for (int threads : {1, 2})
    for (int64_t L : {128, 512})
      for (bool backward : {false, true})
        configs.push_back({L, 1, backward, threads});
  for (int64_t L : {512, 1024, 2048})
    for (bool backward : {false, true})
      configs.push_back({L, 0, backward, 2});
  for (const auto& c : configs) {
    for (const char* who : {"libtorch", "torchattn"}) {
      const bool ours = std::string(who) == "torchattn";
      benchmark::RegisterBenchmark(
          mha_name(who, c[0], c[1] != 0, c[2] != 0, static_cast<int>(c[3])).c_str(),
          [ours, c](benchmark::State& st) {
            BM_Mha(st, ours, c[0], c[1] != 0, c[2] != 0, static_cast<int>(c[3]));
          })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.3);
    }
  }
  for (const char* how : {"recompute", "cache"}) {
    const bool cached = std::string(how) == "cache";
    benchmark::RegisterBenchmark(
        fmt::format("decode/{}/steps:256", how).c_str(),
        [cached](benchmark::State& st) { BM_Decode(st, cached, 256); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(2);
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);

  fmt::print(
      "\nMultiheadAttention, B={} E={} H={}, float32: LibTorch ms / torchattn ms\n"
      "| L | weights | pass | threads | LibTorch ms | torchattn ms | ratio |\n"
      "|---|---|---|---|---|---|---|\n",
      kBatch, kEmbed, kHeads);
  for (const auto& c : configs) {
    const bool w = c[1] != 0, b = c[2] != 0;
    const int th = static_cast<int>(c[3]);
    const auto t = collector.ms.find(mha_name("libtorch", c[0], w, b, th));
    const auto o = collector.ms.find(mha_name("torchattn", c[0], w, b, th));
    if (t == collector.ms.end() || o == collector.ms.end())
      continue;
    fmt::print(
        "| {} | {} | {} | {} | {:.2f} | {:.2f} | {:.2f} |\n", c[0], w ? "yes" : "no",
        b ? "fwd+bwd" : "forward", th, t->second, o->second, t->second / o->second);
  }
  const auto re = collector.ms.find("decode/recompute/steps:256");
  const auto ca = collector.ms.find("decode/cache/steps:256");
  if (re != collector.ms.end() && ca != collector.ms.end())
    fmt::print(
        "\ndecoding 256 steps, 2 threads: recompute {:.1f} ms, cache {:.1f} ms, ratio {:.1f}\n",
        re->second, ca->second, re->second / ca->second);
}
