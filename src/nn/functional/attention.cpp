#include <torchattn/nn/functional/attention.h>

#include "detail/attention_core.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn::functional {

using detail::MaskArgs;

std::tuple<torch::Tensor, torch::Tensor> dot_product_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const DotProductAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  const auto masks = MaskArgs::from(options);
  detail::check_inputs("dot_product_attention", query, key, value, masks, /*same_qk_dim=*/true);
  return detail::attend(query.matmul(key.transpose(-2, -1)), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> scaled_dot_product_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const ScaledDotProductAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  constexpr const char* fn = "scaled_dot_product_attention";
  const auto masks = MaskArgs::from(options);
  detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/true);
  const double scale = options.scale().has_value()
      ? *options.scale()
      : 1.0 / std::sqrt(static_cast<double>(query.size(-1)));
  TORCH_CHECK(std::isfinite(scale), fn, ": scale is ", scale, ", expected a finite number");
  // Scaling q (Lq x E) costs less than scaling the scores (Lq x Lk).
  return detail::attend((query * scale).matmul(key.transpose(-2, -1)), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> cosine_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const CosineAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  constexpr const char* fn = "cosine_attention";
  const auto masks = MaskArgs::from(options);
  const auto scores_shape = detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/true);
  TORCH_CHECK(options.eps() > 0.0, fn, ": eps is ", options.eps(), ", expected a positive number");
  const auto& tau = options.temperature();
  if (tau.defined()) {
    TORCH_CHECK(
        tau.scalar_type() == query.scalar_type(), fn, ": temperature has dtype ",
        tau.scalar_type(), ", expected ", query.scalar_type(), " like query");
    TORCH_CHECK(
        tau.device() == query.device(), fn, ": temperature is on ", tau.device(), ", expected ",
        query.device(), " like query");
    TORCH_CHECK(
        detail::broadcastable(tau.sizes(), scores_shape), fn, ": temperature has shape ",
        detail::shape_str(tau.sizes()), ", expected a shape broadcastable to the scores ",
        detail::shape_str(scores_shape), " (e.g. [H, 1, 1] for heads at dim -3)");
  }
  namespace tnf = torch::nn::functional;
  const auto norm = tnf::NormalizeFuncOptions().p(2).dim(-1).eps(options.eps());
  auto scores = tnf::normalize(query, norm).matmul(tnf::normalize(key, norm).transpose(-2, -1));
  if (tau.defined()) {
    scores = scores * tau;
  }
  return detail::attend(std::move(scores), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> additive_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& query_weight,
    const torch::Tensor& key_weight,
    const torch::Tensor& score_weight,
    const AdditiveAttentionFuncOptions& options) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  constexpr const char* fn = "additive_attention";
  const auto masks = MaskArgs::from(options);
  detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/false);
  TORCH_CHECK(
      query_weight.defined() && query_weight.dim() == 2, fn, ": query_weight has shape ",
      query_weight.defined() ? detail::shape_str(query_weight.sizes()) : "undefined",
      ", expected [D, Eq]");
  const int64_t d = query_weight.size(0);
  detail::check_param(fn, "query_weight", query_weight, query, {d, query.size(-1)}, "[D, Eq]");
  detail::check_param(fn, "key_weight", key_weight, query, {d, key.size(-1)}, "[D, Ek]");
  detail::check_param(fn, "score_weight", score_weight, query, {1, d}, "[1, D]");
  if (options.query_bias().defined()) {
    detail::check_param(fn, "query_bias", options.query_bias(), query, {d}, "[D]");
  }
  if (options.key_bias().defined()) {
    detail::check_param(fn, "key_bias", options.key_bias(), query, {d}, "[D]");
  }
  if (options.score_bias().defined()) {
    detail::check_param(fn, "score_bias", options.score_bias(), query, {1}, "[1]");
  }
  auto q = torch::linear(query, query_weight, options.query_bias()); // [..., Lq, D]
  auto k = torch::linear(key, key_weight, options.key_bias());       // [..., Lk, D]
  auto energy = torch::tanh(q.unsqueeze(-2) + k.unsqueeze(-3));      // [..., Lq, Lk, D]
  auto scores = torch::linear(energy, score_weight, options.score_bias()).squeeze(-1);
  return detail::attend(std::move(scores), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> general_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& weight,
    const GeneralAttentionFuncOptions& options) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  constexpr const char* fn = "general_attention";
  const auto masks = MaskArgs::from(options);
  detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/false);
  detail::check_param(fn, "weight", weight, query, {query.size(-1), key.size(-1)}, "[Eq, Ek]");
  // (q W) kᵀ: projecting the Lq queries is cheaper than the Lk keys in decoding (Lq = 1).
  return detail::attend(query.matmul(weight).matmul(key.transpose(-2, -1)), value, masks);
}

} // namespace torchattn::nn::functional
