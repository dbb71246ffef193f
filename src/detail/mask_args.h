#pragma once

// The masking arguments every attention function takes (TORCHATTN_ATTENTION_FUNC_ARGS), as one
// value that the validator (checks.h) and the math path (math_attention.h) both read.

#include <torch/types.h>

namespace torchattn::detail {

/// The arguments of TORCHATTN_ATTENTION_FUNC_ARGS, gathered from any *FuncOptions.
struct MaskArgs {
  const torch::Tensor& attn_mask;
  const torch::Tensor& key_padding_mask;
  bool is_causal;
  double dropout_p;
  bool need_weights;

  template <typename Options>
  static MaskArgs from(const Options& o) {
    return {o.attn_mask(), o.key_padding_mask(), o.is_causal(), o.dropout_p(), o.need_weights()};
  }
};

/// Fills the TORCHATTN_ATTENTION_FUNC_ARGS of any *FuncOptions, as every module's forward does.
template <typename Options>
Options with_masks(
    Options options, const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask,
    bool is_causal, double dropout_p, bool need_weights) {
  options.attn_mask(attn_mask);
  options.key_padding_mask(key_padding_mask);
  options.is_causal(is_causal);
  options.dropout_p(dropout_p);
  options.need_weights(need_weights);
  return options;
}

} // namespace torchattn::detail
