// The fused kernel at the edges of the finite numbers, on every vector build this CPU runs:
// additive masks of -1e4 ... -FLT_MAX on whole rows, on some keys and everywhere; logits up to
// 1e30; head dims up to 4096. Only -inf (or a false bool) masks a key: every finite value is a
// score. Output and gradients are compared with the math path in float64 on the same inputs:
//   float32: within max(1e-5 x the largest element, 10 x the error of ATen's float32 math);
//   float64: within max(1e-10 x the largest element, 10 x the difference between two float64
//            formulations of the math (scale on q before the product, or on the scores after)),
//            which is what ill-conditioned inputs (a -1e9 mask next to unit scores) allow.
// "The largest element" is the output's for the output, and the largest of the three
// gradients for each gradient.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/scale_after.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <fmt/format.h>

#include <array>
#include <cfloat>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;
using torchattn::testing::for_each_build_and_dtype;

/// Output and the gradients of q, k and v.
using Result = std::array<torch::Tensor, 4>;
constexpr std::array<const char*, 4> kNames{"output", "grad_query", "grad_key", "grad_value"};

enum class Path { Fused, Math, ScaleAfter };

/// One pass of q, k, v (cast to `dtype`) through `path`, backward with `grad`.
Result run(
    Path path, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
    const torch::Tensor& mask0, bool causal, double scale, const torch::Tensor& grad0,
    torch::ScalarType dtype) {
  auto q = q0.to(dtype).requires_grad_(), k = k0.to(dtype).requires_grad_(),
       v = v0.to(dtype).requires_grad_();
  auto mask = mask0.defined() && mask0.is_floating_point() ? mask0.to(dtype) : mask0;
  torch::Tensor out;
  switch (path) {
    case Path::Fused:
      out = torchattn::ops::scaled_dot_product_attention(
          q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt, 0.0, causal,
          scale);
      break;
    case Path::Math:
      out = std::get<0>(F::scaled_dot_product_attention(
          q, k, v,
          F::ScaledDotProductAttentionFuncOptions()
              .attn_mask(mask)
              .is_causal(causal)
              .scale(scale)
              .need_weights(true)));
      break;
    case Path::ScaleAfter:
      out = torchattn::testing::scale_after_attention(q, k, v, mask, causal, scale);
      break;
  }
  auto g = torch::autograd::grad({out}, {q, k, v}, {grad0.to(dtype)});
  return {out.detach(), g[0], g[1], g[2]};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0) {
    return 0.0;
  }
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// The worst error of each dtype over the sweep, against its allowance, for the report.
struct Worst {
  double error = 0, allowed = 1, aten = 0;
  std::string where;
};
std::map<std::string, Worst>& worst_by_dtype() {
  static std::map<std::string, Worst> worst;
  return worst;
}

/// Compares the fused path in `dtype` with the float64 math on the same inputs.
void check_case(
    const std::string& what, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, bool causal, double scale, torch::ScalarType dtype) {
  CAPTURE(what, dtype, torchattn::ops::kernel_capability());
  // The inputs as `dtype` holds them, so that every path sees the same numbers.
  auto qd = q.to(dtype).to(torch::kDouble), kd = k.to(dtype).to(torch::kDouble),
       vd = v.to(dtype).to(torch::kDouble);
  auto md = mask.defined() && mask.is_floating_point() ? mask.to(dtype).to(torch::kDouble) : mask;
  auto grad = torch::randn({q.size(0), q.size(1), q.size(2), v.size(3)}, torch::kDouble)
                  .to(dtype)
                  .to(torch::kDouble);
  const Result expected = run(Path::Math, qd, kd, vd, md, causal, scale, grad, torch::kDouble);
  const Result fused = run(Path::Fused, qd, kd, vd, md, causal, scale, grad, dtype);
  // The error that the math itself makes in this dtype.
  const Result same_dtype =
      dtype == torch::kDouble
          ? run(Path::ScaleAfter, qd, kd, vd, md, causal, scale, grad, torch::kDouble)
          : run(Path::Math, qd, kd, vd, md, causal, scale, grad, dtype);
  const double rel = dtype == torch::kDouble ? 1e-10 : 1e-5;
  // Gradients are sums of terms as large as the largest gradient (dV = Pᵀ dO): their rounding
  // is relative to that, as in the random sweep (test_flash_attention.cpp).
  double largest_grad = 0.0;
  for (size_t i = 1; i < kNames.size(); ++i) {
    largest_grad = std::max(
        largest_grad, expected[i].numel() == 0 ? 0.0 : expected[i].abs().max().item<double>());
  }
  for (size_t i = 0; i < kNames.size(); ++i) {
    CAPTURE(kNames[i]);
    const auto& e = expected[i];
    REQUIRE(e.isfinite().all().item<bool>());
    const double largest =
        i == 0 ? (e.numel() == 0 ? 0.0 : e.abs().max().item<double>()) : largest_grad;
    const double aten = max_abs_diff(same_dtype[i], e);
    const double error = max_abs_diff(fused[i], e);
    // Where the math in this dtype is not finite (it overflows), there is nothing to match.
    if (!std::isfinite(aten)) {
      continue;
    }
    const double allowed = std::max(rel * largest, 10.0 * aten);
    CAPTURE(error, allowed, aten, largest);
    CHECK(fused[i].isfinite().all().item<bool>());
    CHECK(error <= allowed);
    auto& w = worst_by_dtype()[dtype == torch::kDouble ? "float64" : "float32"];
    if (error / allowed > w.error / w.allowed) {
      w = {error, allowed, aten, fmt::format("{} {}", what, kNames[i])};
    }
  }
}

torch::Tensor randn(std::initializer_list<int64_t> shape) {
  return torch::randn(shape, torch::kDouble);
}

} // namespace

TEST_CASE("the fused kernel equals the math path with huge finite masks", "[ops][edges]") {
  torch::manual_seed(14);
  for_each_build_and_dtype([&](torch::ScalarType dtype) {
    const double lowest = dtype == torch::kFloat ? -static_cast<double>(FLT_MAX) : -DBL_MAX;
    for (double value : {-1e4, -1e9, -1e30, -static_cast<double>(FLT_MAX), lowest}) {
      for (std::array<int64_t, 2> len : {std::array<int64_t, 2>{5, 7}, {64, 64}, {300, 300}}) {
        const int64_t Lq = len[0], Lk = len[1];
        auto q = randn({2, 3, Lq, 8}), k = randn({2, 3, Lk, 8}), v = randn({2, 3, Lk, 8});
        auto row = torch::zeros({Lq, Lk}, torch::kDouble);
        row[Lq / 2] = value;
        auto some = torch::zeros({Lq, Lk}, torch::kDouble);
        some.select(1, 1).fill_(value);
        some.select(1, Lk - 1).fill_(value);
        auto everywhere = torch::full({Lq, Lk}, value, torch::kDouble);
        const std::string at = fmt::format("mask {} L={}x{}", value, Lq, Lk);
        check_case(at + " on one row", q, k, v, row, false, 0.35, dtype);
        check_case(at + " on some keys", q, k, v, some, false, 0.35, dtype);
        check_case(at + " everywhere", q, k, v, everywhere, false, 0.35, dtype);
        check_case(at + " everywhere, causal", q, k, v, everywhere, true, 0.35, dtype);
      }
    }
  });
}

TEST_CASE("the fused kernel equals the math path with logits up to 1e30", "[ops][edges]") {
  torch::manual_seed(15);
  for_each_build_and_dtype([&](torch::ScalarType dtype) {
    for (int64_t L : {40, 300}) {
      auto q = randn({1, 2, L, 8}), k = randn({1, 2, L, 8}), v = randn({1, 2, L, 8});
      const std::string at = fmt::format("L={} ", L);
      check_case(at + "q, k x 1e3", q * 1e3, k * 1e3, v, {}, false, 1.0, dtype);
      check_case(at + "q x 1e10", q * 1e10, k, v, {}, false, 1.0, dtype);
      check_case(at + "q x 1e20", q * 1e20, k, v, {}, true, 1.0, dtype);
      check_case(at + "q, k x 1e15", q * 1e15, k * 1e15, v, {}, false, 1.0, dtype);
      check_case(at + "scale 1e30", q, k, v, {}, false, 1e30, dtype);
      // Found by the fuzzer: dK = dSᵀ (q scale), never (dSᵀ q) scale, which overflows.
      check_case(at + "q = +-3e38, scale 0", torch::sign(q) * 3e38, k, v, {}, false, 0.0, dtype);
      check_case(
          at + "q = +-3e38, scale 1e-30", torch::sign(q) * 3e38, k, v, {}, false, 1e-30, dtype);
      auto bias = randn({L, L}) * 1e6;
      check_case(at + "q x 1e20, bias 1e6", q * 1e20, k, v, bias, false, 1.0, dtype);
    }
  });
}

TEST_CASE("the fused kernel equals the math path at head dims up to 4096", "[ops][edges]") {
  torch::manual_seed(16);
  for_each_build_and_dtype([&](torch::ScalarType dtype) {
    for (int64_t E : {1024, 4096}) {
      auto q = randn({1, 2, 24, E}), k = randn({1, 2, 30, E}), v = randn({1, 2, 30, 16});
      // scale 1: logits with a standard deviation of sqrt(E), up to 64.
      check_case(fmt::format("E={} scale 1", E), q, k, v, {}, false, 1.0, dtype);
      check_case(
          fmt::format("E={} default scale", E), q, k, v, {}, true,
          1.0 / std::sqrt(static_cast<double>(E)), dtype);
    }
  });
  for (const auto& [dtype, w] : worst_by_dtype()) {
    WARN(fmt::format(
        "edge sweep, worst {}: {:.3g} where {:.3g} is allowed (math in {} off by "
        "{:.3g}) at {}",
        dtype, w.error, w.allowed, dtype, w.aten, w.where));
  }
}

TEST_CASE(
    "MultiheadAttention's fused path equals its math path with a -1e9 padding mask",
    "[ops][edges][nn]") {
  // A float key_padding_mask of -1e9 on every key of one batch entry: that entry's rows are
  // uniform averages, and the gradients through the fused kernel match the float64 math.
  torch::manual_seed(17);
  torchattn::nn::MultiheadAttention mha(torchattn::nn::MultiheadAttentionOptions(64, 4));
  auto x = torch::randn({80, 2, 64});
  auto kpm = torch::zeros({2, 80});
  kpm[1] = -1e9;
  auto grads = [&](torch::ScalarType dtype, bool need_weights) {
    auto m = std::dynamic_pointer_cast<torchattn::nn::MultiheadAttentionImpl>(mha->clone());
    m->to(dtype);
    auto xd = x.to(dtype);
    auto [out, w] = m->forward(xd, xd, xd, kpm.to(dtype), need_weights);
    out.pow(2).sum().backward();
    return std::make_pair(out.detach(), m->in_proj_weight.grad());
  };
  auto [out64, grad64] = grads(torch::kDouble, /*need_weights=*/true);
  auto [out_fused, grad_fused] = grads(torch::kFloat, /*need_weights=*/false);
  auto [out_math, grad_math] = grads(torch::kFloat, /*need_weights=*/true);
  const double aten = max_abs_diff(grad_math, grad64);
  const double error = max_abs_diff(grad_fused, grad64);
  CAPTURE(error, aten, grad64.abs().max().item<double>());
  CHECK(error <= std::max(1e-5 * grad64.abs().max().item<double>(), 10 * aten));
  CHECK(max_abs_diff(out_fused, out64) <= std::max(1e-5, 10 * max_abs_diff(out_math, out64)));
}

TEST_CASE(
    "the functional gives the uniform average on the fused and math paths for a -FLT_MAX mask",
    "[ops][edges][nn]") {
  // softmax is shift-invariant: a mask of -FLT_MAX everywhere is no mask at all in exact
  // arithmetic, and the rounded scores are all -FLT_MAX, so every key weighs 1/Lk.
  torch::manual_seed(18);
  auto q = torch::randn({1, 2, 300, 8}), k = torch::randn({1, 2, 300, 8}),
       v = torch::randn({1, 2, 300, 8});
  auto mask = torch::full({300, 300}, -FLT_MAX);
  auto opts = F::ScaledDotProductAttentionFuncOptions().attn_mask(mask);
  auto fused = std::get<0>(F::scaled_dot_product_attention(q, k, v, opts));
  auto math = std::get<0>(F::scaled_dot_product_attention(q, k, v, opts.need_weights(true)));
  auto mean = v.mean(2, /*keepdim=*/true).expand_as(fused);
  CHECK(max_abs_diff(fused, mean) < 1e-5);
  CHECK(max_abs_diff(math, mean) < 1e-5);
}

TEST_CASE(
    "the backward op refuses softmax statistics the forward cannot make", "[ops][edges][errors]") {
  using Fn = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>(
      const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
      const c10::optional<torch::Tensor>&, const torch::Tensor&, const torch::Tensor&,
      const torch::Tensor&, bool, double);
  using FwdFn = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>(
      const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
      const c10::optional<torch::Tensor>&, bool, double);
  auto& dispatcher = c10::Dispatcher::singleton();
  auto forward =
      dispatcher.findSchemaOrThrow("torchattn::_scaled_dot_product_attention_forward", "")
          .typed<FwdFn>();
  auto backward =
      dispatcher.findSchemaOrThrow("torchattn::_scaled_dot_product_attention_backward", "")
          .typed<Fn>();
  auto q = torch::randn({1, 2, 4, 8}), k = torch::randn({1, 2, 5, 8}),
       v = torch::randn({1, 2, 5, 8});
  auto [out, row_max, row_log_sum] = forward.call(q, k, v, c10::nullopt, false, 0.35);
  auto g = torch::randn_like(out);
  // What the forward made is accepted.
  auto [gq, gk, gv] =
      backward.call(g, q, k, v, c10::nullopt, out, row_max, row_log_sum, false, 0.35);
  CHECK(gq.isfinite().all().item<bool>());
  const std::string fn = "torchattn::_scaled_dot_product_attention_backward: ";
  auto ninf = torch::full_like(row_log_sum, -std::numeric_limits<float>::infinity());
  CHECK_THROWS_WITH(
      backward.call(g, q, k, v, c10::nullopt, out, row_max, ninf, false, 0.35),
      Catch::Matchers::ContainsSubstring(fn + "row_max") &&
          Catch::Matchers::ContainsSubstring(
              "are not softmax statistics of the forward op: expected row_log_sum >= 0, or both "
              "-inf on a row with no key to attend"));
  CHECK_THROWS_WITH(
      backward.call(g, q, k, v, c10::nullopt, out, ninf, row_log_sum, false, 0.35),
      Catch::Matchers::ContainsSubstring("are not softmax statistics of the forward op"));
  CHECK_THROWS_WITH(
      backward.call(g, q, k, v, c10::nullopt, out, row_max, row_log_sum - 5, false, 0.35),
      Catch::Matchers::ContainsSubstring("at [0, 0, 0] are not softmax statistics"));
  CHECK_THROWS_WITH(
      backward.call(
          g, q, k, v, c10::nullopt, out, row_max.narrow(2, 0, 3), row_log_sum, false, 0.35),
      Catch::Matchers::ContainsSubstring(
          fn + "row_max has shape [1, 2, 3] and dtype Float, expected a contiguous [1, 2, 4] Float "
               "tensor from the forward op"));
  // A fully masked row: both -inf, zero gradients into it.
  auto mask = torch::ones({4, 5}, torch::kBool);
  mask[1] = false;
  auto [out_m, max_m, sum_m] = forward.call(q, k, v, mask, false, 0.35);
  CHECK(max_m.select(2, 1).eq(-std::numeric_limits<float>::infinity()).all().item<bool>());
  CHECK(sum_m.select(2, 1).eq(-std::numeric_limits<float>::infinity()).all().item<bool>());
  auto [gq_m, gk_m, gv_m] = backward.call(g, q, k, v, mask, out_m, max_m, sum_m, false, 0.35);
  CHECK(gq_m.select(2, 1).abs().max().item<float>() == 0.0f);
  CHECK(gk_m.isfinite().all().item<bool>());
}
