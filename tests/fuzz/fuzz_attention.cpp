// libFuzzer target: bytes -> shapes, strides, dtypes, masks, scale, causal and dropout for
// torchattn::ops::scaled_dot_product_attention and the functionals that route to it. Each call
// either raises c10::Error, or returns results that are finite wherever the float64 math is
// and that equal the math path (outputs, and gradients for small sizes) within the edge
// sweep's tolerances, max(rel x the largest element, 10 x the error of the math in the same
// dtype), or the rounding bound of the scores themselves (below), whichever is larger.
// Anything else aborts, and libFuzzer keeps the input.
//
//   cmake -S . -B build-sanitize -DCMAKE_CXX_COMPILER=clang++ -DTORCHATTN_BUILD_FUZZERS=ON
//   build-sanitize/tests/fuzz/torchattn_fuzz -max_total_time=60 new-inputs/ tests/fuzz/corpus/

#include <torchattn/torchattn.h>

#include "support/scale_after.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;

/// Reads the fuzzer's bytes in order; zeros once they run out.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  int64_t pick(int64_t lo, int64_t hi) { return lo + next() % (hi - lo + 1); }
  template <typename T, size_t N>
  T of(const T (&table)[N]) {
    return table[next() % N];
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

std::string fmt_g(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "torchattn_fuzz: %s\n", what.c_str());
  std::abort();
}

/// A [B, H, L, D] input with the given layout (0 contiguous, 1 transposed from [B, L, H, D],
/// 2 a slice of a wider last dim, 3 broadcast over the batch), values randn x magnitude.
torch::Tensor make_input(
    int64_t B, int64_t H, int64_t L, int64_t D, int layout, double magnitude,
    torch::ScalarType dtype) {
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor t;
  switch (layout) {
    case 1:
      t = torch::randn({B, L, H, D}, opts).transpose(1, 2);
      break;
    case 2:
      t = torch::randn({B, H, L, D + 2}, opts).narrow(3, 1, D);
      break;
    case 3:
      t = torch::randn({1, H, L, D}, opts).expand({B, H, L, D});
      break;
    default:
      t = torch::randn({B, H, L, D}, opts);
      break;
  }
  return (t * magnitude).to(dtype);
}

double max_abs(const torch::Tensor& t) {
  return t.numel() == 0 ? 0.0 : t.abs().max().item<double>();
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return a.numel() == 0 ? 0.0
                        : (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

struct Case {
  torch::Tensor q, k, v, mask;
  bool causal = false;
  c10::optional<double> scale;
  double dropout = 0.0;

  std::string str() const {
    std::string m = "none";
    if (mask.defined()) {
      m = std::string(mask.scalar_type() == torch::kBool ? "bool " : "float ") +
          torch::str(mask.sizes()) +
          (mask.numel() > 0 && mask.is_floating_point()
               ? " min " + std::to_string(mask.min().item<double>())
               : std::string());
    }
    return "q " + torch::str(q.sizes()) + " |q|max " +
           (q.numel() > 0 ? std::to_string(q.abs().max().item<double>()) : std::string("-")) +
           ", k " + torch::str(k.sizes()) + ", v " + torch::str(v.sizes()) + ", mask " + m +
           ", causal " + std::to_string(causal) + ", scale " +
           (scale.has_value() ? std::to_string(*scale) : std::string("default")) + ", dropout " +
           std::to_string(dropout);
  }
};

/// The op, or the functional (which routes small scores to the math path unless told).
enum class Math { No, ScaleFirst, ScaleAfter };

std::vector<torch::Tensor> run(
    const Case& c, int route, bool grads, torch::ScalarType dtype, Math math) {
  auto q = c.q.to(dtype).requires_grad_(grads), k = c.k.to(dtype).requires_grad_(grads),
       v = c.v.to(dtype).requires_grad_(grads);
  auto mask = c.mask.defined() && c.mask.is_floating_point() ? c.mask.to(dtype) : c.mask;
  torch::Tensor out;
  if (math == Math::ScaleAfter) {
    const double scale =
        c.scale.has_value() ? *c.scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    out = torchattn::testing::scale_after_attention(q, k, v, mask, c.causal, scale);
  } else if (math == Math::ScaleFirst || route == 1) {
    auto opts = F::ScaledDotProductAttentionFuncOptions()
                    .attn_mask(mask)
                    .is_causal(c.causal)
                    .dropout_p(c.dropout)
                    .need_weights(math == Math::ScaleFirst);
    if (c.scale.has_value())
      opts.scale(*c.scale);
    out = std::get<0>(F::scaled_dot_product_attention(q, k, v, opts));
  } else if (route == 2 && !c.scale.has_value()) {
    // dot_product_attention is scale 1: the same call with q pre-scaled by 1/sqrt(E).
    auto opts = F::DotProductAttentionFuncOptions().attn_mask(mask).is_causal(c.causal).dropout_p(
        c.dropout);
    const double s = q.size(-1) > 0 ? 1.0 / std::sqrt(static_cast<double>(q.size(-1))) : 1.0;
    out = std::get<0>(F::dot_product_attention(q * s, k, v, opts));
  } else {
    out = torchattn::ops::scaled_dot_product_attention(
        q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt, c.dropout,
        c.causal, c.scale);
  }
  std::vector<torch::Tensor> results{out.detach()};
  if (grads) {
    torch::manual_seed(7);
    auto g = torch::autograd::grad({out}, {q, k, v}, {torch::randn_like(out)});
    results.insert(results.end(), g.begin(), g.end());
  }
  return results;
}

Case decode(Bytes& in, torch::ScalarType& dtype) {
  Case c;
  const int64_t B = in.pick(0, 2), H = in.pick(1, 3);
  const int64_t Lq = in.of({0L, 1L, 3L, 7L, 17L, 40L, 97L, 130L});
  const int64_t Lk = in.of({0L, 1L, 5L, 9L, 31L, 64L, 257L, 300L});
  const int64_t E = in.of({0L, 1L, 3L, 8L, 16L, 33L, 64L, 300L});
  const int64_t Ev = in.of({1L, 4L, 8L, 17L, 64L});
  dtype = in.of(
      {torch::kFloat, torch::kDouble, torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16,
       torch::kInt});
  const double magnitude = in.of({1.0, 1.0, 1.0, 1e-30, 1e3, 1e10, 1e20, 1e38});
  torch::manual_seed(in.next());
  c.q = make_input(B, H, Lq, E, static_cast<int>(in.pick(0, 3)), magnitude, torch::kDouble);
  c.k = make_input(B, H, Lk, E, static_cast<int>(in.pick(0, 3)), 1.0, torch::kDouble);
  c.v = make_input(B, H, Lk, Ev, static_cast<int>(in.pick(0, 3)), 1.0, torch::kDouble);
  if (in.next() % 16 == 0 && c.q.numel() > 0) {
    // A non-finite input: NaN or ±inf in one element.
    c.q.view(-1)[in.next() % c.q.numel()] = in.of(
        {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
         -std::numeric_limits<double>::infinity()});
  }
  const double fill = in.of(
      {0.0, -1e4, -1e9, -1e30, -3.4028234663852886e38, -1.7976931348623157e308,
       -std::numeric_limits<double>::infinity(), 1e6});
  switch (in.next() % 7) {
    case 1:
      c.mask = torch::rand({Lq, Lk}) > 0.3;
      break;
    case 2:
      c.mask = torch::rand({B, 1, 1, Lk}) > 0.2;
      break;
    case 3:
      c.mask = torch::randn({H, Lq, Lk}, torch::kDouble);
      break;
    case 4:
      c.mask = torch::full({Lq, Lk}, fill, torch::kDouble);
      break;
    case 5:
      c.mask = torch::where(
          torch::rand({Lq, Lk}) > 0.5, torch::zeros({}, torch::kDouble),
          torch::full({}, fill, torch::kDouble));
      break;
    case 6:
      c.mask = torch::ones({in.pick(1, 3), Lk}, torch::kBool);
      break; // often a bad shape
    default:
      break;
  }
  c.causal = in.next() % 3 == 0;
  if (in.next() % 2 == 0) {
    c.scale = in.of(
        {0.0, 1.0, 0.125, -0.5, 1e30, 1e-30, std::numeric_limits<double>::infinity(),
         std::numeric_limits<double>::quiet_NaN()});
  }
  if (in.next() % 8 == 0) {
    c.dropout = in.of({0.1, 0.5, 1.0, -0.1});
  }
  return c;
}

/// Fused against the float64 math, for finite inputs without dropout.
void check(const Case& c, int route, torch::ScalarType dtype) {
  if (dtype != torch::kFloat && dtype != torch::kDouble) {
    return; // the math path; nothing fused to compare
  }
  const bool grads = c.q.numel() * std::max<int64_t>(c.k.size(2), 1) <= 40000;
  const auto fused = run(c, route, grads, dtype, Math::No);
  if (c.dropout > 0.0) {
    return; // the math path with random draws: checked by the tests, not here
  }
  // Where a dot product's terms add up to near the dtype's largest number, whether a partial
  // sum overflows depends on the order of summation (BLAS's and ours differ): nothing to
  // compare there. The bound is the sum of |terms|, which bounds every partial sum.
  const double scale =
      c.scale.has_value()
          ? std::abs(*c.scale)
          : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(c.q.size(-1), 1)));
  double bound = 0.0;
  if (c.q.numel() > 0 && c.k.numel() > 0) {
    bound = (c.q.abs() * scale).matmul(c.k.abs().transpose(-2, -1)).max().item<double>();
    const double largest = dtype == torch::kDouble
                               ? std::numeric_limits<double>::max()
                               : static_cast<double>(std::numeric_limits<float>::max());
    if (!(bound < largest / 16)) {
      return;
    }
  }
  // A score's own rounding, eps x Σ|q_e k_e| scale, moves each result by up to that times its
  // size: any order of summation (ATen's BLAS or the kernel) may err by as much, and on a
  // random input ATen's own error can be far below it by luck.
  const double eps = dtype == torch::kDouble
                         ? std::numeric_limits<double>::epsilon() / 2
                         : static_cast<double>(std::numeric_limits<float>::epsilon()) / 2;
  const double score_error = eps * bound;
  const auto exact = run(c, route, grads, torch::kDouble, Math::ScaleFirst);
  // The error the math makes in this dtype; in float64, the other float64 formulation.
  const auto same = dtype == torch::kDouble ? run(c, route, grads, torch::kDouble, Math::ScaleAfter)
                                            : run(c, route, grads, dtype, Math::ScaleFirst);
  const double rel = dtype == torch::kDouble ? 1e-10 : 1e-5;
  // Gradients are sums of terms as large as the largest gradient (dV = Pᵀ dO), so their
  // rounding is relative to that, as in the tests' sweep.
  double largest_grad = 0.0;
  for (size_t i = 1; i < exact.size(); ++i) {
    largest_grad = std::max(largest_grad, max_abs(exact[i]));
  }
  for (size_t i = 0; i < fused.size(); ++i) {
    const bool exact_finite = exact[i].isfinite().all().item<bool>();
    const bool same_finite = same[i].isfinite().all().item<bool>();
    if (!exact_finite || !same_finite) {
      continue; // NaN inputs, or the math itself overflows in this dtype: nothing to match
    }
    if (!fused[i].isfinite().all().item<bool>()) {
      fail("result " + std::to_string(i) + " is not finite where the math path is: " + c.str());
    }
    const double aten = max_diff(same[i], exact[i]);
    const double size = i == 0 ? max_abs(exact[i]) : largest_grad;
    const double allowed = std::max({rel * size, 10.0 * aten, score_error * size});
    const double error = max_diff(fused[i], exact[i]);
    if (!(error <= allowed)) {
      fail(
          "result " + std::to_string(i) + " differs from the float64 math by " + fmt_g(error) +
          " where " + fmt_g(allowed) + " is allowed (" + c10::toString(dtype) + ", route " +
          std::to_string(route) + "): " + c.str());
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  const int route = static_cast<int>(in.next() % 3);
  const auto capabilities = std::vector<std::string>{"avx512", "avx2", "default"};
  const std::string& cap = capabilities[in.next() % capabilities.size()];
  try {
    torchattn::ops::set_kernel_capability(cap);
  } catch (const c10::Error&) {
    // This CPU lacks it: the best it has.
  }
  torch::ScalarType dtype = torch::kFloat;
  Case c;
  try {
    c = decode(in, dtype);
  } catch (const c10::Error&) {
    return 0; // an input tensor that cannot be made (not the library's concern)
  }
  torchattn::nn::functional::set_math_path_max_scores(route == 0 ? 0 : 48 * 48);
  try {
    check(c, route, dtype);
    if (dtype != torch::kFloat && dtype != torch::kDouble) {
      run(c, route, /*grads=*/false, dtype, Math::No);
    }
  } catch (const c10::Error&) {
    // A clear refusal is a right answer for bad input.
  }
  return 0;
}
