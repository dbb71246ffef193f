// bfloat16 and float16 beside float32 through the fused kernel, forward and forward+backward,
// causal and not, B=1, H=8, E=64, N from 512 to 16384, 2 threads unless OMP_NUM_THREADS says;
// with the machine's peak rates measured in the same run: the float32 FMA and the bf16
// vdpbf16ps register-only loops, an AMX tile loop where the CPU has AMX, and at::mm in float32
// and bfloat16. Where LibTorch has at::scaled_dot_product_attention (2.1+), PyTorch's sdpa in
// the same dtypes runs beside ours.
//
//   torchattn-bench-low-precision [--quick] [--default-heap] [--ours-only]
//     --quick: N up to 4096, forward+backward to 2048
//     --ours-only: without PyTorch's sdpa (with LibTorch 2.x it takes most of the run's time)
//     --default-heap: glibc's heap as it comes (see below)
//
// The dtypes of one configuration alternate (f32 bf16 fp16 f32 ...) and each figure is the
// median of its repetitions, so a ratio of ours compares runs milliseconds apart on a shared
// machine; PyTorch's run after all of ours, alternating likewise. Each forward+backward pass
// starts without gradients, as after zero_grad(set_to_none=True) (until session 23 they
// accumulated, and each pass timed LibTorch's += into .grad and its allocations too).
//
// The heap: by default glibc hands freed blocks of 128 KiB and more back to the kernel
// (munmap, or trimming the heap's top), and the next pass faults them in again a page at a
// time. Session 23, N = 512, forward+backward causal and not, float32 and bf16 alternating in
// one process: 230-590 page faults per float32 pass and bf16/f32 between 1.72x and 2.39x in
// eight runs; with the heap kept, 0-22 faults and 1.62x-1.69x. So the bench keeps freed
// memory in the process (mallopt: mmap only above 32 MiB, no trimming), as a caching
// allocator (jemalloc, tcmalloc, PyTorch's CUDA allocator) does; `--default-heap` leaves
// glibc as it is.

#include <torchattn/torchattn.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <fmt/format.h>

#include <immintrin.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

// GCC 12's own _mm512_undefined_* helpers trip -W(maybe-)uninitialized (GCC bug 105593).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace {

constexpr int64_t kHeads = 8, kHeadDim = 64;
constexpr int kAccumulators = 12;    // FMA: latency x pipes, with room
constexpr int kDotAccumulators = 16; // vdpbf16ps: its latency is longer (12 gave 8% less on Zen 5)

double seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- peak rates ----------------------------------------------------------------------------

__attribute__((target("avx512f"))) float fma_loop(int64_t iters) {
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

/// vdpbf16ps: 32 bf16 products and 32 adds per instruction on 512 bits.
__attribute__((target("avx512f,avx512bf16"))) float dpbf16_loop(int64_t iters) {
  __m512 acc[kDotAccumulators];
  for (int i = 0; i < kDotAccumulators; ++i) {
    acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  }
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80); // (1, 1) in bf16
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x38d138d1); // (1e-4, 1e-4)
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kDotAccumulators; ++i) {
      acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
  }
  float s = 0;
  for (int i = 0; i < kDotAccumulators; ++i) {
    s += _mm512_reduce_add_ps(acc[i]);
  }
  return s;
}

bool cpu_has(const char* feature) {
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx512bf16") == 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1u);
  }
  if (std::strcmp(feature, "amx") == 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 22) & 1u) && ((d >> 24) & 1u) &&
           syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }
  return __builtin_cpu_supports("avx512f");
}

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

/// AMX: tdpbf16ps on 16 x 32 bf16 tiles, 16 x 16 x 32 x 2 FLOPs per instruction; four
/// accumulators (tiles 0-3) so that the loop is bound by throughput.
__attribute__((target("amx-tile,amx-bf16"))) void amx_loop(int64_t iters) {
  TileConfig cfg;
  for (int t = 0; t < 6; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  alignas(64) static uint16_t data[16 * 32] = {};
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  for (int64_t it = 0; it < iters; ++it) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 5);
    _tile_dpbf16ps(2, 4, 5);
    _tile_dpbf16ps(3, 4, 5);
  }
  _tile_release();
}

volatile float g_sink = 0; // keeps the loops' results, so that they are not optimized away

/// GFLOP/s of `per_thread(iters)` on every thread, `flops_per_iter` per iteration and thread.
double peak(const std::function<void(int64_t)>& per_thread, double flops_per_iter) {
  const int threads = at::get_num_threads();
  const int64_t iters = 20'000'000;
  std::vector<double> t;
  for (int r = 0; r < 3; ++r) {
    t.push_back(seconds([&] {
      at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          per_thread(iters);
        }
      });
    }));
  }
  return flops_per_iter * static_cast<double>(iters) * threads / median(t) / 1e9;
}

double matmul_gflops(torch::ScalarType dtype) {
  auto a = torch::randn({2048, 2048}).to(dtype), b = torch::randn({2048, 2048}).to(dtype);
  torch::mm(a, b);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) {
    t.push_back(seconds([&] { torch::mm(a, b); }));
  }
  return 2.0 * 2048 * 2048 * 2048 / median(t) / 1e9;
}

// ---- attention -----------------------------------------------------------------------------

struct Case {
  int64_t n;
  bool causal, backward;
};

/// Seconds of one pass of ours (or PyTorch's sdpa, `torch`) in `dtype`.
std::function<double()> pass(const Case& c, torch::ScalarType dtype, bool torch_sdpa) {
  torch::manual_seed(0);
  auto make = [&] {
    return torch::randn({1, kHeads, c.n, kHeadDim}).to(dtype).requires_grad_(c.backward);
  };
  auto q = make(), k = make(), v = make();
  return [=]() mutable {
    torch::AutoGradMode grad_mode(c.backward);
    for (auto* t : {&q, &k, &v}) {
      t->mutable_grad() = torch::Tensor();
    }
    return seconds([&] {
      torch::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
      if (torch_sdpa) {
        out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, c.causal);
      } else
#endif
      {
        (void)torch_sdpa;
        out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, c.causal);
      }
      if (c.backward) {
        out.backward(torch::ones_like(out));
      }
    });
  };
}

/// Medians in ms of float32, bf16 and float16 passes of ours (or PyTorch's sdpa), the dtypes
/// alternating: up to 75 repetitions at the small sizes, whose passes take 1-10 ms (with 15
/// there, medians moved by 0.1x between runs), about 0.4 s of float32 per dtype at N = 2048.
std::array<double, 3> time_dtypes(const Case& c, bool torch_sdpa) {
  std::vector<std::function<double()>> runs;
  for (auto dt : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    runs.push_back(pass(c, dt, torch_sdpa));
  }
  for (auto& r : runs) {
    r(); // warm up
  }
  const double work = static_cast<double>(c.n) * static_cast<double>(c.n) * kHeads * kHeadDim;
  const int reps = std::clamp(static_cast<int>(4e10 / work / (c.backward ? 3 : 1)), 3, 75);
  std::vector<std::vector<double>> t(runs.size());
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t i = 0; i < runs.size(); ++i) {
      t[i].push_back(runs[i]());
    }
  }
  return {median(t[0]) * 1e3, median(t[1]) * 1e3, median(t[2]) * 1e3};
}

} // namespace

int main(int argc, char** argv) {
  bool quick = false, default_heap = false, ours_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--default-heap") == 0) {
      default_heap = true;
    } else if (std::strcmp(argv[i], "--ours-only") == 0) {
      ours_only = true;
    } else {
      fmt::print(stderr, "usage: {} [--quick] [--default-heap] [--ours-only]\n", argv[0]);
      return 2;
    }
  }
  if (default_heap) {
    fmt::print("heap: glibc's defaults (freed blocks go back to the kernel)\n");
  } else if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1) {
    fmt::print("heap: freed memory stays in the process (mmap above 32 MiB only, no trim)\n");
  } else {
    fmt::print("heap: mallopt refused; glibc's defaults\n");
  }
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    at::set_num_threads(2);
  }
  const int threads = at::get_num_threads();
  fmt::print("kernel build: {} ({} threads)\n", torchattn::ops::kernel_capability(), threads);
  if (cpu_has("avx512f")) {
    fmt::print(
        "float32 FMA peak (register-only vfmadd, 512-bit): {:.0f} GFLOP/s\n",
        peak([](int64_t n) { g_sink = g_sink + fma_loop(n); }, 2.0 * 16 * kAccumulators));
  }
  if (cpu_has("avx512bf16")) {
    fmt::print(
        "bf16 peak (register-only vdpbf16ps, 512-bit): {:.0f} GFLOP/s\n",
        peak([](int64_t n) { g_sink = g_sink + dpbf16_loop(n); }, 2.0 * 32 * kDotAccumulators));
  } else {
    fmt::print("bf16 vdpbf16ps: this CPU has no AVX512-BF16\n");
  }
  if (cpu_has("amx")) {
    fmt::print(
        "bf16 peak (AMX tdpbf16ps on tiles): {:.0f} GFLOP/s\n",
        peak([](int64_t n) { amx_loop(n / 16); }, 4.0 * 16 * 16 * 32 * 2 / 16));
  } else {
    fmt::print("AMX: this CPU (or Linux) gives no AMX tiles\n");
  }
  fmt::print(
      "at::mm 2048^2: float32 {:.0f} GFLOP/s, bfloat16 {:.0f} GFLOP/s, float16 {:.0f} GFLOP/s\n\n",
      matmul_gflops(torch::kFloat), matmul_gflops(torch::kBFloat16),
      TORCH_VERSION_MAJOR >= 2 ? matmul_gflops(torch::kHalf) : 0.0);

  const bool with_torch = TORCH_VERSION_MAJOR >= 2 && !ours_only;
  fmt::print(
      "{:<17} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}{}\n", "pass", "N", "causal", "f32 ms",
      "bf16 ms", "fp16 ms", "bf16 TF/s", "bf16/f32", "fp16/f32",
      with_torch ? fmt::format(
                       " {:>13} {:>13} {:>13} {:>10} {:>10}", "torch f32 ms", "torch bf16 ms",
                       "torch fp16 ms", "bf16 vs pt", "fp16 vs pt")
                 : "");
  std::vector<Case> cases;
  for (bool backward : {false, true}) {
    for (bool causal : {false, true}) {
      for (int64_t n = 512; n <= 16384; n *= 2) {
        if (!(quick && (n > 4096 || (backward && n > 2048)))) {
          cases.push_back(Case{n, causal, backward});
        }
      }
    }
  }
  // All of ours first, then PyTorch's: its passes (up to seconds, gigabytes of bf16 scores)
  // never run before ours, which are timed as in a build without PyTorch's sdpa.
  std::vector<std::array<double, 3>> ours, theirs(cases.size());
  for (const Case& c : cases) {
    ours.push_back(time_dtypes(c, false));
  }
  // PyTorch 2.6's CPU fp16 sdpa is very slow (4 s at N=4096): up to 4096 only.
  auto with_theirs = [&](const Case& c) {
    return with_torch && c.n <= 4096 && !(c.backward && c.n > 2048);
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    if (with_theirs(cases[i])) {
      theirs[i] = time_dtypes(cases[i], true);
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const auto& ms = ours[i];
    const auto& pt = theirs[i];
    const double work = static_cast<double>(c.n) * static_cast<double>(c.n) * kHeads * kHeadDim;
    const double flops = 4.0 * work * (c.causal ? 0.5 : 1.0) * (c.backward ? 3.5 : 1.0);
    std::string torch_cells;
    if (with_theirs(c)) {
      torch_cells = fmt::format(
          " {:>13.1f} {:>13.1f} {:>13.1f} {:>9.2f}x {:>9.2f}x", pt[0], pt[1], pt[2], pt[1] / ms[1],
          pt[2] / ms[2]);
    }
    fmt::print(
        "{:<17} {:>6} {:>6} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.2f} {:>7.2f}x {:>7.2f}x{}\n",
        c.backward ? "forward+backward" : "forward", c.n, c.causal ? "yes" : "no", ms[0], ms[1],
        ms[2], flops / (ms[1] * 1e-3) / 1e12, ms[0] / ms[1], ms[0] / ms[2], torch_cells);
  }
  fmt::print(
      "\nbf16/f32, fp16/f32: our float32 ms / our bf16 (fp16) ms, the speedup of the low dtype.\n"
      "bf16 vs pt: PyTorch's bf16 sdpa ms / ours (likewise fp16). TF/s: 4 N^2 H E per forward\n"
      "(causal halved), backward 2.5x forward.\n");
  return 0;
}
