#include <torchattn/nn/modules/dot_product_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

DotProductAttentionImpl::DotProductAttentionImpl(const DotProductAttentionOptions& options_)
    : options(options_) {
  reset();
}

void DotProductAttentionImpl::reset() {
  detail::check_dropout_option("DotProductAttention", options.dropout());
}

void DotProductAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::DotProductAttention(dropout=" << options.dropout() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> DotProductAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask, bool need_weights,
    bool is_causal) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  return F::dot_product_attention(
      query, key, value,
      detail::with_masks(
          F::DotProductAttentionFuncOptions(), attn_mask, key_padding_mask, is_causal,
          is_training() ? options.dropout() : 0.0, need_weights));
}

} // namespace torchattn::nn
