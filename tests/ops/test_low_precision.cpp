// bfloat16 and float16 through the fused kernel, by FlashAttention's rule
// (support/low_precision_rule.h) for the output and every gradient: a sweep of 300
// configurations per dtype on every vector build this CPU runs, the extreme values of the edge
// tests, fully masked rows, and the dtypes of what the ops return.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/child_peak.h"
#include "support/low_precision_rule.h"
#include "support/paths.h"

#include <catch2/catch_test_macros.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>

namespace {

namespace F = torchattn::nn::functional;
using torchattn::testing::CapabilityGuard;
using torchattn::testing::low_precision_capabilities;
using torchattn::testing::require_rule;
using torchattn::testing::require_rule_on_every_build;

/// Output and the gradients of q, k and v.
using Result = std::array<torch::Tensor, 4>;
constexpr std::array<const char*, 4> kNames{"output", "grad_query", "grad_key", "grad_value"};

/// One pass of q, k, v (leaves in their dtype) through the fused op or the math path.
Result run(
    bool fused, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
    const torch::Tensor& mask, bool causal, double scale, const torch::Tensor& grad) {
  auto q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(),
       v = v0.detach().requires_grad_();
  torch::Tensor out;
  if (fused) {
    out = torchattn::ops::scaled_dot_product_attention(
        q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt, 0.0, causal,
        scale);
  } else {
    // need_weights makes the functional take the math path.
    out = std::get<0>(F::scaled_dot_product_attention(
        q, k, v,
        F::ScaledDotProductAttentionFuncOptions()
            .attn_mask(mask)
            .is_causal(causal)
            .scale(scale)
            .need_weights(true)));
  }
  auto g = torch::autograd::grad({out}, {q, k, v}, {grad.to(out.scalar_type())});
  return {out.detach(), g[0], g[1], g[2]};
}

/// FlashAttention's rule for inputs q, k, v, mask already in the low dtype: the fused
/// kernel's error against float64 math is at most 2x the low-precision math path's.
void check_rule(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, bool causal, double scale, const std::string& where) {
  const auto wide = [](const torch::Tensor& t) {
    return t.defined() && t.is_floating_point() ? t.to(torch::kDouble) : t;
  };
  auto grad = torch::randn({q.size(0), q.size(1), q.size(2), v.size(3)}).to(q.scalar_type());
  const Result ref = run(false, wide(q), wide(k), wide(v), wide(mask), causal, scale, wide(grad));
  const Result math = run(false, q, k, v, mask, causal, scale, grad);
  const Result fused = run(true, q, k, v, mask, causal, scale, grad);
  for (size_t i = 0; i < kNames.size(); ++i) {
    CAPTURE(where, kNames[i]);
    require_rule(fused[i], math[i], ref[i], q.scalar_type());
  }
}

struct Config {
  int64_t B, H, Lq, Lk, E, Ev;
  bool causal;
  int mask_kind; // 0 none, 1 bool [Lq, Lk], 2 bool padding [B, 1, 1, Lk], 3 additive
                 // [H, Lq, Lk] in the low dtype, 4 bool with fully masked rows [B, H, Lq, Lk]
  int layout;    // 0 contiguous, 1 [B, L, H, E] transposed, 2 sliced last dim, 3 expanded batch

  std::string str() const {
    return fmt::format(
        "B={} H={} Lq={} Lk={} E={} Ev={} causal={} mask={} layout={}", B, H, Lq, Lk, E, Ev, causal,
        mask_kind, layout);
  }
};

torch::Tensor make_input(int64_t B, int64_t H, int64_t L, int64_t D, int layout) {
  switch (layout) {
    case 1:
      return torch::randn({B, L, H, D}).transpose(1, 2);
    case 2:
      return torch::randn({B, H, L, D + 3}).narrow(3, 1, D);
    case 3:
      return torch::randn({1, H, L, D}).expand({B, H, L, D});
    default:
      return torch::randn({B, H, L, D});
  }
}

torch::Tensor make_mask(const Config& c, torch::ScalarType dtype) {
  switch (c.mask_kind) {
    case 1:
      return torch::rand({c.Lq, c.Lk}) > 0.3;
    case 2:
      return torch::rand({c.B, 1, 1, c.Lk}) > 0.2;
    case 3:
      return torch::randn({c.H, c.Lq, c.Lk}).to(dtype);
    case 4: {
      auto m = torch::rand({c.B, c.H, c.Lq, c.Lk}) > 0.5;
      m.index_put_(
          {torch::indexing::Slice(), torch::indexing::Slice(),
           torch::indexing::Slice(0, torch::indexing::None, 3)},
          false);
      return m;
    }
    default:
      return {};
  }
}

/// The first `count` configurations of the sweep from `seed`; fewer where the environment's
/// TORCHATTN_SWEEP_CONFIGS asks for fewer (the sanitizer build's emulated-AMX run, whose
/// software tiles under ASan take ten times as long; see tests/CMakeLists.txt).
void sweep(torch::ScalarType dtype, int count, uint32_t seed) {
  if (const char* cap = std::getenv("TORCHATTN_SWEEP_CONFIGS"); cap != nullptr) {
    count = std::min(count, std::max(1, std::atoi(cap)));
  }
  CapabilityGuard guard;
  std::mt19937 rng(seed);
  torch::manual_seed(seed);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  // Head dims 16 to 256, with tails of every vector width.
  const int64_t dims[] = {16, 17, 24, 33, 40, 64, 64, 80, 100, 128, 200, 256};
  for (int i = 0; i < count; ++i) {
    Config c;
    c.B = pick(1, 2);
    c.H = pick(1, 3);
    // Mostly short sequences, some longer than a tile (96 or 128 queries, 256 keys).
    c.Lq = pick(0, 9) < 8 ? pick(1, 40) : pick(41, 300);
    c.Lk = pick(0, 9) < 8 ? pick(1, 40) : pick(41, 300);
    c.E = dims[pick(0, 11)];
    c.Ev = pick(0, 3) == 0 ? dims[pick(0, 11)] : c.E;
    c.causal = pick(0, 2) == 0;
    c.mask_kind = static_cast<int>(pick(0, 4));
    c.layout = static_cast<int>(pick(0, 3));
    auto q = make_input(c.B, c.H, c.Lq, c.E, c.layout).to(dtype);
    auto k = make_input(c.B, c.H, c.Lk, c.E, c.layout == 3 ? 0 : c.layout).to(dtype);
    auto v = make_input(c.B, c.H, c.Lk, c.Ev, c.layout).to(dtype);
    const auto mask = make_mask(c, dtype);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.E)) * (c.Lq % 2 == 0 ? 1.0 : 1.7);
    for (const auto& cap : low_precision_capabilities()) {
      torchattn::ops::set_kernel_capability(cap);
      check_rule(
          q, k, v, mask, c.causal, scale,
          fmt::format("{} {} {}", c.str(), c10::toString(dtype), cap));
    }
  }
}

} // namespace

TEST_CASE(
    "bfloat16: the fused kernel errs at most 2x the bf16 math path over 300 configurations",
    "[ops][low_precision]") {
  sweep(torch::kBFloat16, 300, 20261204);
}

TEST_CASE(
    "float16: the fused kernel errs at most 2x the fp16 math path over 300 configurations",
    "[ops][low_precision]") {
  sweep(torch::kHalf, 300, 20261205);
}

TEST_CASE("low precision keeps the math path's rules at the extremes", "[ops][low_precision]") {
  CapabilityGuard guard;
  torch::manual_seed(7);
  const double inf = std::numeric_limits<double>::infinity();
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    // Largest finite values: bfloat16 keeps float32's range, float16 ends at 65504.
    const double huge = dtype == torch::kBFloat16 ? 1e30 : 6e4;
    for (const auto& cap : low_precision_capabilities()) {
      torchattn::ops::set_kernel_capability(cap);
      const auto where = fmt::format("{} {}", c10::toString(dtype), cap);
      auto q = torch::randn({2, 2, 37, 64}).to(dtype);
      auto k = torch::randn({2, 2, 53, 64}).to(dtype);
      auto v = torch::randn({2, 2, 53, 40}).to(dtype);
      // A huge finite mask on whole rows, on some keys, and -inf rows: only -inf masks a key.
      auto mask = torch::zeros({37, 53});
      mask.index_put_({torch::indexing::Slice(0, 5)}, -huge);
      mask.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 53, 4)}, -huge);
      mask.index_put_({torch::indexing::Slice(7, 37, 9)}, -inf);
      check_rule(q, k, v, mask.to(dtype), false, 0.125, where + " huge mask");
      check_rule(q, k, v, mask.to(dtype), true, 0.125, where + " huge mask, causal");
      // Logits far beyond exp's range: the softmax is one-hot, the output the argmax's value.
      auto big = (torch::randn({2, 2, 37, 64}) * 100).to(dtype);
      check_rule(big, k, v, torch::Tensor(), false, 1.0, where + " huge logits");

      // Fully masked rows: zeros out and zero gradients, in the dtype.
      auto none = torch::zeros({2, 2, 37, 53}, torch::kBool);
      auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, none, 0.0, false, 0.125);
      CAPTURE(where);
      REQUIRE(out.scalar_type() == dtype);
      REQUIRE(out.eq(0).all().item<bool>());
    }
  }
}

TEST_CASE("low precision ops return their statistics in float32", "[ops][low_precision]") {
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto q = torch::randn({1, 2, 9, 16}).to(dtype), k = torch::randn({1, 2, 12, 16}).to(dtype);
    auto v = torch::randn({1, 2, 12, 8}).to(dtype);
    auto [out, row_max, row_log_sum] = torchattn::ops::_scaled_dot_product_attention_forward(
        q, k, v, c10::nullopt, /*is_causal=*/false, 0.25);
    CAPTURE(dtype);
    // The output unrounded, for backward; the public op rounds it to the dtype.
    REQUIRE(out.scalar_type() == torch::kFloat);
    REQUIRE(row_max.scalar_type() == torch::kFloat);
    REQUIRE(row_log_sum.scalar_type() == torch::kFloat);
    // The logsumexp, by hand from the formula in float64 on the same inputs.
    auto s = q.to(torch::kDouble).matmul(k.to(torch::kDouble).transpose(-2, -1)) * 0.25;
    auto lse = (row_max + row_log_sum).to(torch::kDouble);
    REQUIRE((lse - s.logsumexp(-1)).abs().max().item<double>() < 1e-5);
    auto flex = F::flex_attention(q, k, v, F::FlexAttentionFuncOptions().scale(0.25));
    REQUIRE(flex.output.scalar_type() == dtype);
    REQUIRE(flex.lse.scalar_type() == torch::kFloat);
    REQUIRE((flex.lse.to(torch::kDouble) - s.logsumexp(-1)).abs().max().item<double>() < 1e-5);
  }
}

TEST_CASE("low precision rounds P to the input dtype before P V", "[ops][low_precision]") {
  // Two keys with scores 0 and -0.5: P = (1, exp(-0.5)). With V the identity, the unrounded
  // float32 output of the forward op is (1, r) / (1 + r), r = exp(-0.5) rounded as a conversion
  // to the dtype rounds it (the weights normalized by their rounded sum, low_precision.h).
  CapabilityGuard guard;
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (const auto& cap : low_precision_capabilities()) {
      torchattn::ops::set_kernel_capability(cap);
      CAPTURE(c10::toString(dtype), cap);
      auto q = torch::ones({1, 1, 1, 1}).to(dtype);
      auto k = torch::tensor({0.0, -0.5}).view({1, 1, 2, 1}).to(dtype);
      auto v = torch::eye(2).view({1, 1, 2, 2}).to(dtype);
      auto out = std::get<0>(torchattn::ops::_scaled_dot_product_attention_forward(
          q, k, v, c10::nullopt, /*is_causal=*/false, 1.0));
      const double p = std::exp(-0.5);
      const double rounded = torch::tensor(p).to(dtype).item<double>();
      const double l = 1.0 + rounded;
      REQUIRE(rounded != p);
      REQUIRE(std::abs(out[0][0][0][1].item<double>() - rounded / l) < 1e-7);
      REQUIRE(std::abs(out[0][0][0][0].item<double>() - 1.0 / l) < 1e-7);
    }
  }
}

TEST_CASE(
    "low precision rounds each gradient once, to nearest, from its float32 sum",
    "[ops][low_precision]") {
  // Inputs whose float32 gradients are exactly 1 + d, with d = 7 ulp(1) / 4 of the dtype: not
  // a value of the dtype; to nearest it is 1 + 2 ulp(1), truncated 1 + ulp(1). Head dim 20: a
  // vector of 16 and a tail of 4.
  // - grad_value: one key, so P = 1; grad_out rows 1 and d: dV = 1 + d.
  // - grad_query and grad_key: two queries (1 and d along dim 0, times the scale 4) and two
  //   keys (0 along dim 0, then 1 and -d): every score is 0, P = 1/2. With V = (1, 0) and
  //   grad_out 1 (Ev = 1), delta = 1/2 and dS = (1/4, -1/4) in each row: dQ = 4 (k1 - k2) / 4
  //   = 1 + d off dim 0, and dK1 = -dK2 = 4 (q1 + q2) / 4 = 1 + d along dim 0.
  CapabilityGuard guard;
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (const auto& cap : low_precision_capabilities()) {
      torchattn::ops::set_kernel_capability(cap);
      CAPTURE(c10::toString(dtype), cap);
      const double ulp = dtype == torch::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
      const double d = 7 * ulp / 4;
      const double nearest = torch::tensor(1.0 + d, torch::kDouble).to(dtype).item<double>();
      REQUIRE(nearest == 1.0 + 2 * ulp);
      auto opts = torch::TensorOptions().dtype(dtype);

      auto q = torch::zeros({1, 1, 2, 20}, opts).requires_grad_();
      auto k = torch::zeros({1, 1, 1, 20}, opts).requires_grad_();
      auto v = torch::zeros({1, 1, 1, 20}, opts).requires_grad_();
      auto grad_out = torch::ones({1, 1, 2, 20}, opts);
      grad_out.select(2, 1).fill_(d);
      auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, false, 4.0);
      out.backward(grad_out);
      REQUIRE(v.grad().scalar_type() == dtype);
      REQUIRE(v.grad().to(torch::kDouble).eq(nearest).all().item<bool>());

      q = torch::zeros({1, 1, 2, 20}, torch::kDouble);
      q[0][0][0][0] = 1.0;
      q[0][0][1][0] = d;
      k = torch::zeros({1, 1, 2, 20}, torch::kDouble);
      k[0][0][0].slice(0, 1).fill_(1.0);
      k[0][0][1].slice(0, 1).fill_(-d);
      v = torch::tensor({1.0, 0.0}).view({1, 1, 2, 1});
      q = q.to(dtype).requires_grad_();
      k = k.to(dtype).requires_grad_();
      v = v.to(dtype).requires_grad_();
      out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, false, 4.0);
      out.backward(torch::ones_like(out));
      auto expect_q = torch::full({1, 1, 2, 20}, nearest, torch::kDouble);
      expect_q.select(3, 0).zero_();
      auto expect_k = torch::zeros({1, 1, 2, 20}, torch::kDouble);
      expect_k[0][0][0][0] = nearest;
      expect_k[0][0][1][0] = -nearest;
      REQUIRE(q.grad().scalar_type() == dtype);
      REQUIRE(k.grad().scalar_type() == dtype);
      REQUIRE(q.grad().to(torch::kDouble).equal(expect_q));
      REQUIRE(k.grad().to(torch::kDouble).equal(expect_k));
    }
  }
}

TEST_CASE(
    "low precision: the fused additive score errs at most 2x the math path",
    "[ops][low_precision]") {
  // additive_attention takes the fused score without need_weights, the math path (energies
  // [..., Lq, Lk, D] in the dtype) with it; the rule holds for the output and every gradient.
  CapabilityGuard guard;
  torch::manual_seed(11);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    const std::vector<torch::Tensor> inputs{
        torch::randn({2, 13, 24}),    torch::randn({2, 17, 24}),    torch::randn({2, 17, 20}),
        torch::randn({32, 24}) * 0.2, torch::randn({32, 24}) * 0.2, torch::randn({1, 32})};
    auto grad = torch::randn({2, 13, 20});
    auto run_additive = [&](torch::ScalarType t, bool math) {
      std::vector<torch::Tensor> x;
      for (const auto& i : inputs) {
        x.push_back(i.to(dtype).to(t).requires_grad_());
      }
      auto out = std::get<0>(F::additive_attention(
          x[0], x[1], x[2], x[3], x[4], x[5],
          F::AdditiveAttentionFuncOptions().need_weights(math)));
      auto g = torch::autograd::grad({out}, x, {grad.to(dtype).to(t)});
      g.insert(g.begin(), out.detach());
      return g;
    };
    CAPTURE(c10::toString(dtype));
    require_rule_on_every_build(dtype, run_additive);
  }
}

TEST_CASE(
    "low precision: flex_attention's modifiers keep the 2x rule, gradients included",
    "[ops][low_precision]") {
  // The fused kernel (need_weights false) and the math path (need_weights true) in the low
  // dtype, against the math path in float64; gradients of q, k, v and the learnable modifiers.
  CapabilityGuard guard;
  torch::manual_seed(13);
  const int64_t B = 2, H = 4, Hkv = 2, Lq = 45, Lk = 70, E = 40;
  const auto docs_q = torch::arange(Lq).div(20, "floor").expand({B, Lq}).contiguous();
  const auto docs_k = torch::arange(Lk).div(30, "floor").expand({B, Lk}).contiguous();
  const auto buckets = F::t5_position_buckets(Lq, Lk, 16, 64, /*bidirectional=*/true);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (int variant = 0; variant < 3; ++variant) {
      const std::vector<torch::Tensor> inputs{
          torch::randn({B, H, Lq, E}),
          torch::randn({B, Hkv, Lk, E}),
          torch::randn({B, Hkv, Lk, E}),
          torch::randn({H, Lq, Lk}),
          F::alibi_slopes(H),
          torch::randn({H, 16}) * 0.5};
      auto grad = torch::randn({B, H, Lq, E});
      auto run_flex = [&](torch::ScalarType t, bool math) {
        std::vector<torch::Tensor> x;
        for (const auto& i : inputs) {
          x.push_back(i.to(dtype).to(t).requires_grad_());
        }
        auto o = F::FlexAttentionFuncOptions().enable_gqa(true).need_weights(math);
        std::vector<torch::Tensor> leaves{x[0], x[1], x[2]};
        if (variant == 0) {
          o.causal("bottom_right").window_left(30).softcap(5.0).alibi_slopes(x[4]);
          leaves.push_back(x[4]);
        } else if (variant == 1) {
          o.bias(x[3]).q_doc_ids(docs_q).kv_doc_ids(docs_k);
          leaves.push_back(x[3]);
        } else {
          o.position_bias(x[5]).position_buckets(buckets).window_right(10);
          leaves.push_back(x[5]);
        }
        auto out = F::flex_attention(x[0], x[1], x[2], o).output;
        auto g = torch::autograd::grad({out}, leaves, {grad.to(dtype).to(t)});
        g.insert(g.begin(), out.detach());
        return g;
      };
      CAPTURE(c10::toString(dtype), variant);
      require_rule_on_every_build(dtype, run_flex);
    }
  }
}

namespace {

constexpr const char* kMemoryChild =
    "bfloat16 fused attention forward and backward at N=16384 (child process)";

} // namespace

// Runs in the child process started by the test below; hidden from normal runs.
TEST_CASE(kMemoryChild, "[.memory_child]") {
  const int64_t n = 16384;
  const auto make = [&] {
    return torch::randn({1, 8, n, 64}).to(torch::kBFloat16).requires_grad_();
  };
  auto q = make(), k = make(), v = make();
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v);
  out.backward(torch::ones_like(out));
  REQUIRE(q.grad().scalar_type() == torch::kBFloat16);
  REQUIRE(q.grad().isfinite().all().item<bool>());
  REQUIRE(k.grad().isfinite().all().item<bool>());
  REQUIRE(v.grad().isfinite().all().item<bool>());
  torchattn::testing::report_peak();
}

#if !defined(TORCHATTN_SANITIZED)
TEST_CASE(
    "bfloat16 forward and backward at N=16384 stay under 512 MiB of peak RSS",
    "[ops][memory][low_precision]") {
  // H=8, E=64: the math path's bf16 scores [1, 8, 16384, 16384] alone would take 4 GiB. The
  // best build the CPU has (bf16 products on AVX512-BF16) and avx512 (bf16 converted to
  // float32) where it differs.
  std::vector<std::string> builds{low_precision_capabilities().front()};
  if (builds.front() != "avx512" && builds.front() != "avx2" && builds.front() != "default") {
    builds.emplace_back("avx512");
  }
  for (const auto& build : builds) {
    const double peak_mib =
        torchattn::testing::child_peak_mib(kMemoryChild, {"TORCHATTN_CPU_CAPABILITY=" + build});
    INFO("peak RSS of the child (" << build << "): " << peak_mib << " MiB");
    CHECK(peak_mib < 512.0);
    WARN(fmt::format("bf16 N=16384 forward+backward peak RSS ({}): {:.0f} MiB", build, peak_mib));
  }
}
#endif

TEST_CASE(
    "MultiheadAttention and GroupedQueryAttention run end to end in bf16 on the fused path",
    "[ops][low_precision][nn]") {
  // The modules converted to bfloat16 (their Linear layers too): the output is bf16, comes
  // through the fused kernel (only it refuses double backward), and keeps the 2x rule against
  // the same module in float64, beside the math path in bf16 (need_weights).
  torch::manual_seed(21);
  torchattn::nn::MultiheadAttention mha(
      torchattn::nn::MultiheadAttentionOptions(64, 4).batch_first(true));
  auto mha64 = std::dynamic_pointer_cast<torchattn::nn::MultiheadAttentionImpl>(mha->clone());
  mha->to(torch::kBFloat16);
  mha64->to(torch::kBFloat16); // the same rounded weights...
  mha64->to(torch::kDouble);   // ...in float64
  auto x = torch::randn({2, 70, 64}).to(torch::kBFloat16).requires_grad_();
  auto x64 = x.detach().to(torch::kDouble).requires_grad_();
  auto [fused, none] = mha->forward(x, x, x, {}, /*need_weights=*/false);
  auto [math, weights] = mha->forward(x, x, x, {}, /*need_weights=*/true);
  auto [ref, ref_w] = mha64->forward(x64, x64, x64, {}, /*need_weights=*/false);
  CHECK(fused.scalar_type() == torch::kBFloat16);
  require_rule(fused.detach(), math.detach(), ref.detach(), torch::kBFloat16);
  auto g = torch::randn_like(ref);
  auto g_fused = torch::autograd::grad({fused}, {x}, {g.to(torch::kBFloat16)}, true)[0];
  auto g_math = torch::autograd::grad({math}, {x}, {g.to(torch::kBFloat16)})[0];
  auto g_ref = torch::autograd::grad({ref}, {x64}, {g})[0];
  require_rule(g_fused, g_math, g_ref, torch::kBFloat16);
  CHECK(torchattn::testing::through_fused_kernel(fused, x));

  torchattn::nn::GroupedQueryAttention gqa(
      torchattn::nn::GroupedQueryAttentionOptions(64, 8).num_kv_heads(2));
  gqa->to(torch::kBFloat16);
  auto y = gqa->forward(x);
  CHECK(y.scalar_type() == torch::kBFloat16);
  CHECK(torchattn::testing::through_fused_kernel(y, x));
  CHECK(y.isfinite().all().item<bool>());
}
