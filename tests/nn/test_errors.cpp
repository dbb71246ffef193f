// Every bad-input path fails with a c10::Error naming the function, the argument, what was
// expected and what came.

#include <torchattn/torchattn.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/version.h>

#include <string>

namespace {

namespace F = torchattn::nn::functional;
namespace tnn = torchattn::nn;
using Catch::Matchers::ContainsSubstring;

torch::Tensor randn(torch::IntArrayRef shape, torch::ScalarType dtype = torch::kFloat) {
  return torch::randn(shape, torch::TensorOptions().dtype(dtype));
}

} // namespace

TEST_CASE("query, key and value are validated", "[nn][errors]") {
  auto q = randn({2, 3, 4, 8}), k = randn({2, 3, 5, 8}), v = randn({2, 3, 5, 6});
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(torch::Tensor(), k, v),
      ContainsSubstring(
          "scaled_dot_product_attention: query is undefined, expected a tensor [..., Lq, E]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, randn({8}), v),
      ContainsSubstring(
          "scaled_dot_product_attention: key has 1 dims [8], expected at least 2 [..., Lk, E]"));
  CHECK_THROWS_WITH(
      F::dot_product_attention(q.to(torch::kInt), k, v),
      ContainsSubstring("dot_product_attention: query has dtype Int, expected a floating dtype"));
  CHECK_THROWS_WITH(
      F::dot_product_attention(q, k.to(torch::kDouble), v),
      ContainsSubstring("dot_product_attention: key has dtype Double, expected Float like query"));
  CHECK_THROWS_WITH(
      F::dot_product_attention(q, k, torch::empty({2, 3, 5, 6}, torch::kMeta)),
      ContainsSubstring("dot_product_attention: value is on meta, expected cpu like query"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, randn({2, 3, 5, 7}), v),
      ContainsSubstring("scaled_dot_product_attention: key has E=7 (shape [2, 3, 5, 7]), expected "
                        "8 like query [2, 3, 4, 8]"));
  CHECK_THROWS_WITH(
      F::cosine_attention(q, k, randn({2, 3, 6, 6})),
      ContainsSubstring("cosine_attention: value has Lk=6 (shape [2, 3, 6, 6]), expected 5 like "
                        "key [2, 3, 5, 8]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, randn({3, 3, 5, 8}), v),
      ContainsSubstring("scaled_dot_product_attention: the leading dims of query [2, 3, 4, 8] and "
                        "key [3, 3, 5, 8] do not broadcast (2 vs 3)"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, randn({4, 5, 6})),
      ContainsSubstring("the leading dims of query and key [2, 3] and value [4, 5, 6] do not "
                        "broadcast (3 vs 4)"));
}

TEST_CASE("masks are validated", "[nn][errors]") {
  auto q = randn({2, 3, 4, 8}), k = randn({2, 3, 5, 8}), v = randn({2, 3, 5, 6});
  using Opts = F::ScaledDotProductAttentionFuncOptions;
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, v, Opts().attn_mask(torch::ones({4, 5}, torch::kInt))),
      ContainsSubstring("scaled_dot_product_attention: attn_mask has dtype Int, expected Bool or "
                        "Float like query"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().attn_mask(torch::ones({4, 5}, torch::kDouble))),
      ContainsSubstring("attn_mask has dtype Double, expected Bool or Float like query"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, v, Opts().attn_mask(torch::ones({5, 4}, torch::kBool))),
      ContainsSubstring("scaled_dot_product_attention: attn_mask has shape [5, 4], expected a "
                        "shape broadcastable to the scores [2, 3, 4, 5] [..., Lq, Lk]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().attn_mask(torch::ones({1, 2, 3, 4, 5}, torch::kBool))),
      ContainsSubstring("attn_mask has shape [1, 2, 3, 4, 5], expected a shape broadcastable to "
                        "the scores [2, 3, 4, 5]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v,
          Opts().attn_mask(
              torch::ones({4, 5}, torch::TensorOptions(torch::kMeta).dtype(torch::kBool)))),
      ContainsSubstring("attn_mask is on meta, expected cpu like query"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().key_padding_mask(torch::zeros({2, 4}, torch::kBool))),
      ContainsSubstring("scaled_dot_product_attention: key_padding_mask has shape [2, 4], expected "
                        "[5] [Lk] or [2, 5] [B, Lk] for scores [2, 3, 4, 5]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().key_padding_mask(torch::zeros({3, 5}, torch::kBool))),
      ContainsSubstring("key_padding_mask has shape [3, 5], expected [5] [Lk] or [2, 5] [B, Lk]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          randn({4, 8}), randn({5, 8}), randn({5, 6}),
          Opts().key_padding_mask(torch::zeros({1, 5}, torch::kBool))),
      ContainsSubstring("key_padding_mask has shape [1, 5], expected [5] [Lk] for scores [4, 5]"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().key_padding_mask(torch::zeros({2, 5}, torch::kLong))),
      ContainsSubstring("key_padding_mask has dtype Long, expected Bool or Float like query"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, v, Opts().dropout_p(1.0)),
      ContainsSubstring(
          "scaled_dot_product_attention: dropout_p is 1, expected a probability in [0, 1)"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, v, Opts().dropout_p(-0.1)),
      ContainsSubstring("dropout_p is -0.1, expected a probability in [0, 1)"));
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(
          q, k, v, Opts().scale(std::numeric_limits<double>::infinity())),
      ContainsSubstring("scaled_dot_product_attention: scale is inf, expected a finite number"));
}

TEST_CASE("score-function parameters are validated", "[nn][errors]") {
  auto q = randn({2, 4, 8}), k = randn({2, 5, 7}), v = randn({2, 5, 6});
  auto wq = randn({10, 8}), wk = randn({10, 7}), wv = randn({1, 10});
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, randn({10}), wk, wv),
      ContainsSubstring(
          "additive_attention: query_weight has shape [10], expected 2 dims [D, Eq]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, torch::Tensor(), wk, wv),
      ContainsSubstring(
          "additive_attention: query_weight has shape undefined, expected 2 dims [D, Eq]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, randn({10, 7}), wk, wv),
      ContainsSubstring("additive_attention: query has 8 features (shape [2, 4, 8]), expected 7, "
                        "dim 1 of query_weight [10, 7] [D, Eq]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, wq, randn({10, 8}), wv),
      ContainsSubstring("additive_attention: key has 7 features (shape [2, 5, 7]), expected 8, dim "
                        "1 of key_weight [10, 8] [D, Ek]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, wq, randn({9, 7}), wv),
      ContainsSubstring(
          "additive_attention: key_weight has shape [9, 7], expected [10, 7] [D, Ek]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, wq, wk, randn({10})),
      ContainsSubstring(
          "additive_attention: score_weight has shape [10], expected [1, 10] [1, D]"));
  CHECK_THROWS_WITH(
      F::additive_attention(q, k, v, wq, wk, wv.to(torch::kDouble)),
      ContainsSubstring(
          "additive_attention: score_weight has dtype Double, expected Float like query"));
  CHECK_THROWS_WITH(
      F::additive_attention(
          q, k, v, wq, wk, wv, F::AdditiveAttentionFuncOptions().query_bias(randn({9}))),
      ContainsSubstring("additive_attention: query_bias has shape [9], expected [10] [D]"));
  CHECK_THROWS_WITH(
      F::additive_attention(
          q, k, v, wq, wk, wv, F::AdditiveAttentionFuncOptions().key_bias(randn({1, 10}))),
      ContainsSubstring("additive_attention: key_bias has shape [1, 10], expected [10] [D]"));
  CHECK_THROWS_WITH(
      F::additive_attention(
          q, k, v, wq, wk, wv, F::AdditiveAttentionFuncOptions().score_bias(randn({2}))),
      ContainsSubstring("additive_attention: score_bias has shape [2], expected [1] [1]"));
  CHECK_THROWS_WITH(
      F::general_attention(q, k, v, randn({7, 8})),
      ContainsSubstring("general_attention: query has 8 features (shape [2, 4, 8]), expected 7, "
                        "dim 0 of weight [7, 8] [Eq, Ek]"));
  CHECK_THROWS_WITH(
      F::general_attention(q, k, v, randn({8, 5})),
      ContainsSubstring("general_attention: key has 7 features (shape [2, 5, 7]), expected 5, dim "
                        "1 of weight [8, 5] [Eq, Ek]"));
  CHECK_THROWS_WITH(
      F::general_attention(q, k, v, torch::Tensor()),
      ContainsSubstring("general_attention: weight has shape undefined, expected 2 dims [Eq, Ek]"));

  auto qh = randn({2, 3, 4, 8}), kh = randn({2, 3, 5, 8}), vh = randn({2, 3, 5, 6});
  using Cos = F::CosineAttentionFuncOptions;
  CHECK_THROWS_WITH(
      F::cosine_attention(qh, kh, vh, Cos().temperature(randn({4, 1, 1}))),
      ContainsSubstring("cosine_attention: temperature has shape [4, 1, 1], expected a shape "
                        "broadcastable to the scores [2, 3, 4, 5]"));
  CHECK_THROWS_WITH(
      F::cosine_attention(qh, kh, vh, Cos().temperature(randn({3, 1, 1}, torch::kDouble))),
      ContainsSubstring(
          "cosine_attention: temperature has dtype Double, expected Float like query"));
  CHECK_THROWS_WITH(
      F::cosine_attention(qh, kh, vh, Cos().temperature(torch::ones({3, 1, 1}, torch::kMeta))),
      ContainsSubstring("cosine_attention: temperature is on meta, expected cpu like query"));
  CHECK_THROWS_WITH(
      F::cosine_attention(qh, kh, vh, Cos().eps(0)),
      ContainsSubstring("cosine_attention: eps is 0, expected a positive number"));
}

TEST_CASE("module options are validated in reset()", "[nn][errors]") {
  CHECK_THROWS_WITH(
      tnn::DotProductAttention(tnn::DotProductAttentionOptions().dropout(1.5)),
      ContainsSubstring(
          "torchattn::nn::DotProductAttention: dropout is 1.5, expected a probability in [0, 1)"));
  CHECK_THROWS_WITH(
      tnn::ScaledDotProductAttention(tnn::ScaledDotProductAttentionOptions().dropout(-1)),
      ContainsSubstring("torchattn::nn::ScaledDotProductAttention: dropout is -1"));
  CHECK_THROWS_WITH(
      tnn::ScaledDotProductAttention(tnn::ScaledDotProductAttentionOptions().scale(std::nan(""))),
      ContainsSubstring(
          "torchattn::nn::ScaledDotProductAttention: scale is nan, expected a finite number"));
  CHECK_THROWS_WITH(
      tnn::CosineAttention(tnn::CosineAttentionOptions().temperature(0)),
      ContainsSubstring(
          "torchattn::nn::CosineAttention: temperature is 0, expected a positive finite number"));
  CHECK_THROWS_WITH(
      tnn::CosineAttention(tnn::CosineAttentionOptions().num_heads(0)),
      ContainsSubstring("torchattn::nn::CosineAttention: num_heads is 0, expected at least 1"));
  CHECK_THROWS_WITH(
      tnn::CosineAttention(tnn::CosineAttentionOptions().eps(-1)),
      ContainsSubstring("torchattn::nn::CosineAttention: eps is -1, expected a positive number"));
  CHECK_THROWS_WITH(
      tnn::CosineAttention(tnn::CosineAttentionOptions().temperature(10).max_temperature(5)),
      ContainsSubstring("torchattn::nn::CosineAttention: max_temperature is 5, expected at least "
                        "temperature (10)"));
  CHECK_THROWS_WITH(
      tnn::CosineAttention(tnn::CosineAttentionOptions().dropout(2)),
      ContainsSubstring("torchattn::nn::CosineAttention: dropout is 2"));
  CHECK_THROWS_WITH(
      tnn::AdditiveAttention(0, 4, 4),
      ContainsSubstring("torchattn::nn::AdditiveAttention: query_dim is 0, expected > 0"));
  CHECK_THROWS_WITH(
      tnn::AdditiveAttention(4, -1, 4),
      ContainsSubstring("torchattn::nn::AdditiveAttention: key_dim is -1, expected > 0"));
  CHECK_THROWS_WITH(
      tnn::AdditiveAttention(4, 4, 0),
      ContainsSubstring("torchattn::nn::AdditiveAttention: hidden_dim is 0, expected > 0"));
  CHECK_THROWS_WITH(
      tnn::AdditiveAttention(tnn::AdditiveAttentionOptions(4, 4, 4).dropout(1)),
      ContainsSubstring("torchattn::nn::AdditiveAttention: dropout is 1"));
  CHECK_THROWS_WITH(
      tnn::GeneralAttention(0, 4),
      ContainsSubstring("torchattn::nn::GeneralAttention: query_dim is 0, expected > 0"));
  CHECK_THROWS_WITH(
      tnn::GeneralAttention(4, 0),
      ContainsSubstring("torchattn::nn::GeneralAttention: key_dim is 0, expected > 0"));
  CHECK_THROWS_WITH(
      tnn::GeneralAttention(tnn::GeneralAttentionOptions(4).dropout(1)),
      ContainsSubstring("torchattn::nn::GeneralAttention: dropout is 1"));
}

TEST_CASE("modules report input errors from their functional", "[nn][errors]") {
  // The input is named with the size the module expects, not the parameter it meets.
  tnn::AdditiveAttention additive(8, 7, 10);
  CHECK_THROWS_WITH(
      additive(randn({2, 4, 8}), randn({2, 5, 8}), randn({2, 5, 3})),
      ContainsSubstring("additive_attention: key has 8 features (shape [2, 5, 8]), expected 7, dim "
                        "1 of key_weight [10, 7] [D, Ek]"));
  tnn::AdditiveAttention additive2(32, 16, 24);
  CHECK_THROWS_WITH(
      additive2(randn({2, 4, 16}), randn({2, 5, 16}), randn({2, 5, 3})),
      ContainsSubstring("additive_attention: query has 16 features (shape [2, 4, 16]), expected "
                        "32, dim 1 of query_weight [24, 32] [D, Eq]"));
  tnn::GeneralAttention general(8, 7);
  CHECK_THROWS_WITH(
      general(randn({2, 4, 8}), randn({2, 5, 9}), randn({2, 5, 3})),
      ContainsSubstring("general_attention: key has 9 features (shape [2, 5, 9]), expected 7, dim "
                        "1 of weight [8, 7] [Eq, Ek]"));
  CHECK_THROWS_WITH(
      general(
          randn({2, 4, 8}, torch::kDouble), randn({2, 5, 7}, torch::kDouble),
          randn({2, 5, 3}, torch::kDouble)),
      ContainsSubstring("general_attention: weight has dtype Float, expected Double like query"));
  tnn::CosineAttention cosine(tnn::CosineAttentionOptions().num_heads(4));
  CHECK_THROWS_WITH(
      cosine(randn({2, 3, 4, 8}), randn({2, 3, 5, 8}), randn({2, 3, 5, 3})),
      ContainsSubstring("cosine_attention: temperature has shape [4, 1, 1], expected a shape "
                        "broadcastable to the scores [2, 3, 4, 5]"));
}

TEST_CASE("the default scale of an empty head dim is an error that says so", "[nn][errors]") {
  auto q = randn({1, 1, 3, 0}), k = randn({1, 1, 4, 0}), v = randn({1, 1, 4, 2});
  const std::string why =
      "query has E=0 (shape [1, 1, 3, 0]), so the default scale 1/sqrt(E) is infinite; pass a "
      "finite scale or E >= 1";
  CHECK_THROWS_WITH(
      F::scaled_dot_product_attention(q, k, v),
      ContainsSubstring("scaled_dot_product_attention: " + why));
  CHECK_THROWS_WITH(
      torchattn::ops::scaled_dot_product_attention(q, k, v),
      ContainsSubstring("torchattn::scaled_dot_product_attention: " + why));
  // With a scale, E = 0 is well defined: every score is 0, every key weighs the same.
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, false, 1.0);
  CHECK(torch::allclose(out, v.mean(2, /*keepdim=*/true).expand({1, 1, 3, 2})));
  auto out_f = std::get<0>(F::scaled_dot_product_attention(
      q, k, v, F::ScaledDotProductAttentionFuncOptions().scale(1.0)));
  CHECK(torch::allclose(out_f, out));
}

TEST_CASE("half inputs run on the CPU math path", "[nn]") {
  // LibTorch 1.x has no CPU Half matmul or softmax: the math path computes those in float32
  // and rounds each result to Half, as LibTorch 2.x's Half kernels do.
  auto q = randn({2, 4, 8});
  auto out = std::get<0>(
      F::scaled_dot_product_attention(q.to(torch::kHalf), q.to(torch::kHalf), q.to(torch::kHalf)));
  CHECK(out.scalar_type() == torch::kHalf);
  CHECK(torch::allclose(
      out.to(torch::kFloat), std::get<0>(F::scaled_dot_product_attention(q, q, q)), 1e-2, 1e-2));
  const auto h = q.to(torch::kHalf);
  auto dot = std::get<0>(
      F::dot_product_attention(h, h, h, F::DotProductAttentionFuncOptions().need_weights(true)));
  CHECK(dot.scalar_type() == torch::kHalf);
  CHECK(torch::allclose(
      dot.to(torch::kFloat), std::get<0>(F::dot_product_attention(q, q, q)), 1e-2, 1e-2));
}
