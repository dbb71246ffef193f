// Every op's kernels per dispatch key: the Meta (shape-only) kernels give the CPU kernels'
// shapes and errors without touching data, the forward op is differentiable through its
// autograd kernel, and the public op routes through the fused forward op.

#include <torchattn/torchattn.h>

#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <string>

namespace {

using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;

/// The message of the error `fn` throws, without the backtrace; "" when it does not throw.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

torch::TensorOptions on(const char* device, torch::ScalarType dtype = torch::kFloat) {
  return torch::TensorOptions().device(torch::Device(device)).dtype(dtype);
}

} // namespace

TEST_CASE("Meta kernels give the CPU kernels' shapes", "[ops][meta]") {
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    auto m = on("meta", dtype);
    auto q = torch::empty({2, 3, 5, 8}, m), k = torch::empty({2, 3, 7, 8}, m);
    auto v = torch::empty({2, 3, 7, 4}, m);
    auto mask = torch::empty({5, 7}, m.dtype(torch::kBool));
    auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, mask);
    CHECK(out.device().is_meta());
    CHECK(out.sizes() == torch::IntArrayRef({2, 3, 5, 4}));
    CHECK(out.scalar_type() == dtype);

    auto [o, row_max, row_log_sum] =
        torchattn::ops::_scaled_dot_product_attention_forward(q, k, v, mask, true, 0.5);
    CHECK(o.sizes() == torch::IntArrayRef({2, 3, 5, 4}));
    CHECK(row_max.sizes() == torch::IntArrayRef({2, 3, 5}));
    CHECK(row_log_sum.sizes() == torch::IntArrayRef({2, 3, 5}));
    CHECK(row_log_sum.device().is_meta());

    auto [gq, gk, gv] = torchattn::ops::_scaled_dot_product_attention_backward(
        torch::empty({2, 3, 5, 4}, m), q, k, v, mask, o, row_max, row_log_sum, true, 0.5);
    CHECK(gq.sizes() == q.sizes());
    CHECK(gk.sizes() == k.sizes());
    CHECK(gv.sizes() == v.sizes());
    CHECK(gv.device().is_meta());

    auto aq = torch::empty({4, 6, 16}, m), ak = torch::empty({4, 9, 16}, m);
    auto w = torch::empty({16}, m);
    auto scores = torchattn::ops::additive_attention_scores(aq, ak, w);
    CHECK(scores.sizes() == torch::IntArrayRef({4, 6, 9}));
    auto [agq, agk, agw] =
        torchattn::ops::_additive_attention_scores_backward(torch::empty({4, 6, 9}, m), aq, ak, w);
    CHECK(agq.sizes() == aq.sizes());
    CHECK(agk.sizes() == ak.sizes());
    CHECK(agw.sizes() == w.sizes());
  }
}

TEST_CASE("Meta kernels refuse what the CPU kernels refuse, in the same words", "[ops][meta]") {
  // Each bad call once on CPU and once on Meta: the messages match.
  auto both = [](auto&& make) {
    const auto cpu = error_of([&] { make("cpu"); });
    const auto meta = error_of([&] { make("meta"); });
    CHECK_FALSE(cpu.empty());
    CHECK(cpu == meta);
  };
  both([](const char* d) { // key's E differs from query's
    torchattn::ops::_scaled_dot_product_attention_forward(
        torch::zeros({1, 2, 3, 4}, on(d)), torch::zeros({1, 2, 3, 5}, on(d)),
        torch::zeros({1, 2, 3, 4}, on(d)), {}, false, 1.0);
  });
  both([](const char* d) { // a mask that does not broadcast
    torchattn::ops::_scaled_dot_product_attention_forward(
        torch::zeros({1, 2, 3, 4}, on(d)), torch::zeros({1, 2, 6, 4}, on(d)),
        torch::zeros({1, 2, 6, 4}, on(d)), torch::zeros({4, 6}, on(d, torch::kBool)), false, 1.0);
  });
  both([](const char* d) { // statistics of the wrong shape
    auto q = torch::zeros({1, 2, 3, 4}, on(d));
    torchattn::ops::_scaled_dot_product_attention_backward(
        q, q, q, q, {}, q, torch::zeros({1, 2, 4}, on(d)), torch::zeros({1, 2, 3}, on(d)), false,
        1.0);
  });
  both([](const char* d) { // score_weight of the wrong length
    torchattn::ops::additive_attention_scores(
        torch::zeros({2, 3, 8}, on(d)), torch::zeros({2, 5, 8}, on(d)), torch::zeros({7}, on(d)));
  });
  both([](const char* d) { // grad_scores of the wrong shape
    torchattn::ops::_additive_attention_scores_backward(
        torch::zeros({2, 3, 4}, on(d)), torch::zeros({2, 3, 8}, on(d)),
        torch::zeros({2, 5, 8}, on(d)), torch::zeros({8}, on(d)));
  });
  CHECK_THAT(
      error_of([] {
        torchattn::ops::additive_attention_scores(
            torch::zeros({2, 3, 8}, on("meta")), torch::zeros({2, 5, 8}, on("meta")),
            torch::zeros({7}, on("meta")));
      }),
      ContainsSubstring(
          "torchattn::additive_attention_scores: score_weight has shape [7], expected [8] [D]"));
}

TEST_CASE("the forward op is differentiable, with the public op's gradients", "[ops][autograd]") {
  torch::manual_seed(3);
  auto q = torch::randn({2, 2, 70, 16}, torch::kDouble).requires_grad_();
  auto k = torch::randn({2, 2, 90, 16}, torch::kDouble).requires_grad_();
  auto v = torch::randn({2, 2, 90, 8}, torch::kDouble).requires_grad_();
  auto mask = torch::rand({70, 90}).gt(0.3);
  auto g = torch::randn({2, 2, 70, 8}, torch::kDouble);

  auto [out, row_max, row_log_sum] =
      torchattn::ops::_scaled_dot_product_attention_forward(q, k, v, mask, true, 0.25);
  CHECK_FALSE(row_max.requires_grad());
  CHECK_FALSE(row_log_sum.requires_grad());
  auto grads = torch::autograd::grad({out}, {q, k, v}, {g});

  auto want = torchattn::ops::scaled_dot_product_attention(q, k, v, mask, 0.0, true, 0.25);
  auto want_grads = torch::autograd::grad({want}, {q, k, v}, {g});
  CHECK_THAT(out, AllClose(want.detach(), 0.0, 0.0));
  for (int i = 0; i < 3; ++i) {
    CHECK_THAT(grads[i], AllClose(want_grads[i], 0.0, 0.0));
  }
  // Both share the autograd kernel: the gradients against the math path too (need_weights
  // takes it), so that a fault in that kernel cannot hide behind the comparison above.
  namespace F = torchattn::nn::functional;
  auto math = std::get<0>(F::scaled_dot_product_attention(
      q, k, v,
      F::ScaledDotProductAttentionFuncOptions()
          .attn_mask(mask)
          .is_causal(true)
          .scale(0.25)
          .need_weights(true)));
  auto math_grads = torch::autograd::grad({math}, {q, k, v}, {g});
  for (int i = 0; i < 3; ++i) {
    CHECK_THAT(grads[i], AllClose(math_grads[i], 1e-10, 1e-10));
  }
  // The statistics are the row's logsumexp, apart: against the math path's.
  auto s = (q.detach() * 0.25)
               .matmul(k.detach().transpose(-2, -1))
               .masked_fill(mask.logical_not(), -INFINITY)
               .masked_fill(torch::ones({70, 90}, torch::kBool).triu(1), -INFINITY);
  auto lse = torch::logsumexp(s, -1);
  auto alive = lse.isfinite();
  CHECK_THAT(
      (row_max + row_log_sum).masked_select(alive),
      AllClose(lse.masked_select(alive), 1e-12, 1e-12));
}

TEST_CASE("the forward op refuses a mask that requires grad", "[ops][autograd]") {
  auto q = torch::randn({1, 1, 4, 8}, torch::kDouble).requires_grad_();
  auto mask = torch::zeros({4, 4}, torch::kDouble).requires_grad_();
  CHECK_THAT(
      error_of([&] {
        torchattn::ops::_scaled_dot_product_attention_forward(q, q, q, mask, false, 1.0);
      }),
      ContainsSubstring("_scaled_dot_product_attention_forward: attn_mask requires grad"));
  // The public op takes the math path for it, and the mask gets its gradient.
  auto out = torchattn::ops::scaled_dot_product_attention(q, q, q, mask);
  out.sum().backward();
  REQUIRE(mask.grad().defined());
}
