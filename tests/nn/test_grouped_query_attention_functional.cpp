// functional::grouped_query_attention, the attention core of GroupedQueryAttention: each of its
// routes (decoding kernel, tiled kernel for gradients, flex with a padding mask) against the
// formula in float64, and bad input.

#include <torchattn/torchattn.h>

#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;

/// softmax(q k^T scale + mask) v by the formula, float64: query i of row b at position
/// start[b] + i sees key j < len[b] with (causal) j <= position and (window w > 0)
/// j > position - w, and not padded; a query that sees none gets zeros.
torch::Tensor formula(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& len, const torch::Tensor& start, bool causal, int64_t window,
    const torch::Tensor& padding) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2);
  const int64_t group = H / k.size(1);
  auto kk = k.repeat_interleave(group, 1), vv = v.repeat_interleave(group, 1);
  auto scores = torch::matmul(q, kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  auto j = torch::arange(Lk, torch::kLong).view({1, 1, Lk});
  auto pos = (start.view({B, 1, 1}) + torch::arange(Lq, torch::kLong).view({1, Lq, 1}));
  auto allowed = j.lt(len.view({B, 1, 1})).expand({B, Lq, Lk});
  if (causal) {
    allowed = allowed.logical_and(j.le(pos));
  }
  if (window > 0) {
    allowed = allowed.logical_and(j.gt(pos - window));
  }
  if (padding.defined()) {
    allowed = allowed.logical_and(padding.logical_not().view({B, 1, Lk}));
  }
  allowed = allowed.unsqueeze(1); // [B, 1, Lq, Lk]
  auto w = torch::softmax(scores.masked_fill(allowed.logical_not(), -INFINITY), -1);
  w = w.masked_fill(allowed.logical_not(), 0.0).nan_to_num(0.0);
  return torch::matmul(w, vv);
}

} // namespace

TEST_CASE("grouped_query_attention with a cache equals the formula", "[nn][gqa][functional]") {
  torch::manual_seed(3);
  const auto opts = torch::dtype(torch::kDouble);
  auto q = torch::randn({3, 8, 4, 16}, opts), k = torch::randn({3, 2, 40, 16}, opts);
  auto v = torch::randn({3, 2, 40, 16}, opts);
  auto len = torch::tensor({40, 23, 4}, torch::kLong),
       start = torch::tensor({36, 10, 0}, torch::kLong);
  for (int64_t window : {-1, 1, 7}) {
    for (bool causal : {true, false}) {
      CAPTURE(window, causal);
      const auto o = F::GroupedQueryAttentionFuncOptions()
                         .is_causal(causal)
                         .sliding_window(window)
                         .kv_lengths(len)
                         .q_start(start);
      auto expected = formula(q, k, v, len, start, causal, window, {});
      // The decoding kernel (no gradient) and the tiled kernel (a gradient needed).
      CHECK_THAT(F::grouped_query_attention(q, k, v, o), AllClose(expected, 1e-12, 1e-12));
      auto qg = q.clone().requires_grad_();
      auto out = F::grouped_query_attention(qg, k, v, o);
      CHECK_THAT(out.detach(), AllClose(expected, 1e-12, 1e-12));
      out.sum().backward();
      auto qe = q.clone().requires_grad_();
      formula(qe, k, v, len, start, causal, window, {}).sum().backward();
      CHECK_THAT(qg.grad(), AllClose(qe.grad(), 1e-10, 1e-10));
    }
  }
}

TEST_CASE(
    "grouped_query_attention without a cache aligns queries with the last keys",
    "[nn][gqa][functional]") {
  torch::manual_seed(4);
  const auto opts = torch::dtype(torch::kDouble);
  auto q = torch::randn({2, 4, 5, 8}, opts).requires_grad_();
  auto k = torch::randn({2, 1, 12, 8}, opts).requires_grad_();
  auto v = torch::randn({2, 1, 12, 8}, opts).requires_grad_();
  auto padding = torch::zeros({2, 12}, torch::kBool);
  padding.index_put_({1, torch::indexing::Slice(0, 9)}, true); // row 1's first 9 keys
  auto len = torch::full({2}, 12, torch::kLong), start = torch::full({2}, 7, torch::kLong);
  for (int64_t window : {-1, 3}) {
    CAPTURE(window);
    const auto o = F::GroupedQueryAttentionFuncOptions().sliding_window(window);
    auto out = F::grouped_query_attention(
        q, k, v, F::GroupedQueryAttentionFuncOptions(o).key_padding_mask(padding));
    auto expected = formula(q, k, v, len, start, true, window, padding);
    CHECK_THAT(out.detach(), AllClose(expected.detach(), 1e-12, 1e-12));
    auto grads = torch::autograd::grad({out.sum()}, {q, k, v});
    auto expected_grads = torch::autograd::grad({expected.sum()}, {q, k, v});
    for (size_t i = 0; i < grads.size(); ++i) {
      CHECK_THAT(grads[i], AllClose(expected_grads[i], 1e-10, 1e-10));
    }
    // Without padding, the same as the cache route with the default alignment.
    CHECK_THAT(
        F::grouped_query_attention(q, k, v, o).detach(),
        AllClose(
            F::grouped_query_attention(
                q, k, v, F::GroupedQueryAttentionFuncOptions(o).kv_lengths(len))
                .detach(),
            1e-12, 1e-12));
  }
}

TEST_CASE("grouped_query_attention rejects bad input", "[nn][gqa][functional]") {
  auto q = torch::randn({2, 4, 1, 8}), k = torch::randn({2, 2, 6, 8});
  CHECK_THROWS_WITH(
      F::grouped_query_attention(
          q, k, k,
          F::GroupedQueryAttentionFuncOptions()
              .key_padding_mask(torch::zeros({2, 6}, torch::kBool))
              .kv_lengths(torch::full({2}, 6, torch::kLong))),
      ContainsSubstring("key_padding_mask with kv_lengths or q_start, expected one of them"));
  CHECK_THROWS_WITH(
      F::grouped_query_attention(q, k, k, F::GroupedQueryAttentionFuncOptions().sliding_window(0)),
      ContainsSubstring("sliding_window is 0, expected -1 (none) or a count > 0"));
  CHECK_THROWS_WITH(
      F::grouped_query_attention(
          q, k, k,
          F::GroupedQueryAttentionFuncOptions().key_padding_mask(
              torch::zeros({2, 5}, torch::kBool))),
      ContainsSubstring("key_padding_mask has shape [2, 5] Bool, expected Bool [2, 6]"));
}
