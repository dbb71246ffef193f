// Decoding against a key/value cache: the decoding kernel's time and the GB/s of cache it reads
// (keys and values of the kv heads, in the dtype: float32 unless --dtype says), beside the copy
// bandwidth of the same bytes measured in the same run, and the tiled kernel (the route before the
// decoding kernel) where H = H_kv. One query per head, E = 128, 2 threads unless OMP_NUM_THREADS
// says.
//
//   torchattn-bench-decode [--quick] [--dtype float32|bfloat16|float16]
//                                        (--quick: the three target rows only)
//
// The targets' rows come first: H = 32 (MHA), H = 1 and GQA 32/8 at Lk = 32768. Then the table:
// Lk from 1k to 128k, B x H_kv from 1 to 64, GQA ratios 1, 4 and 8 (caches over 2 GiB are
// skipped). Cases alternate with the copy (A B A B ...) and each figure is the median of its
// repetitions, so a ratio compares runs milliseconds apart on a shared machine.

#include <torchattn/torchattn.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

double seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

torch::ScalarType dtype = torch::kFloat;

/// Bytes of one cache element in the dtype.
double element_bytes() {
  return static_cast<double>(c10::elementSize(dtype));
}

struct Row {
  double decode, copy, tiled; // seconds (tiled: 0 where not run)
};

/// Times B x H query heads against B x H_kv cache heads of Lk keys.
Row run(int64_t B, int64_t H, int64_t Hkv, int64_t Lk, bool with_tiled) {
  constexpr int64_t E = 128;
  torch::manual_seed(0);
  auto q = torch::randn({B, H, 1, E}).to(dtype);
  auto k = torch::randn({B, Hkv, Lk, E}).to(dtype), v = torch::randn({B, Hkv, Lk, E}).to(dtype);
  auto k2 = torch::empty_like(k), v2 = torch::empty_like(v);
  const double bytes = 2.0 * static_cast<double>(k.numel()) * element_bytes();
  const int reps = std::clamp(static_cast<int>(4e9 / bytes), 5, 200);
  auto decode = [&] {
    torchattn::ops::decode_attention(q, k, v, {}, {}, /*is_causal=*/true, -1, {});
  };
  auto copy = [&] {
    k2.copy_(k);
    v2.copy_(v);
  };
  auto tiled = [&] {
    torchattn::ops::_scaled_dot_product_attention_forward(q, k, v, {}, false, 1.0 / std::sqrt(E));
  };
  decode();
  copy();
  std::vector<double> d, c, t;
  for (int r = 0; r < reps; ++r) {
    d.push_back(seconds(decode));
    c.push_back(seconds(copy));
    if (with_tiled && H == Hkv) {
      t.push_back(seconds(tiled));
    }
  }
  return {median(d), median(c), t.empty() ? 0.0 : median(t)};
}

void print_row(int64_t B, int64_t H, int64_t Hkv, int64_t Lk, const Row& r) {
  const double gb = 2.0 * B * Hkv * Lk * 128 * element_bytes() / 1e9;
  fmt::print(
      "| {:>2} | {:>3} | {:>2} | {:>6} | {:>8.3f} | {:>6.1f} | {:>6.1f} | {:>5.0f}% | {} |\n", B, H,
      Hkv, Lk, r.decode * 1e3, gb / r.decode, gb / r.copy, 100 * r.copy / r.decode,
      r.tiled > 0 ? fmt::format("{:.1f} ({:.2f}x)", gb / r.tiled, r.tiled / r.decode) : "");
}

void header() {
  fmt::print(
      "| B | H | H_kv | Lk | decode ms | cache GB/s | copy GB/s | of copy | tiled GB/s (decode "
      "speedup) |\n|---|---|---|---|---|---|---|---|---|\n");
}

} // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
      const std::string name = argv[++i];
      if (name == "float32") {
        dtype = torch::kFloat;
      } else if (name == "bfloat16") {
        dtype = torch::kBFloat16;
      } else if (name == "float16") {
        dtype = torch::kHalf;
      } else {
        fmt::print(stderr, "unknown dtype '{}': float32, bfloat16 or float16\n", name);
        return 2;
      }
    } else {
      fmt::print(stderr, "usage: {} [--quick] [--dtype float32|bfloat16|float16]\n", argv[0]);
      return 2;
    }
  }
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    at::set_num_threads(2);
  }
  torch::NoGradGuard no_grad;
  fmt::print(
      "decode_attention, {}, one query per head, E=128, {} threads, kernel {}\n\n",
      c10::toString(dtype), at::get_num_threads(), torchattn::ops::kernel_capability());
  fmt::print("Targets (Lk = 32768):\n\n");
  header();
  const Row mha = run(1, 32, 32, 32768, true);
  print_row(1, 32, 32, 32768, mha);
  const Row one = run(1, 1, 1, 32768, true);
  print_row(1, 1, 1, 32768, one);
  // GQA 32/8 against the 8 kv heads read as MHA, alternated.
  std::vector<double> gqa, mha8;
  for (int r = 0; r < 5; ++r) {
    gqa.push_back(run(1, 32, 8, 32768, false).decode);
    mha8.push_back(run(1, 8, 8, 32768, false).decode);
  }
  fmt::print(
      "\nGQA 32/8: {:.3f} ms, MHA 8/8 (the same cache): {:.3f} ms, ratio {:.2f}\n",
      median(gqa) * 1e3, median(mha8) * 1e3, median(gqa) / median(mha8));
  if (quick) {
    return 0;
  }
  fmt::print("\nTable:\n\n");
  header();
  for (int64_t Lk : {1024, 4096, 16384, 32768, 131072}) {
    for (int64_t bh : {1, 8, 64}) {
      for (int64_t g : {1, 4, 8}) {
        if (2.0 * bh * Lk * 128 * element_bytes() > 2.0 * (1 << 30)) {
          continue;
        }
        const int64_t B = bh >= 8 ? bh / 8 : 1, Hkv = bh / B;
        print_row(B, Hkv * g, Hkv, Lk, run(B, Hkv * g, Hkv, Lk, false));
      }
    }
  }
  return 0;
}
