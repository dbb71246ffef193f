#include <torchattn/nn/modules/scaled_dot_product_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"
#include "detail/printing.h"

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

ScaledDotProductAttentionImpl::ScaledDotProductAttentionImpl(
    const ScaledDotProductAttentionOptions& options_)
    : options(options_) {
  reset();
}

void ScaledDotProductAttentionImpl::reset() {
  detail::check_dropout_option("ScaledDotProductAttention", options.dropout());
  TORCH_CHECK(
      !options.scale().has_value() || std::isfinite(*options.scale()),
      "torchattn::nn::ScaledDotProductAttention: scale is ", options.scale().value_or(0.0),
      ", expected a finite number");
}

void ScaledDotProductAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::ScaledDotProductAttention(dropout=" << options.dropout() << ", scale=";
  detail::print_optional(stream, options.scale());
  stream << ")";
}

std::tuple<torch::Tensor, torch::Tensor> ScaledDotProductAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask, bool need_weights,
    bool is_causal) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  return F::scaled_dot_product_attention(
      query, key, value,
      detail::with_masks(
          F::ScaledDotProductAttentionFuncOptions().scale(options.scale()), attn_mask,
          key_padding_mask, is_causal, is_training() ? options.dropout() : 0.0, need_weights));
}

} // namespace torchattn::nn
