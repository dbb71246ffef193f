// Behaviour every module shares, checked from the definitions: fully masked rows, dropout,
// broadcasting, masks as equivalent forms, empty sequences.

#include <torchattn/torchattn.h>

#include "support/modules.h"
#include "support/paths.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <limits>

namespace {

using torchattn::testing::all_modules;
using torchattn::testing::AllClose;
constexpr double kInf = std::numeric_limits<double>::infinity();

} // namespace

TEST_CASE(
    "fully masked rows give zero output, zero weights and finite zero gradients", "[nn][masks]") {
  torch::manual_seed(1);
  const int64_t B = 2, H = 2, Lq = 3, Lk = 4, E = 6;
  for (auto& m : all_modules(E, H, torch::kDouble)) {
    // Row 1 of every head has no allowed key: by a bool mask, a float -inf mask, or because
    // batch 1 is entirely padding.
    auto bool_mask = torch::ones({Lq, Lk}, torch::kBool);
    bool_mask[1].fill_(false);
    auto float_mask = torch::zeros({Lq, Lk}, torch::kDouble);
    float_mask[1].fill_(-kInf);
    auto padding = torch::zeros({B, Lk}, torch::kBool);
    padding[1].fill_(true);

    struct Variant {
      const char* name;
      torch::Tensor attn_mask, key_padding_mask;
      torch::Tensor dead; // [B, H, Lq] true where the row is fully masked
    };
    auto row1 = torch::zeros({B, H, Lq}, torch::kBool);
    row1.select(2, 1).fill_(true);
    auto batch1 = torch::zeros({B, H, Lq}, torch::kBool);
    batch1[1].fill_(true);
    std::vector<Variant> variants = {
        {"bool attn_mask", bool_mask, {}, row1},
        {"float attn_mask", float_mask, {}, row1},
        {"key_padding_mask", {}, padding, batch1},
    };
    for (const auto& v : variants) {
      DYNAMIC_SECTION(m.name << " with " << v.name) {
        auto q = torch::randn({B, H, Lq, E}, torch::kDouble).requires_grad_(true);
        auto k = torch::randn({B, H, Lk, E}, torch::kDouble).requires_grad_(true);
        auto val = torch::randn({B, H, Lk, E}, torch::kDouble).requires_grad_(true);
        auto [out, w] = m(q, k, val, v.attn_mask, v.key_padding_mask);
        REQUIRE(torch::isfinite(out).all().item<bool>());
        REQUIRE(torch::isfinite(w).all().item<bool>());
        const auto dead = v.dead.unsqueeze(-1);
        CHECK(out.masked_select(dead.expand_as(out)).abs().max().item<double>() == 0.0);
        CHECK(w.masked_select(dead.expand_as(w)).abs().max().item<double>() == 0.0);
        // Live rows still sum to one.
        auto sums = w.sum(-1).masked_select(v.dead.logical_not());
        CHECK_THAT(sums, AllClose(torch::ones_like(sums), 1e-12, 1e-12));

        (out.sum() + w.sum()).backward();
        for (auto* t : {&q, &k, &val}) {
          REQUIRE(torch::isfinite(t->grad()).all().item<bool>());
        }
        // A dead query row gets no gradient.
        CHECK(q.grad().masked_select(dead.expand_as(q)).abs().max().item<double>() == 0.0);
        for (auto& p : m.module.ptr()->parameters()) {
          REQUIRE(torch::isfinite(p.grad()).all().item<bool>());
        }
      }
    }
  }
}

TEST_CASE("a bool mask and the equivalent float mask give the same result", "[nn][masks]") {
  torch::manual_seed(2);
  for (auto& m : all_modules(5, 1, torch::kDouble)) {
    DYNAMIC_SECTION(m.name) {
      auto q = torch::randn({3, 4, 5}, torch::kDouble);
      auto k = torch::randn({3, 6, 5}, torch::kDouble);
      auto v = torch::randn({3, 6, 2}, torch::kDouble);
      auto keep = torch::rand({3, 4, 6}) > 0.3;
      keep.select(2, 0).fill_(true);
      auto additive =
          torch::zeros({3, 4, 6}, torch::kDouble).masked_fill(keep.logical_not(), -kInf);
      auto [a, wa] = m(q, k, v, keep);
      auto [b, wb] = m(q, k, v, additive);
      CHECK_THAT(a, AllClose(b, 1e-12, 1e-12));
      CHECK_THAT(wa, AllClose(wb, 1e-12, 1e-12));
      // key_padding_mask [B, Lk] (true = padding) equals attn_mask [B, 1, Lk] (true = keep).
      auto pad = torch::rand({3, 6}) > 0.6;
      pad.select(1, 0).fill_(false);
      auto [c, wc] = m(q, k, v, {}, pad);
      auto [d, wd] = m(q, k, v, pad.logical_not().unsqueeze(1));
      CHECK_THAT(c, AllClose(d, 1e-12, 1e-12));
      // is_causal equals an explicit lower-triangular keep mask, top-left aligned.
      auto [e, we] = m(q, k, v, {}, {}, /*is_causal=*/true);
      auto [f, wf] = m(q, k, v, torch::ones({4, 6}, torch::kBool).tril());
      CHECK_THAT(e, AllClose(f, 1e-12, 1e-12));
      CHECK(we.select(-2, 0).slice(-1, 1).abs().max().item<double>() == 0.0);
    }
  }
}

TEST_CASE(
    "the fused path applies masks as the math path does, for every input rank", "[nn][masks]") {
  // need_weights = false takes the fused op for dot, scaled and cosine attention; true takes
  // the math path. Inputs of 2, 3 and 4 dims are padded to the op's [B, H, L, E] in front, and
  // so must their masks be (a [B, 1, Lk] mask of [B, L, E] inputs once went to the heads).
  torchattn::testing::AlwaysFused fused;
  torch::manual_seed(21);
  for (int64_t rank : {2, 3, 4}) {
    std::vector<int64_t> lead = rank == 2   ? std::vector<int64_t>{}
                                : rank == 3 ? std::vector<int64_t>{3}
                                            : std::vector<int64_t>{2, 3};
    auto shape = [&](int64_t l, int64_t e) {
      auto s = lead;
      s.push_back(l);
      s.push_back(e);
      return s;
    };
    for (auto& m : all_modules(5, rank == 4 ? 3 : 1, torch::kFloat)) {
      DYNAMIC_SECTION(m.name << ", rank " << rank) {
        auto q = torch::randn(shape(4, 5));
        auto k = torch::randn(shape(6, 5));
        auto v = torch::randn(shape(6, 2));
        auto keep = torch::rand(shape(4, 6)) > 0.3;
        keep.select(-1, 0).fill_(true);
        auto additive = torch::zeros(shape(4, 6)).masked_fill(keep.logical_not(), -kInf);
        const int64_t b = rank == 2 ? 6 : lead.front();
        auto pad =
            torch::rand(rank == 2 ? std::vector<int64_t>{6} : std::vector<int64_t>{b, 6}) > 0.6;
        pad.select(-1, 0).fill_(false);
        auto run = [&](bool need_weights, const torch::Tensor& mask, const torch::Tensor& kpm,
                       bool causal) {
          return std::get<0>(m.module.forward<std::tuple<torch::Tensor, torch::Tensor>>(
              q, k, v, mask, kpm, need_weights, causal));
        };
        for (const auto& [mask, kpm, causal] :
             std::vector<std::tuple<torch::Tensor, torch::Tensor, bool>>{
                 {keep, {}, false}, {additive, {}, true}, {{}, pad, false}, {keep, pad, true}}) {
          CHECK_THAT(
              run(false, mask, kpm, causal), AllClose(run(true, mask, kpm, causal), 1e-5, 1e-6));
        }
      }
    }
  }
}

TEST_CASE("small score matrices take the math path unless told otherwise", "[nn]") {
  namespace F = torchattn::nn::functional;
  CHECK(F::math_path_max_scores() == 48 * 48);
  {
    torchattn::testing::AlwaysFused fused;
    CHECK(F::math_path_max_scores() == 0);
  }
  CHECK(F::math_path_max_scores() == 48 * 48);
  CHECK_THROWS_WITH(
      F::set_math_path_max_scores(-1),
      Catch::Matchers::ContainsSubstring("must be non-negative, got -1"));
  // Both sides of the threshold give the math path's answer, each by the path it should take:
  // 48 x 48 scores by the math path, 49 x 49 by the fused kernel (which refuses double
  // backward).
  torch::manual_seed(5);
  for (int64_t l : {48, 49}) {
    CAPTURE(l);
    auto q = torch::randn({2, l, 8}, torch::kDouble).requires_grad_();
    auto [fast, none] = F::scaled_dot_product_attention(
        q, q, q, F::ScaledDotProductAttentionFuncOptions().is_causal(true));
    auto [math, w] = F::scaled_dot_product_attention(
        q, q, q, F::ScaledDotProductAttentionFuncOptions().is_causal(true).need_weights(true));
    CHECK_THAT(fast.detach(), AllClose(math.detach(), 1e-12, 1e-12));
    CHECK(torchattn::testing::through_fused_kernel(fast, q) == (l == 49));
    CHECK_FALSE(torchattn::testing::through_fused_kernel(math, q));
  }
  {
    torchattn::testing::AlwaysFused fused;
    auto q = torch::randn({2, 48, 8}, torch::kDouble).requires_grad_();
    auto [out, none] = F::scaled_dot_product_attention(q, q, q);
    CHECK(torchattn::testing::through_fused_kernel(out, q));
  }
}

TEST_CASE("leading dims broadcast between query, key and value", "[nn][shapes]") {
  torch::manual_seed(3);
  for (auto& m : all_modules(4, 1, torch::kDouble)) {
    DYNAMIC_SECTION(m.name) {
      auto q = torch::randn({2, 3, 5, 4}, torch::kDouble);
      auto k = torch::randn({1, 3, 7, 4}, torch::kDouble);
      auto v = torch::randn({7, 6}, torch::kDouble);
      auto [out, w] = m(q, k, v);
      CHECK(out.sizes() == torch::IntArrayRef({2, 3, 5, 6}));
      CHECK(w.sizes() == torch::IntArrayRef({2, 3, 5, 7}));
      auto [ref, wref] = m(q, k.expand({2, 3, 7, 4}), v.expand({2, 3, 7, 6}));
      CHECK_THAT(out, AllClose(ref, 1e-12, 1e-12));
    }
  }
}

TEST_CASE("dropout applies to the weights in training mode only", "[nn][dropout]") {
  for (auto& m : all_modules(4, 1, torch::kDouble, /*dropout=*/0.5)) {
    DYNAMIC_SECTION(m.name) {
      torch::manual_seed(4);
      auto q = torch::randn({2, 8, 4}, torch::kDouble);
      auto k = torch::randn({2, 9, 4}, torch::kDouble);
      auto v = torch::randn({2, 9, 3}, torch::kDouble);
      m.module.ptr()->eval();
      auto [eval_out, eval_w] = m(q, k, v);
      auto [eval_out2, eval_w2] = m(q, k, v);
      CHECK(torch::equal(eval_out, eval_out2));

      m.module.ptr()->train();
      auto [out, w] = m(q, k, v);
      // Each weight is either dropped or scaled by 1 / (1 - p) = 2, and the output is the
      // weighted sum with the weights returned.
      auto dropped = w.eq(0);
      CHECK(dropped.any().item<bool>());
      CHECK(dropped.logical_not().any().item<bool>());
      CHECK_THAT(
          w, AllClose(torch::where(dropped, torch::zeros_like(w), 2 * eval_w), 1e-12, 1e-12));
      CHECK_THAT(out, AllClose(w.matmul(v), 1e-12, 1e-12));
    }
  }
}

TEST_CASE("weights are returned only when asked for", "[nn]") {
  torchattn::testing::AlwaysFused fused;
  auto q = torch::randn({2, 3, 4});
  torchattn::nn::ScaledDotProductAttention attn;
  auto [out, w] = attn(q, q, q);
  CHECK(out.defined());
  CHECK_FALSE(w.defined());
  // With weights the math path runs; without, the fused kernel: equal to rounding.
  auto [out2, w2] = attn->forward(q, q, q, {}, {}, /*need_weights=*/true);
  CHECK(w2.sizes() == torch::IntArrayRef({2, 3, 3}));
  CHECK_THAT(out2, AllClose(out, 1e-6, 1e-6));
}

TEST_CASE(
    "empty key sequences give zeros and empty query sequences give empty outputs", "[nn][shapes]") {
  for (auto& m : all_modules(4, 1, torch::kFloat)) {
    DYNAMIC_SECTION(m.name) {
      auto q = torch::randn({2, 3, 4}, torch::requires_grad());
      auto [out, w] = m(q, torch::randn({2, 0, 4}), torch::randn({2, 0, 5}));
      CHECK(out.sizes() == torch::IntArrayRef({2, 3, 5}));
      CHECK(out.abs().sum().item<double>() == 0.0);
      out.sum().backward();
      CHECK(torch::isfinite(q.grad()).all().item<bool>());
      auto [out2, w2] =
          m(torch::randn({2, 0, 4}), torch::randn({2, 6, 4}), torch::randn({2, 6, 5}));
      CHECK(out2.sizes() == torch::IntArrayRef({2, 0, 5}));
    }
  }
}

TEST_CASE("CosineAttention is safe for zero vectors and clamps its temperature", "[nn][cosine]") {
  torchattn::nn::CosineAttention attn(torchattn::nn::CosineAttentionOptions()
                                          .temperature(10)
                                          .learnable(true)
                                          .num_heads(2)
                                          .max_temperature(20));
  attn->to(torch::kDouble);
  {
    // As if training had pushed τ to 50, past the clamp.
    torch::NoGradGuard no_grad;
    attn->logit_scale.fill_(std::log(50.0));
  }
  auto q = torch::randn({1, 2, 3, 4}, torch::kDouble).requires_grad_(true);
  auto k = torch::zeros({1, 2, 5, 4}, torch::kDouble).requires_grad_(true);
  auto v = torch::randn({1, 2, 5, 4}, torch::kDouble);
  auto [out, w] = attn->forward(q, k, v, {}, {}, /*need_weights=*/true);
  // All cosines are 0, so the weights are uniform.
  CHECK_THAT(w, AllClose(torch::full_like(w, 0.2), 1e-12, 0));
  (out.sum() + (w * torch::randn_like(w)).sum()).backward();
  CHECK(torch::isfinite(q.grad()).all().item<bool>());
  CHECK(torch::isfinite(k.grad()).all().item<bool>());
  // τ = min(50, 20) = 20; the clamp stops the gradient into logit_scale.
  CHECK_THAT(attn->temperature(), AllClose(torch::full({2, 1, 1}, 20.0, torch::kDouble), 1e-12, 0));
  CHECK(attn->logit_scale.grad().abs().max().item<double>() == 0.0);
}
