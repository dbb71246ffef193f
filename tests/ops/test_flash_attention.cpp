// The fused kernel (torchattn::scaled_dot_product_attention) against the math path: a
// randomised sweep over shapes, strides, masks, causal and dtypes, on every vector build this
// CPU runs; the op's edge cases, errors, and its use from TorchScript.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/child_peak.h"
#include "support/paths.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/script.h>

#include <fmt/format.h>

#include <random>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
using torchattn::testing::capabilities;
using torchattn::testing::CapabilityGuard;
using torchattn::testing::for_each_build_and_dtype;
using torchattn::testing::tolerance;

/// The math path: softmax(q kᵀ · scale + mask) v, fully masked rows zero (need_weights makes
/// the functional take it).
torch::Tensor math_attention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, bool is_causal, double scale) {
  return std::get<0>(F::scaled_dot_product_attention(
      q, k, v,
      F::ScaledDotProductAttentionFuncOptions()
          .attn_mask(mask)
          .is_causal(is_causal)
          .scale(scale)
          .need_weights(true)));
}

struct Config {
  int64_t B, H, Lq, Lk, E, Ev;
  torch::ScalarType dtype;
  bool causal;
  int mask_kind; // 0 none, 1 bool [Lq, Lk], 2 bool [B, 1, 1, Lk] padding, 3 float [H, Lq, Lk],
                 // 4 bool with fully masked rows [B, H, Lq, Lk], 5 float -inf rows [Lq, Lk]
  int layout;    // 0 contiguous, 1 [B, L, H, E] transposed, 2 sliced last dim, 3 expanded batch
  std::string capability;

  std::string str() const {
    return fmt::format(
        "B={} H={} Lq={} Lk={} E={} Ev={} {} causal={} mask={} layout={} {}", B, H, Lq, Lk, E, Ev,
        dtype == torch::kDouble ? "float64" : "float32", causal, mask_kind, layout, capability);
  }
};

torch::Tensor make_input(
    int64_t B, int64_t H, int64_t L, int64_t D, torch::ScalarType dtype, int layout) {
  const auto opts = torch::TensorOptions().dtype(dtype);
  switch (layout) {
    case 1:
      return torch::randn({B, L, H, D}, opts).transpose(1, 2);
    case 2:
      return torch::randn({B, H, L, D + 3}, opts).narrow(3, 1, D);
    case 3:
      return torch::randn({1, H, L, D}, opts).expand({B, H, L, D});
    default:
      return torch::randn({B, H, L, D}, opts);
  }
}

torch::Tensor make_mask(const Config& c) {
  const auto dtype = c.dtype;
  switch (c.mask_kind) {
    case 1:
      return torch::rand({c.Lq, c.Lk}) > 0.3;
    case 2:
      return torch::rand({c.B, 1, 1, c.Lk}) > 0.2;
    case 3:
      return torch::randn({c.H, c.Lq, c.Lk}, torch::TensorOptions().dtype(dtype));
    case 4: {
      auto m = torch::rand({c.B, c.H, c.Lq, c.Lk}) > 0.5;
      // Every third query row sees no key at all.
      m.index_put_(
          {torch::indexing::Slice(), torch::indexing::Slice(),
           torch::indexing::Slice(0, torch::indexing::None, 3)},
          false);
      return m;
    }
    case 5: {
      auto m = torch::zeros({c.Lq, c.Lk}, torch::TensorOptions().dtype(dtype));
      m.index_put_(
          {torch::indexing::Slice(1, torch::indexing::None, 4)},
          -std::numeric_limits<double>::infinity());
      return m;
    }
    default:
      return {};
  }
}

/// Within the dtype's tolerance (float64 1e-10, float32 1e-5), relative to each element and
/// to `magnitude`, the largest element of the tensors computed from the same terms. Gradients
/// sum Lq or Lk terms of either sign, so their rounding error in float32 scales with those
/// terms, not with the result: with one key the key gradient cancels to exactly 0 in the math
/// path and to ~1e-5 in any path that forms dP - rowsum(dO * O) (as FlashAttention does).
torchattn::testing::AllCloseMatcher close_to(
    const torch::Tensor& expected, torch::ScalarType dtype, double magnitude) {
  const double tol = tolerance(dtype);
  return AllClose(expected, tol, tol * std::max(1.0, magnitude));
}

double largest(std::initializer_list<torch::Tensor> tensors) {
  double m = 0.0;
  for (const auto& t : tensors) {
    if (t.numel() > 0) {
      m = std::max(m, t.abs().max().item<double>());
    }
  }
  return m;
}

/// Runs q, k, v (leaves that require grad) through the op and the math path and compares the
/// outputs and the gradients.
void check_against_math(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, bool causal, double scale) {
  const auto dtype = q.scalar_type();
  auto out = torchattn::ops::scaled_dot_product_attention(
      q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt, 0.0, causal,
      scale);
  auto expected = math_attention(q, k, v, mask, causal, scale);
  REQUIRE_THAT(out, close_to(expected, dtype, largest({expected})));

  auto grad = torch::randn_like(expected);
  auto got = torch::autograd::grad({out}, {q, k, v}, {grad});
  auto want = torch::autograd::grad({expected}, {q, k, v}, {grad});
  const double magnitude = largest({want[0], want[1], want[2]});
  REQUIRE_THAT(got[0], close_to(want[0], dtype, magnitude));
  REQUIRE_THAT(got[1], close_to(want[1], dtype, magnitude));
  REQUIRE_THAT(got[2], close_to(want[2], dtype, magnitude));
}

/// Runs one configuration through the op and the math path and compares output and gradients.
void check_config(const Config& c) {
  CAPTURE(c.str());
  torchattn::ops::set_kernel_capability(c.capability);
  auto q = make_input(c.B, c.H, c.Lq, c.E, c.dtype, c.layout).requires_grad_();
  auto k = make_input(c.B, c.H, c.Lk, c.E, c.dtype, c.layout == 3 ? 0 : c.layout).requires_grad_();
  auto v = make_input(c.B, c.H, c.Lk, c.Ev, c.dtype, c.layout).requires_grad_();
  auto mask = make_mask(c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.E)) * (c.Lq % 2 == 0 ? 1.0 : 1.7);
  check_against_math(q, k, v, mask, c.causal, scale);
}

void sweep(int count, uint32_t seed, int64_t max_len) {
  CapabilityGuard guard;
  const auto caps = capabilities();
  std::mt19937 rng(seed);
  torch::manual_seed(seed);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const int64_t dims[] = {1, 3, 8, 16, 17, 32, 40, 64, 64, 64, 80, 96, 128, 256};
  for (int i = 0; i < count; ++i) {
    Config c;
    c.B = pick(1, 3);
    c.H = pick(1, 3);
    // Mostly short sequences, some longer than a tile (96 queries, 256 keys).
    c.Lq = pick(0, 9) < 7 ? pick(1, 40) : pick(41, max_len);
    c.Lk = pick(0, 9) < 7 ? pick(1, 40) : pick(41, max_len);
    c.E = dims[pick(0, 13)];
    c.Ev = pick(0, 3) == 0 ? dims[pick(0, 13)] : c.E;
    c.dtype = pick(0, 1) == 0 ? torch::kFloat : torch::kDouble;
    c.causal = pick(0, 2) == 0;
    c.mask_kind = static_cast<int>(pick(0, 5));
    c.layout = static_cast<int>(pick(0, 3));
    c.capability = caps[static_cast<size_t>(i) % caps.size()];
    check_config(c);
  }
}

} // namespace

TEST_CASE("the fused kernel matches the math path over 600 random configurations", "[ops]") {
  sweep(600, 20261124, 300);
}

TEST_CASE(
    "the fused kernel matches the math path over 4000 larger configurations", "[ops][.slow]") {
  sweep(4000, 7, 1100);
}

TEST_CASE(
    "the forward's lazily rescaled softmax is exact when later keys score far higher", "[ops]") {
  // The forward keeps its running max while new key tiles (256 keys) score at most 8 log2
  // units above it and recomputes a strip that exceeds that. Keys whose scores rise along the
  // sequence exceed it tile after tile; one late key far above the rest would overflow exp2
  // if its strip were not recomputed.
  torch::manual_seed(11);
  for_each_build_and_dtype([&](torch::ScalarType dtype) {
    for (bool causal : {false, true}) {
      CAPTURE(torchattn::ops::kernel_capability(), dtype, causal);
      const auto opts = torch::TensorOptions().dtype(dtype);
      const int64_t Lq = 200, Lk = 1100, E = 16;
      auto ramp = torch::linspace(0.2, 6.0, Lk, opts).view({1, 1, Lk, 1});
      auto q = torch::randn({1, 2, Lq, E}, opts).abs().requires_grad_();
      auto k_rising = (torch::rand({1, 2, Lk, E}, opts) * ramp).requires_grad_();
      auto v = torch::randn({1, 2, Lk, E}, opts).requires_grad_();
      check_against_math(q, k_rising, v, {}, causal, 1.0);

      auto k_spike = torch::randn({1, 2, Lk, E}, opts);
      k_spike.select(2, 700).fill_(20.0); // q >= 0: every query's largest score, by far
      k_spike.requires_grad_();
      check_against_math(q, k_spike, v, {}, /*causal=*/false, 1.0);
    }
  });
}

TEST_CASE("the fused kernel gives zeros, not NaN, where no key may be attended", "[ops]") {
  auto q = torch::randn({1, 2, 5, 8}, torch::requires_grad());
  auto k = torch::randn({1, 2, 6, 8}, torch::requires_grad());
  auto v = torch::randn({1, 2, 6, 4}, torch::requires_grad());
  auto mask = torch::ones({5, 6}, torch::kBool);
  mask[2] = false;
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, mask);
  CHECK(out.isfinite().all().item<bool>());
  CHECK(out.select(2, 2).abs().max().item<float>() == 0.0f);
  out.sum().backward();
  CHECK(q.grad().isfinite().all().item<bool>());
  CHECK(q.grad().select(2, 2).abs().max().item<float>() == 0.0f);
  CHECK(k.grad().isfinite().all().item<bool>());

  // No keys at all: zero gradients into the queries (a freed NaN block of the same size makes
  // an unwritten gradient show), and no batch at all.
  for (int64_t heads : {1, 2, 20}) {
    CAPTURE(heads);
    auto q0 = torch::randn({1, heads, 5, 8}, torch::requires_grad());
    { auto junk = torch::full({1, heads, 5, 8}, std::numeric_limits<float>::quiet_NaN()); }
    auto empty_out = torchattn::ops::scaled_dot_product_attention(
        q0, torch::randn({1, heads, 0, 8}), torch::randn({1, heads, 0, 4}));
    empty_out.sum().backward();
    CHECK(q0.grad().eq(0).all().item<bool>());
  }
  auto qb = torch::randn({0, 2, 5, 8}, torch::requires_grad());
  auto kb = torch::randn({0, 2, 6, 8}, torch::requires_grad());
  auto vb = torch::randn({0, 2, 6, 4}, torch::requires_grad());
  torchattn::ops::scaled_dot_product_attention(qb, kb, vb).sum().backward();
  CHECK(qb.grad().sizes() == qb.sizes());
  CHECK(kb.grad().sizes() == kb.sizes());

  // No keys at all: zero output of the right shape.
  auto none = torchattn::ops::scaled_dot_product_attention(
      q.detach(), torch::randn({1, 2, 0, 8}), torch::randn({1, 2, 0, 4}));
  CHECK(none.sizes() == torch::IntArrayRef({1, 2, 5, 4}));
  CHECK(none.abs().max().item<float>() == 0.0f);
}

TEST_CASE("the fused kernel propagates NaN like the math path", "[ops]") {
  auto q = torch::randn({1, 1, 4, 8});
  auto k = torch::randn({1, 1, 6, 8});
  auto v = torch::randn({1, 1, 6, 8});
  q[0][0][1][3] = std::numeric_limits<float>::quiet_NaN();
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v);
  CHECK(out.select(2, 1).isnan().all().item<bool>());
  CHECK(out.select(2, 0).isfinite().all().item<bool>());
}

TEST_CASE("dropout and masks that need grad take the math path", "[ops]") {
  torch::manual_seed(0);
  auto q = torch::randn({2, 2, 6, 8}, torch::requires_grad());
  auto k = torch::randn({2, 2, 6, 8});
  auto v = torch::randn({2, 2, 6, 8});
  // Dropout: the math path's draws for the same seed, to the bit, and its gradient.
  torch::manual_seed(42);
  auto dropped = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.5);
  torch::manual_seed(42);
  auto q_math = q.detach().clone().requires_grad_();
  auto math = std::get<0>(F::scaled_dot_product_attention(
      q_math, k, v, F::ScaledDotProductAttentionFuncOptions().dropout_p(0.5).need_weights(true)));
  CHECK_THAT(dropped.detach(), AllClose(math.detach(), 0, 0));
  dropped.sum().backward();
  math.sum().backward();
  CHECK_THAT(q.grad(), AllClose(q_math.grad(), 0, 0));
  // The scaling: with q = 0 every key weighs 1/Lk, so over values of ones each output is
  // (kept keys) / (Lk (1 - p)), and about 1 - p of the keys are kept.
  for (double p : {0.25, 0.5}) {
    CAPTURE(p);
    const int64_t lk = 400;
    auto out = torchattn::ops::scaled_dot_product_attention(
        torch::zeros({2, 2, 50, 8}), torch::randn({2, 2, lk, 8}), torch::ones({2, 2, lk, 1}), {},
        p);
    auto kept = out * (static_cast<double>(lk) * (1 - p));
    CHECK((kept - kept.round()).abs().max().item<double>() < 1e-3);
    CHECK(kept.max().item<double>() < lk - 0.5); // some keys were dropped in every row
    const double fraction = kept.mean().item<double>() / lk;
    CHECK(std::abs(fraction - (1 - p)) < 0.02);
  }

  auto bias = torch::randn({6, 6}, torch::requires_grad());
  auto out = torchattn::ops::scaled_dot_product_attention(q.detach(), k, v, bias);
  out.sum().backward();
  REQUIRE(bias.grad().defined());
  auto bias2 = bias.detach().clone().requires_grad_();
  math_attention(q.detach(), k, v, bias2, false, 1.0 / std::sqrt(8.0)).sum().backward();
  CHECK_THAT(bias.grad(), AllClose(bias2.grad(), 1e-5, 1e-5));
}

TEST_CASE("double backward through the fused kernel fails with a clear message", "[ops]") {
  auto q = torch::randn({1, 1, 4, 8}, torch::requires_grad());
  auto k = torch::randn({1, 1, 4, 8});
  auto v = torch::randn({1, 1, 4, 8});
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v);
  auto g =
      torch::autograd::grad({out.sum()}, {q}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  CHECK_THROWS_WITH(
      g[0].sum().backward(),
      ContainsSubstring("double backward is not supported by the fused kernel"));
}

TEST_CASE("the op validates its arguments", "[ops][errors]") {
  auto q = torch::randn({2, 3, 4, 8}), k = torch::randn({2, 3, 5, 8}),
       v = torch::randn({2, 3, 5, 6});
  const std::string fn = "torchattn::scaled_dot_product_attention: ";
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q[0], k, v),
      ContainsSubstring(fn + "query has 3 dims [3, 4, 8], expected 4 [B, H, Lq, E]"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k.narrow(3, 0, 7), v),
      ContainsSubstring(fn + "key has shape [2, 3, 5, 7], expected [2, 3, Lk, 8] [B, H, Lk, E]"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k, v.narrow(2, 0, 4)),
      ContainsSubstring(
          fn + "value has shape [2, 3, 4, 6], expected [2, 3, 5, Ev] [B, H, Lk, Ev]"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q.to(torch::kInt), k, v),
      ContainsSubstring(fn + "query has dtype Int, expected Float, Double, BFloat16 or Half"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k.to(torch::kDouble), v),
      ContainsSubstring(fn + "key has dtype Double, expected Float like query"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k, v, torch::ones({4, 4}, torch::kBool)),
      ContainsSubstring(
          fn + "attn_mask has shape [4, 4], expected a shape broadcastable to the scores [2, 3, 4, "
               "5] [B, H, Lq, Lk]"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k, v, torch::ones({4, 5}, torch::kInt)),
      ContainsSubstring(fn + "attn_mask has dtype Int, expected Bool or Float like query"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 1.0),
      ContainsSubstring(fn + "dropout_p is 1, expected a probability in [0, 1)"));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(
          q, k, v, {}, 0.0, false, std::numeric_limits<double>::infinity()),
      ContainsSubstring(fn + "scale is inf, expected a finite number"));
  CHECK_THROWS_WITH(
      torchattn::ops::set_kernel_capability("sse9"),
      ContainsSubstring("set_kernel_capability: capability is 'sse9', expected one of amx, "
                        "avx512_bf16, avx512, avx2, "
                        "default"));
}

/// C++'s TorchScript compiler has no `torch.ops`; this resolver maps the name `torchattn` to
/// the op namespace, as `torch.ops.torchattn` is in Python.
struct OpsResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(
      const std::string& name, torch::jit::GraphFunction& fn,
      const torch::jit::SourceRange& loc) override {
    if (name == "torchattn") {
      return std::make_shared<torch::jit::BuiltinModule>("torchattn");
    }
    return torch::jit::nativeResolver()->resolveValue(name, fn, loc);
  }
  torch::jit::TypePtr resolveType(
      const std::string& name, const torch::jit::SourceRange& loc) override {
    return torch::jit::nativeResolver()->resolveType(name, loc);
  }
};

TEST_CASE("the ops run from TorchScript", "[ops][jit]") {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  cu->define(
      c10::nullopt, R"JIT(
def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor):
    return torchattn.scaled_dot_product_attention(q, k, v, mask, 0.0, True, 0.5)

def additive(q: Tensor, k: Tensor, w: Tensor):
    return torchattn.additive_attention_scores(q, k, w)
)JIT",
      std::make_shared<OpsResolver>(), nullptr);
  {
    auto q = torch::randn({2, 5, 16}), k = torch::randn({2, 7, 16}), w = torch::randn({16});
    auto scripted = cu->run_method("additive", q, k, w).toTensor();
    CHECK_THAT(scripted, AllClose(torchattn::ops::additive_attention_scores(q, k, w), 0, 0));
    CHECK_THAT(
        scripted, AllClose(torch::tanh(q.unsqueeze(2) + k.unsqueeze(1)).matmul(w), 1e-5, 1e-5));
  }
  auto q = torch::randn({2, 2, 7, 8}), k = torch::randn({2, 2, 9, 8}),
       v = torch::randn({2, 2, 9, 4});
  auto mask = torch::rand({7, 9}) > 0.2;
  auto scripted = cu->run_method("attend", q, k, v, mask).toTensor();
  auto direct =
      torchattn::ops::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/true, 0.5);
  CHECK_THAT(scripted, AllClose(direct, 0, 0));
  CHECK_THAT(scripted, AllClose(math_attention(q, k, v, mask, true, 0.5), 1e-5, 1e-5));
}

TEST_CASE("modules take the fused kernel when no weights are asked for", "[ops][nn]") {
  // The fused and math paths agree to rounding, not bit for bit: a difference shows the path.
  // Lq · Lk = 2640 is above math_path_max_scores(), under which the math path would run.
  torch::manual_seed(3);
  auto q = torch::randn({2, 4, 66, 16}), k = torch::randn({2, 4, 40, 16}),
       v = torch::randn({2, 4, 40, 16});
  auto kpm = torch::rand({2, 40}) > 0.8;
  auto fused = torchattn::ops::scaled_dot_product_attention(
      q, k, v, kpm.logical_not().view({2, 1, 1, 40}), 0.0, /*is_causal=*/true);
  torchattn::nn::ScaledDotProductAttention attn;
  auto [out, w] = attn->forward(q, k, v, {}, kpm, /*need_weights=*/false, /*is_causal=*/true);
  CHECK_FALSE(w.defined());
  CHECK_THAT(out, AllClose(fused, 0, 0));
  auto [out_w, w2] = attn->forward(q, k, v, {}, kpm, /*need_weights=*/true, /*is_causal=*/true);
  CHECK_THAT(out_w, AllClose(fused, 1e-5, 1e-5));

  torchattn::nn::MultiheadAttention mha(
      torchattn::nn::MultiheadAttentionOptions(32, 4).batch_first(true));
  auto x = torch::randn({2, 50, 32}, torch::requires_grad());
  auto [m_fused, m_w] = mha->forward(x, x, x, {}, /*need_weights=*/false);
  auto [m_math, m_w2] = mha->forward(x, x, x, {}, /*need_weights=*/true);
  CHECK_FALSE(m_w.defined());
  CHECK_THAT(m_fused.detach(), AllClose(m_math.detach(), 1e-5, 1e-5));
  // The path itself: only the fused kernel refuses double backward.
  CHECK(torchattn::testing::through_fused_kernel(m_fused, x));
  CHECK_FALSE(torchattn::testing::through_fused_kernel(m_math, x));
  // MultiheadAttention's heads are the op's: its fused output is the op's on its projections
  // to the bit.
  auto qkv = torch::linear(x, mha->in_proj_weight, mha->in_proj_bias)
                 .view({2, 50, 3, 4, 8})
                 .permute({2, 0, 3, 1, 4});
  auto heads = torchattn::ops::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  auto by_op = mha->out_proj(heads.transpose(1, 2).reshape({2, 50, 32}));
  CHECK_THAT(m_fused.detach(), AllClose(by_op.detach(), 0, 0));

  // Below the threshold the math path runs: bit for bit what need_weights gives.
  auto small_q = q.narrow(2, 0, 20);
  auto [small, none] =
      attn->forward(small_q, k, v, {}, kpm, /*need_weights=*/false, /*is_causal=*/true);
  auto [small_math, small_w] =
      attn->forward(small_q, k, v, {}, kpm, /*need_weights=*/true, /*is_causal=*/true);
  CHECK_THAT(small, AllClose(small_math, 0, 0));
}

namespace {

constexpr const char* kMemoryChild =
    "fused attention forward and backward at N=16384 (child process)";

} // namespace

// Runs in the child process started by the test below; hidden from normal runs.
TEST_CASE(kMemoryChild, "[.memory_child]") {
  const int64_t n = 16384;
  auto q = torch::randn({1, 8, n, 64}, torch::requires_grad());
  auto k = torch::randn({1, 8, n, 64}, torch::requires_grad());
  auto v = torch::randn({1, 8, n, 64}, torch::requires_grad());
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v);
  out.backward(torch::ones_like(out));
  REQUIRE(q.grad().isfinite().all().item<bool>());
  REQUIRE(k.grad().isfinite().all().item<bool>());
  REQUIRE(v.grad().isfinite().all().item<bool>());
  torchattn::testing::report_peak();
}

#if !defined(TORCHATTN_SANITIZED)
TEST_CASE("forward and backward at N=16384 stay under 1 GiB of peak RSS", "[ops][memory]") {
  // The math path would need 8 GiB for the float32 scores [1, 8, 16384, 16384] alone. The child
  // is this test binary running only the case above (support/child_peak.h).
  const double peak_mib = torchattn::testing::child_peak_mib(kMemoryChild);
  INFO("peak RSS of the child: " << peak_mib << " MiB");
  CHECK(peak_mib < 1024.0);
  WARN(fmt::format("N=16384 forward+backward peak RSS: {:.0f} MiB", peak_mib));
}
#endif

TEST_CASE(
    "the fused kernel gives the same bits on every run and thread count", "[ops][determinism]") {
  // Outputs and gradients are bit-identical for the same inputs, whatever the number of
  // threads: each tile is one thread's, and backward's split of the keys and its sums do not
  // depend on the thread count. One head (backward splits its keys), several heads, a mask and
  // causal attention, longer than a tile.
  const int saved_threads = at::get_num_threads();
  torch::manual_seed(21);
  for_each_build_and_dtype([&](torch::ScalarType dtype) {
    for (int64_t heads : {1, 5}) {
      CAPTURE(torchattn::ops::kernel_capability(), dtype, heads);
      const auto opts = torch::TensorOptions().dtype(dtype);
      auto q = torch::randn({1, heads, 300, 24}, opts), k = torch::randn({1, heads, 700, 24}, opts);
      auto v = torch::randn({1, heads, 700, 16}, opts),
           grad = torch::randn({1, heads, 300, 16}, opts);
      auto mask = torch::randn({300, 700}, opts);
      auto run = [&](int threads) {
        at::set_num_threads(threads);
        auto qq = q.clone().requires_grad_(), kk = k.clone().requires_grad_(),
             vv = v.clone().requires_grad_();
        auto out =
            torchattn::ops::scaled_dot_product_attention(qq, kk, vv, mask, 0.0, /*is_causal=*/true);
        auto g = torch::autograd::grad({out}, {qq, kk, vv}, {grad});
        return std::vector<torch::Tensor>{out.detach(), g[0], g[1], g[2]};
      };
      const auto first = run(1);
      for (int threads : {2, 3, 1, 2}) {
        const auto again = run(threads);
        for (size_t i = 0; i < first.size(); ++i) {
          CAPTURE(threads, i);
          CHECK(torch::equal(first[i], again[i]));
        }
      }
    }
  });
  at::set_num_threads(saved_threads);
}
