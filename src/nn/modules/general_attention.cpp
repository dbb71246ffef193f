#include <torchattn/nn/modules/general_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

GeneralAttentionImpl::GeneralAttentionImpl(const GeneralAttentionOptions& options_)
    : options(options_) {
  reset();
}

void GeneralAttentionImpl::reset() {
  constexpr const char* name = "torchattn::nn::GeneralAttention";
  detail::check_dropout_option("GeneralAttention", options.dropout());
  TORCH_CHECK(
      options.query_dim() > 0, name, ": query_dim is ", options.query_dim(), ", expected > 0");
  TORCH_CHECK(options.key_dim() > 0, name, ": key_dim is ", options.key_dim(), ", expected > 0");
  weight = register_parameter("weight", torch::empty({options.query_dim(), options.key_dim()}));
  // Like a torch::nn::Linear(key_dim -> query_dim): W k is the key seen from query space.
  const double bound = 1.0 / std::sqrt(static_cast<double>(options.key_dim()));
  torch::NoGradGuard no_grad;
  weight.uniform_(-bound, bound);
}

void GeneralAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::GeneralAttention(query_dim=" << options.query_dim()
         << ", key_dim=" << options.key_dim() << ", dropout=" << options.dropout() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> GeneralAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask, bool need_weights,
    bool is_causal) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  return F::general_attention(
      query, key, value, weight,
      detail::with_masks(
          F::GeneralAttentionFuncOptions(), attn_mask, key_padding_mask, is_causal,
          is_training() ? options.dropout() : 0.0, need_weights));
}

} // namespace torchattn::nn
