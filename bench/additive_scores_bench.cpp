// The fused additive score (torchattn::ops::additive_attention_scores) against the composite
// of ATen ops it replaces, tanh(q_i + k_j) · w over [N, Lq, Lk, D] energies: forward, and
// forward+backward, at shapes of seq2seq training (the translation example's GRU model runs
// N ≈ 100, L ≈ 10, D = 256) and longer ones. After Google Benchmark's output, a table gives
// the ratio composite / fused of each pair (both run back to back, so a drift of this shared
// machine's speed reaches both alike) and the energy memory that the composite allocates and,
// with gradients, keeps for backward.
//
//   torchattn-bench-additive [--benchmark_repetitions=3] [google benchmark flags]

#include <torchattn/torchattn.h>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <array>
#include <map>
#include <string>
#include <vector>

namespace {

struct Shape {
  int64_t N, Lq, Lk, D;
};

constexpr std::array<Shape, 4> kShapes{
    {{128, 10, 10, 256}, {64, 24, 24, 256}, {16, 64, 64, 256}, {4, 256, 256, 128}}};

void BM_Additive(benchmark::State& state, bool fused, bool backward) {
  const Shape s = kShapes[static_cast<size_t>(state.range(0))];
  torch::set_num_threads(static_cast<int>(state.range(1)));
  torch::manual_seed(0);
  auto q = torch::randn({s.N, s.Lq, s.D}).requires_grad_(backward);
  auto k = torch::randn({s.N, s.Lk, s.D}).requires_grad_(backward);
  auto w = torch::randn({s.D}).requires_grad_(backward);
  auto grad = torch::randn({s.N, s.Lq, s.Lk});
  auto run = [&] {
    auto scores = fused ? torchattn::ops::additive_attention_scores(q, k, w)
                        : torch::tanh(q.unsqueeze(2) + k.unsqueeze(1)).matmul(w);
    if (backward) {
      scores.backward(grad);
    }
    return scores;
  };
  run(); // warm-up: first-touch pages, OpenMP threads
  for (auto _ : state) {
    benchmark::DoNotOptimize(run());
  }
}

struct Collector : benchmark::ConsoleReporter {
  std::map<std::string, double> ms;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") {
        continue;
      }
      std::string key = run.benchmark_name();
      key = key.substr(0, key.find("/real_time"));
      ms[key] = run.GetAdjustedRealTime();
    }
  }
};

std::string name(const char* pass, const char* path, size_t shape, int threads) {
  return fmt::format("{}/{}/{}/{}", pass, path, shape, threads);
}

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // Fused and composite of one configuration one after the other.
  for (const char* pass : {"fwd", "fwd+bwd"}) {
    const bool backward = std::string(pass) != "fwd";
    for (size_t shape = 0; shape < kShapes.size(); ++shape) {
      for (const char* path : {"fused", "composite"}) {
        const bool fused = std::string(path) == "fused";
        benchmark::RegisterBenchmark(
            fmt::format("{}/{}", pass, path).c_str(),
            [fused, backward](benchmark::State& st) { BM_Additive(st, fused, backward); })
            ->Args({static_cast<int64_t>(shape), 2})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  benchmark::Shutdown();

  fmt::print(
      "\n| pass | N | Lq | Lk | D | fused ms | composite ms | composite / fused | energies (MiB) "
      "|\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  for (const char* pass : {"fwd", "fwd+bwd"}) {
    for (size_t i = 0; i < kShapes.size(); ++i) {
      const auto f = collector.ms.find(name(pass, "fused", i, 2));
      const auto c = collector.ms.find(name(pass, "composite", i, 2));
      if (f == collector.ms.end() || c == collector.ms.end()) {
        continue;
      }
      const Shape& s = kShapes[i];
      const double mib = static_cast<double>(s.N * s.Lq * s.Lk * s.D) * 4.0 / (1 << 20);
      fmt::print(
          "| {} | {} | {} | {} | {} | {:.3f} | {:.3f} | {:.2f}x | {:.1f} |\n", pass, s.N, s.Lq,
          s.Lk, s.D, f->second, c->second, c->second / f->second, mib);
    }
  }
  return 0;
}
