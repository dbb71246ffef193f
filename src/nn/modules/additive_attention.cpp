#include <torchattn/nn/modules/additive_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"

#include <torch/torch.h>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

AdditiveAttentionImpl::AdditiveAttentionImpl(const AdditiveAttentionOptions& options_)
    : options(options_) {
  reset();
}

void AdditiveAttentionImpl::reset() {
  constexpr const char* name = "torchattn::nn::AdditiveAttention";
  detail::check_dropout_option("AdditiveAttention", options.dropout());
  TORCH_CHECK(
      options.query_dim() > 0, name, ": query_dim is ", options.query_dim(), ", expected > 0");
  TORCH_CHECK(options.key_dim() > 0, name, ": key_dim is ", options.key_dim(), ", expected > 0");
  TORCH_CHECK(
      options.hidden_dim() > 0, name, ": hidden_dim is ", options.hidden_dim(), ", expected > 0");
  using torch::nn::LinearOptions;
  query_proj = register_module(
      "query_proj",
      torch::nn::Linear(
          LinearOptions(options.query_dim(), options.hidden_dim()).bias(options.bias())));
  key_proj = register_module(
      "key_proj", torch::nn::Linear(
                      LinearOptions(options.key_dim(), options.hidden_dim()).bias(options.bias())));
  score_proj = register_module(
      "score_proj", torch::nn::Linear(LinearOptions(options.hidden_dim(), 1).bias(options.bias())));
}

void AdditiveAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchattn::nn::AdditiveAttention(query_dim=" << options.query_dim()
         << ", key_dim=" << options.key_dim() << ", hidden_dim=" << options.hidden_dim()
         << ", bias=" << options.bias() << ", dropout=" << options.dropout() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> AdditiveAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask, bool need_weights,
    bool is_causal) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  return F::additive_attention(
      query, key, value, query_proj->weight, key_proj->weight, score_proj->weight,
      detail::with_masks(
          F::AdditiveAttentionFuncOptions()
              .query_bias(query_proj->bias)
              .key_bias(key_proj->bias)
              .score_bias(score_proj->bias),
          attn_mask, key_padding_mask, is_causal, is_training() ? options.dropout() : 0.0,
          need_weights));
}

} // namespace torchattn::nn
