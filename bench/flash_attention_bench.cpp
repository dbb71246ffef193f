// The fused kernel (torchattn::scaled_dot_product_attention) against the math path
// softmax(q kᵀ · scale) v in the same process, with the machine's own yardsticks measured in
// the same run: a register-only FMA loop on the same threads (the FMA peak) and a 2048² at::mm.
//
// B=1, H=8, E=64, float32, N in 512..16384, causal and not, 1 and 2 threads, forward and
// forward+backward. GFLOP/s counts 4·B·H·N²·E per forward (halved when causal) and 2.5 times
// that for backward. The math path stops at N=8192 (its scores alone take 8 GiB at 16384).
// With LibTorch 2.1+ (the trixie chroot: make bench-2.6), PyTorch's own CPU flash attention,
// at::scaled_dot_product_attention, races too, at N 1024..8192 on 2 threads.
//
//   torchattn-bench-flash [--benchmark_filter=...]       (Google Benchmark flags)
//
// After the Google Benchmark output it prints one table of ratios and figures.

#include <torchattn/torchattn.h>

#include "proc_status.h"

#include "detail/compat.h"

#include <benchmark/benchmark.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <fmt/format.h>

#include <immintrin.h>
#include <malloc.h>
#include <sys/resource.h>

// GCC 12's own _mm512_reduce_add_ps trips -Wuninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr int64_t kHeads = 8;
constexpr int64_t kHeadDim = 64;

using torchattn::bench::status_kib;

long g_base_rss_kib = -1; // the RSS when the current peak window opened, or -1

/// Opens a new peak-RSS window for one benchmark: the paths of a configuration share this
/// process, so the lifetime peak would say nothing about the later ones. Free heap memory is
/// returned first (malloc_trim), so that memory a run reuses from an earlier one is faulted
/// in again and counted; then VmHWM is reset ("5" in clear_refs, Linux 4.0+).
void reset_peak_rss() {
  malloc_trim(0);
  g_base_rss_kib = -1;
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    const bool ok = std::fputs("5", f) >= 0;
    if (std::fclose(f) == 0 && ok) {
      g_base_rss_kib = status_kib("VmRSS");
    }
  }
}

/// How far RSS rose above the window's start (inputs included), or, where the window could not
/// be opened, the process's lifetime peak.
double peak_rss_mib() {
  const long hwm = status_kib("VmHWM");
  if (g_base_rss_kib >= 0 && hwm >= 0) {
    return static_cast<double>(hwm - g_base_rss_kib) / 1024.0;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

/// 4·B·H·N²·E per forward (halved when causal); backward counts 2.5 times the forward.
double pass_flops(int64_t n, bool causal, bool backward) {
  const double f = 4.0 * kHeads * static_cast<double>(n) * static_cast<double>(n) * kHeadDim;
  return (causal ? f / 2 : f) * (backward ? 3.5 : 1.0);
}

// ---- the FMA peak: independent accumulators, no memory traffic -------------------------------

constexpr int kAccumulators = 12; // FMA latency x pipes, with room, and fits 16 ymm too

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) {
    acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  }
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccumulators; ++i) {
      acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
  }
  float s = 0;
  for (int i = 0; i < kAccumulators; ++i) {
    s += _mm512_reduce_add_ps(acc[i]);
  }
  return s;
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
  __m256 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) {
    acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  }
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.0001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccumulators; ++i) {
      acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
  }
  float lanes[8];
  float s = 0;
  for (int i = 0; i < kAccumulators; ++i) {
    _mm256_storeu_ps(lanes, acc[i]);
    for (float l : lanes) {
      s += l;
    }
  }
  return s;
}

bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

void BM_FmaPeak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  at::set_num_threads(threads);
  const int64_t iters = 20'000'000;
  const bool wide = has_avx512();
  const int lanes = wide ? 16 : 8;
  float sink = 0;
  for (auto _ : state) {
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float s = wide ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
        benchmark::DoNotOptimize(s);
      }
    });
  }
  benchmark::DoNotOptimize(sink);
  const double flops = 2.0 * lanes * kAccumulators * static_cast<double>(iters) * threads;
  state.counters["GFLOPS"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Matmul(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto a = torch::randn({2048, 2048}), b = torch::randn({2048, 2048});
  for (auto _ : state) {
    benchmark::DoNotOptimize(torch::mm(a, b));
  }
  state.counters["GFLOPS"] = benchmark::Counter(
      2.0 * 2048 * 2048 * 2048 / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- attention ---------------------------------------------------------------------------------

enum class Path { Fused, Math, Torch };

const char* path_name(Path path) {
  switch (path) {
    case Path::Fused:
      return "fused";
    case Path::Math:
      return "math";
    case Path::Torch:
      break;
  }
  return "torch";
}

torch::Tensor attention(
    Path path, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    bool causal) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  if (path == Path::Fused) {
    return torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
  }
  if (path == Path::Torch) {
    return torchattn::detail::aten_sdpa(q, k, v, causal, scale);
  }
  // LibTorch 1.13's math path, as torch.nn.functional.scaled_dot_product_attention's.
  auto scores = (q * scale).matmul(k.transpose(-2, -1));
  if (causal) {
    const int64_t n = q.size(2);
    scores = scores.masked_fill(torch::ones({n, n}, torch::kBool).triu(1), -INFINITY);
  }
  return torch::softmax(scores, -1).matmul(v);
}

void BM_Attention(benchmark::State& state, Path path, bool backward) {
  const int64_t n = state.range(0);
  const bool causal = state.range(1) != 0;
  at::set_num_threads(static_cast<int>(state.range(2)));
  reset_peak_rss();
  torch::manual_seed(0);
  auto q = torch::randn({1, kHeads, n, kHeadDim}).requires_grad_(backward);
  auto k = torch::randn({1, kHeads, n, kHeadDim}).requires_grad_(backward);
  auto v = torch::randn({1, kHeads, n, kHeadDim}).requires_grad_(backward);
  torch::AutoGradMode grad_mode(backward);
  auto step = [&] {
    auto out = attention(path, q, k, v, causal);
    if (backward) {
      out.backward(torch::ones_like(out));
    }
    return out;
  };
  // One untimed call first: thread pools, BLAS buffers and the allocator warm up for both.
  step();
  for (auto _ : state) {
    benchmark::DoNotOptimize(step());
  }
  const double flops = pass_flops(n, causal, backward);
  state.counters["GFLOPS"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_RSS_MiB"] = peak_rss_mib();
}

// ---- the summary table ----------------------------------------------------------------------

struct Result {
  double seconds = 0;
  double gflops = 0;
  double rss = 0;
};

/// Prints Google Benchmark's console output and keeps every result for the table.
class Collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, Result> results;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      // With --benchmark_repetitions, the median stands for the configuration (it comes
      // after the repetitions and replaces them); other aggregates are left out.
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") {
        continue;
      }
      Result r;
      r.seconds = run.GetAdjustedRealTime() / 1e3; // every benchmark here reports milliseconds
      auto g = run.counters.find("GFLOPS");
      if (g != run.counters.end()) {
        r.gflops = g->second.value;
      }
      auto m = run.counters.find("peak_RSS_MiB");
      if (m != run.counters.end()) {
        r.rss = m->second.value;
      }
      // Drop the "/min_time:..." segment Google Benchmark adds to the name.
      std::string key = run.run_name.str();
      const auto at = key.find("/min_time:");
      if (at != std::string::npos) {
        key.erase(at, key.find('/', at + 1) - at);
      }
      results[key] = r;
    }
  }
};

std::string name(const char* pass, Path path, int64_t n, bool causal, int threads) {
  return fmt::format("{}/{}/{}/{}/{}/real_time", pass, path_name(path), n, causal ? 1 : 0, threads);
}

void print_table(const std::map<std::string, Result>& r) {
  auto get = [&](const std::string& key) -> const Result* {
    auto it = r.find(key);
    return it == r.end() ? nullptr : &it->second;
  };
  std::map<int, double> peak;
  for (int t : {1, 2}) {
    if (const auto* p = get(fmt::format("fma_peak/{}/real_time", t))) {
      peak[t] = p->gflops;
      std::printf(
          "FMA peak (register-only loop), %d thread%s: %.1f GFLOP/s\n", t, t == 1 ? "" : "s",
          p->gflops);
    }
  }
  if (const auto* mm = get("at::mm_2048/2/real_time")) {
    std::printf("at::mm 2048x2048 float32, 2 threads: %.1f GFLOP/s\n", mm->gflops);
  }
  std::printf("kernel build: %s\n\n", torchattn::ops::kernel_capability().c_str());
  std::printf(
      "%-16s %6s %6s %3s %10s %8s %7s %10s %7s %7s %8s %9s %8s %9s\n", "pass", "N", "causal", "thr",
      "fused ms", "GFLOP/s", "% peak", "math ms", "speedup", "bound", "RSS MiB", "torch ms",
      "vs torch", "torch RSS");
  for (const char* pass : {"forward", "forward+backward"}) {
    for (int threads : {1, 2}) {
      for (int causal : {0, 1}) {
        for (int64_t n = 512; n <= 16384; n *= 2) {
          const auto* f = get(name(pass, Path::Fused, n, causal, threads));
          const auto* m = get(name(pass, Path::Math, n, causal, threads));
          const auto* t = get(name(pass, Path::Torch, n, causal, threads));
          if (f == nullptr && m == nullptr && t == nullptr) {
            continue;
          }
          auto cell = [](bool have, const std::string& text) {
            return have ? text : std::string("-");
          };
          const bool pct = f != nullptr && peak.count(threads) != 0;
          // The speedup a kernel running at the FMA peak would have: math ms / (FLOPs / peak).
          const bool bound = m != nullptr && peak.count(threads) != 0;
          const double flops = pass_flops(n, causal != 0, std::string(pass) != "forward");
          std::printf(
              "%-16s %6ld %6s %3d %10s %8s %7s %10s %7s %7s %8s %9s %8s %9s\n", pass,
              static_cast<long>(n), causal ? "yes" : "no", threads,
              cell(f, fmt::format("{:.1f}", f ? f->seconds * 1e3 : 0)).c_str(),
              cell(f, fmt::format("{:.1f}", f ? f->gflops : 0)).c_str(),
              cell(pct, fmt::format("{:.1f}", pct ? 100.0 * f->gflops / peak[threads] : 0)).c_str(),
              cell(m, fmt::format("{:.1f}", m ? m->seconds * 1e3 : 0)).c_str(),
              cell(f && m, fmt::format("{:.2f}x", f && m ? m->seconds / f->seconds : 0)).c_str(),
              cell(
                  bound,
                  fmt::format("{:.2f}x", bound ? m->seconds * peak[threads] * 1e9 / flops : 0))
                  .c_str(),
              cell(f, fmt::format("{:.0f}", f ? f->rss : 0)).c_str(),
              cell(t, fmt::format("{:.1f}", t ? t->seconds * 1e3 : 0)).c_str(),
              cell(f && t, fmt::format("{:.2f}x", f && t ? t->seconds / f->seconds : 0)).c_str(),
              cell(t, fmt::format("{:.0f}", t ? t->rss : 0)).c_str());
        }
      }
    }
  }
  std::printf(
      "\nGFLOP/s: 4*B*H*N^2*E per forward (causal halved), backward 2.5x forward.\n"
      "%% peak: of the FMA peak on the same thread count. speedup: math ms / fused ms.\n"
      "bound: the speedup of a kernel doing these FLOPs at the FMA peak (math ms / ideal ms).\n"
      "vs torch: at::scaled_dot_product_attention ms / fused ms (LibTorch 2.1+ only).\n"
      "%s\n",
      g_base_rss_kib >= 0 ? "RSS MiB, torch RSS: how far the run's peak RSS rose above the "
                            "process's RSS before it made its inputs."
                          : "RSS MiB, torch RSS: the process's peak RSS so far (this kernel cannot "
                            "reset it per run).");
}

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (int t : {1, 2}) {
    benchmark::RegisterBenchmark("fma_peak", BM_FmaPeak)
        ->Arg(t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("at::mm_2048", BM_Matmul)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  std::vector<Path> paths{Path::Fused, Path::Math};
  if (TORCHATTN_HAS_ATEN_SDPA) {
    paths.push_back(Path::Torch);
  }
  // The paths of one configuration run back to back, so that a ratio compares runs a few
  // seconds apart on this shared machine, not minutes.
  for (bool backward : {false, true}) {
    const char* pass = backward ? "forward+backward" : "forward";
    for (int threads : {1, 2}) {
      for (int causal : {0, 1}) {
        for (int64_t n = 512; n <= 16384; n *= 2) {
          for (Path path : paths) {
            if ((path == Path::Math && n > 8192) ||
                (path == Path::Torch && (n < 1024 || n > 8192 || threads != 2))) {
              continue;
            }
            // Named pass/path/N/causal/threads, as name() spells it.
            const std::string label = fmt::format("{}/{}", pass, path_name(path));
            benchmark::RegisterBenchmark(
                label.c_str(),
                [path, backward](benchmark::State& s) { BM_Attention(s, path, backward); })
                ->Args({n, causal, threads})
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond)
                ->MinTime(0.3);
          }
        }
      }
    }
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  benchmark::Shutdown();
  print_table(collector.results);
  return 0;
}
