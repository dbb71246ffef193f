// bfloat16 and float16 through the fused kernel where only a band of keys per query masks the
// scores (causal, sliding window, prefix): the kernels mask those tiles inside the products'
// epilogue (StoreExp2Pairs<true> forward, backward), by FlashAttention's rule
// (support/low_precision_rule.h) for the output and every gradient, on every build.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/low_precision_rule.h"

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;
using torchattn::testing::CapabilityGuard;
using torchattn::testing::require_rule_on_every_build;

/// A band: causal, window and prefix as flex_attention takes them.
struct Band {
  int64_t Lq, Lk;
  const char* causal;
  int64_t left, right;
  bool prefix;
};

F::FlexAttentionFuncOptions band_options(const Band& band, const torch::Tensor& prefix) {
  auto o = F::FlexAttentionFuncOptions()
               .causal(band.causal)
               .window_left(band.left)
               .window_right(band.right);
  if (band.prefix) {
    o.prefix_lengths(prefix);
  }
  return o;
}

/// FlashAttention's rule for q, k, v and the gradient of the output through `band`, on every
/// build, in bfloat16 and float16.
void require_band_rule(
    const Band& band, const std::vector<torch::Tensor>& inputs, const torch::Tensor& grad,
    const torch::Tensor& prefix) {
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto run = [&](torch::ScalarType t, bool math) {
      std::vector<torch::Tensor> x;
      for (const auto& i : inputs) {
        x.push_back(i.to(dtype).to(t).requires_grad_());
      }
      auto out =
          F::flex_attention(x[0], x[1], x[2], band_options(band, prefix).need_weights(math)).output;
      auto g = torch::autograd::grad({out}, x, {grad.to(dtype).to(t)});
      g.insert(g.begin(), out.detach());
      return g;
    };
    CAPTURE(c10::toString(dtype), band.Lq, band.Lk, band.causal, band.left, band.right);
    require_rule_on_every_build(dtype, run);
  }
}

/// FlashAttention's rule where each query points at the last key of its band and the key just
/// after it, and (outer_lo) at the first key and the one before it: q = gain * the sum of
/// those keys (unit length, random), the band read from the math path's weights (all scores
/// 0).
void require_edges_rule(const Band& band, const torch::Tensor& prefix, double gain, bool outer_lo) {
  const int64_t B = 2, H = 2, E = 64;
  const auto k = torch::randn({B, H, band.Lk, E}, torch::kDouble) / std::sqrt(double(E));
  const auto v = torch::randn({B, H, band.Lk, E}, torch::kDouble);
  const auto allowed = F::flex_attention(
                           torch::zeros({B, H, band.Lq, E}, torch::kDouble), k, v,
                           band_options(band, prefix).need_weights(true))
                           .weights.gt(0);
  const auto j = torch::arange(band.Lk, torch::kLong);
  const auto lo = torch::where(allowed, j, band.Lk).amin(-1, /*keepdim=*/true);
  const auto hi = torch::where(allowed, j, -1).amax(-1, /*keepdim=*/true);
  REQUIRE(lo.lt(band.Lk).any().item<bool>());
  // [B, H, Lq, Lk]: 1 at hi and hi + 1 of each query's band, and at lo - 1 and lo.
  auto edges = (j == hi).logical_or(j == hi + 1);
  if (outer_lo) {
    edges = edges.logical_or(j == lo - 1).logical_or(j == lo);
  }
  const auto q = gain * torch::matmul(edges.to(torch::kDouble), k);
  require_band_rule(
      band, {q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat)},
      torch::randn({B, H, band.Lq, E}), prefix);
}

} // namespace

TEST_CASE(
    "low precision: causal, window and prefix bands at N up to 384 keep the 2x rule, gradients "
    "included",
    "[ops][low_precision]") {
  // Masked only by a band of keys per query, the fused kernel's diagonal tiles mask inside the
  // products' epilogue; these sizes give whole tiles of 64 keys and partial ones, Lq != Lk
  // (bottom-right diagonals), and rows whose band ends inside a vector of 16 keys. The random
  // sweep (test_low_precision.cpp) seldom draws a band without a mask at these sizes.
  CapabilityGuard guard;
  torch::manual_seed(17);
  const Band bands[] = {
      {256, 256, "top_left", -1, -1, false}, {130, 300, "bottom_right", -1, -1, false},
      {384, 200, "top_left", -1, -1, false}, {200, 200, "none", 50, 7, false},
      {160, 160, "top_left", 33, -1, false}, {192, 192, "top_left", -1, -1, true}};
  const int64_t B = 2, H = 2, E = 64;
  const auto prefix = torch::tensor({40, 150}, torch::kLong);
  for (const auto& band : bands) {
    const std::vector<torch::Tensor> inputs{
        torch::randn({B, H, band.Lq, E}), torch::randn({B, H, band.Lk, E}),
        torch::randn({B, H, band.Lk, E})};
    require_band_rule(band, inputs, torch::randn({B, H, band.Lq, E}), prefix);
  }
}

TEST_CASE(
    "low precision: queries that point at the keys on and just outside their band's edges get "
    "exactly the band",
    "[ops][low_precision]") {
  // With random scores a key lost or gained at a band's edge moves a row by less than the
  // rule's allowance. Here each query points at the first and last keys of its band and at the
  // keys just outside it (score about 5, the others about 0 +- 1.3): causal at N = 320, the
  // last key weighs a fifth of its row (median; Python, float64) and dropping it moves the
  // row's largest output by 0.6. The band comes from the math path's weights (with all scores
  // 0). Odd offsets (Lk - Lq, window sides) put band edges on odd and even keys against the
  // blocks of rows the epilogue takes. (A band's first keys reach the forward's epilogue only
  // below its tiles: their tiles come first, before every query has a running max.)
  CapabilityGuard guard;
  torch::manual_seed(19);
  const Band bands[] = {
      {250, 301, "bottom_right", -1, -1, false}, {320, 320, "top_left", -1, -1, false},
      {300, 300, "none", 37, 5, false},          {257, 257, "top_left", 45, -1, false},
      {288, 288, "top_left", -1, -1, true},      {270, 270, "none", 21, 40, false}};
  const auto prefix = torch::tensor({41, 133}, torch::kLong);
  for (const auto& band : bands) {
    require_edges_rule(band, prefix, 40.0, /*outer_lo=*/true);
  }
}

TEST_CASE(
    "low precision: a key far above the running max is rescored with the band's mask",
    "[ops][low_precision]") {
  // Each query points at its band's last key and the masked key after it with scores near 20,
  // far above its running max from the earlier tiles (near 10): its strip of queries is
  // scored again with the masks (forward_scores.h, score_lazy_tile), where the masked key
  // must still weigh 0.
  CapabilityGuard guard;
  torch::manual_seed(23);
  const Band bands[] = {
      {320, 320, "top_left", -1, -1, false},
      {250, 301, "bottom_right", -1, -1, false},
      {300, 300, "none", 37, 5, false}};
  const auto prefix = torch::tensor({41, 133}, torch::kLong);
  for (const auto& band : bands) {
    require_edges_rule(band, prefix, 160.0, /*outer_lo=*/false);
  }
}
