// The fused additive score (torchattn::additive_attention_scores) against the composite of
// ATen ops it replaces, Σ_d w_d tanh(q_id + k_jd): values and gradients over shapes, strides,
// dtypes and every vector build this CPU runs; finite differences; the functional's choice of
// path; errors.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/gradcheck.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <fmt/format.h>

#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
using torchattn::testing::capabilities;
using torchattn::testing::CapabilityGuard;
using torchattn::testing::tolerance;

/// What the op replaces: the energies [..., Lq, Lk, D] by ATen's tanh, then their dot with w.
torch::Tensor composite_scores(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w) {
  return torch::tanh(q.unsqueeze(-2) + k.unsqueeze(-3)).matmul(w);
}

struct Config {
  std::vector<int64_t> lead; // leading dims, shared by query and key
  int64_t Lq, Lk, D;
  torch::ScalarType dtype;
  bool transposed; // query and key given as transposed views (non-contiguous)
  std::string capability;

  std::string str() const {
    return fmt::format(
        "lead=[{}] Lq={} Lk={} D={} {} transposed={} {}", fmt::join(lead, ","), Lq, Lk, D,
        dtype == torch::kDouble ? "float64" : "float32", transposed, capability);
  }
};

torch::Tensor make_input(const Config& c, int64_t L, double scale) {
  std::vector<int64_t> shape = c.lead;
  if (c.transposed) {
    shape.push_back(c.D);
    shape.push_back(L);
    return (torch::randn(shape, torch::dtype(c.dtype)) * scale).transpose(-2, -1);
  }
  shape.push_back(L);
  shape.push_back(c.D);
  return torch::randn(shape, torch::dtype(c.dtype)) * scale;
}

} // namespace

TEST_CASE(
    "the fused additive score matches the composite of ATen ops, gradients too",
    "[ops][additive]") {
  CapabilityGuard guard;
  torch::manual_seed(11);
  std::vector<Config> configs;
  for (const auto& cap : capabilities()) {
    for (auto dtype : {torch::kFloat, torch::kDouble}) {
      // D covers whole vectors (16, 256), tails (1, 7, 33) and none (0); N = 1 splits the query
      // rows between tasks and adds their grad_key partials.
      for (int64_t D : {1, 7, 16, 33, 256}) {
        configs.push_back({{3}, 5, 9, D, dtype, false, cap});
        configs.push_back({{1}, 13, 6, D, dtype, true, cap});
      }
      configs.push_back({{}, 4, 11, 24, dtype, false, cap});   // unbatched
      configs.push_back({{2, 3}, 6, 1, 40, dtype, true, cap}); // two leading dims, one key
      configs.push_back({{40}, 2, 3, 8, dtype, false, cap});   // many batch entries
      configs.push_back({{2}, 0, 4, 8, dtype, false, cap});    // no queries
      configs.push_back({{2}, 3, 0, 8, dtype, false, cap});    // no keys
      configs.push_back({{2}, 3, 4, 0, dtype, false, cap});    // D = 0: all scores zero
      configs.push_back({{0, 2}, 3, 4, 8, dtype, false, cap}); // an empty batch
    }
  }
  for (const auto& c : configs) {
    INFO(c.str());
    torchattn::ops::set_kernel_capability(c.capability);
    // Scale 2 puts many energies where tanh saturates and 1 - t² loses precision.
    auto q = make_input(c, c.Lq, 2.0).requires_grad_();
    auto k = make_input(c, c.Lk, 2.0).requires_grad_();
    auto w = torch::randn({c.D}, torch::dtype(c.dtype)).requires_grad_();
    auto q2 = q.detach().clone().requires_grad_(), k2 = k.detach().clone().requires_grad_();
    auto w2 = w.detach().clone().requires_grad_();
    auto fused = torchattn::ops::additive_attention_scores(q, k, w);
    auto want = composite_scores(q2, k2, w2);
    const double tol = tolerance(c.dtype);
    REQUIRE(fused.sizes() == want.sizes());
    CHECK_THAT(fused, AllClose(want, tol, tol));
    // A quarter of the gradient exactly zero, as masked scores give: those are skipped.
    auto grad = torch::randn_like(want) * (torch::rand_like(want) > 0.25).to(c.dtype);
    auto g = torch::autograd::grad({fused}, {q, k, w}, {grad});
    auto g2 = torch::autograd::grad({want}, {q2, k2, w2}, {grad});
    for (size_t i = 0; i < 3; ++i) {
      INFO(
          "gradient of "
          << "qkw"[i]);
      CHECK(g[i].sizes() == g2[i].sizes());
      CHECK_THAT(g[i], AllClose(g2[i], tol, tol));
    }
  }
}

TEST_CASE(
    "the fused additive score's gradients match finite differences", "[ops][additive][gradcheck]") {
  torch::manual_seed(4);
  auto q = torch::randn({2, 3, 5}, torch::kDouble).requires_grad_();
  auto k = torch::randn({2, 4, 5}, torch::kDouble).requires_grad_();
  auto w = torch::randn({5}, torch::kDouble).requires_grad_();
  auto g = torch::randn({2, 3, 4}, torch::kDouble);
  auto loss = [&] { return (torchattn::ops::additive_attention_scores(q, k, w) * g).sum(); };
  auto result =
      torchattn::testing::gradcheck(loss, {{"query", q}, {"key", k}, {"score_weight", w}});
  INFO("worst at " << result.worst_where);
  CHECK(result.worst_error < 1e-8);
}

TEST_CASE(
    "additive attention takes the fused score when no weights are asked for",
    "[ops][additive][nn]") {
  torch::manual_seed(8);
  torchattn::nn::AdditiveAttention attn(/*query_dim=*/6, /*key_dim=*/5, /*hidden_dim=*/7);
  attn->to(torch::kDouble);
  auto q = torch::randn({3, 4, 6}, torch::kDouble).requires_grad_();
  auto k = torch::randn({3, 9, 5}, torch::kDouble);
  auto v = torch::randn({3, 9, 2}, torch::kDouble);
  auto kpm = torch::rand({3, 9}) > 0.6;
  kpm[1].fill_(true); // a batch entry with no key to attend
  auto [fused, none] = attn->forward(q, k, v, {}, kpm, /*need_weights=*/false);
  auto [math, weights] = attn->forward(q, k, v, {}, kpm, /*need_weights=*/true);
  CHECK_FALSE(none.defined());
  CHECK_THAT(fused, AllClose(math, 1e-12, 1e-12));
  CHECK(fused[1].abs().max().item<double>() == 0.0);

  // First-order gradients agree; only the fused path refuses a second order, which shows the
  // path each call took.
  auto g_fused =
      torch::autograd::grad({fused.sum()}, {q}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  auto g_math =
      torch::autograd::grad({math.sum()}, {q}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  CHECK_THAT(g_fused[0], AllClose(g_math[0], 1e-12, 1e-12));
  CHECK_NOTHROW(g_math[0].sum().backward());
  CHECK_THROWS_WITH(
      g_fused[0].sum().backward(),
      ContainsSubstring(
          "torchattn::additive_attention_scores: double backward is not supported by the fused "
          "kernel; use torchattn::nn::functional::additive_attention with need_weights(true)"));

  // Leading dims that only broadcast take the composite: the same result.
  auto [broadcast, w3] = attn->forward(q, k[0], v[0], {}, {}, /*need_weights=*/false);
  auto [broadcast_math, w4] = attn->forward(q, k[0], v[0], {}, {}, /*need_weights=*/true);
  CHECK_THAT(broadcast, AllClose(broadcast_math, 0, 0));
}

TEST_CASE("the additive score op validates its arguments", "[ops][additive][errors]") {
  auto q = torch::randn({2, 3, 8}), k = torch::randn({2, 5, 8}), w = torch::randn({8});
  const std::string fn = "torchattn::additive_attention_scores: ";
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q[0][0], k, w),
      ContainsSubstring(fn + "query has 1 dims [8], expected at least 2 [..., Lq, D]"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q, k.narrow(2, 0, 7), w),
      ContainsSubstring(
          fn + "key has shape [2, 5, 7], expected [..., Lk, 8] with the leading dims of query [2, "
               "3, 8]"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q, k[0], w),
      ContainsSubstring(
          fn +
          "key has shape [5, 8], expected [..., Lk, 8] with the leading dims of query [2, 3, 8]"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q.to(torch::kInt), k, w),
      ContainsSubstring(fn + "query has dtype Int, expected Float, Double, BFloat16 or Half"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q, k.to(torch::kDouble), w),
      ContainsSubstring(fn + "key has dtype Double, expected Float like query"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q, k, w.view({1, 8})),
      ContainsSubstring(fn + "score_weight has shape [1, 8], expected [8] [D]"));
  CHECK_THROWS_WITH(
      torchattn::ops::additive_attention_scores(q, k, w.to(torch::kDouble)),
      ContainsSubstring(fn + "score_weight has dtype Double, expected Float like query"));
}
