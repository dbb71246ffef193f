// CPU autocast kernels of flex_attention and flex_attention_weights: lower-precision ops under
// LibTorch's CPU autocast, like scaled_dot_product_attention (ops/autocast/scaled_dot_product_
// attention_kernel.cpp). query, key, value and the floating modifiers (attn_mask, bias,
// alibi_slopes, position_bias) are cast to the autocast dtype; integer and boolean modifiers
// and flex_attention_weights' float32 lse are left as they are.

#include <torchattn/ops/flex_attention.h>

#include "detail/compat.h"
#include "ops/flex_attention_params.h"
#include "ops/registration.h"

#include <torch/library.h>

// The modifiers of TORCHATTN_FLEX_PARAMS with the floating ones autocast.
#define TORCHATTN_FLEX_ARGS_AUTOCAST                                                         \
  autocast_cpu(attn_mask), autocast_cpu(bias), causal, window_left, window_right, q_doc_ids, \
      kv_doc_ids, prefix_lengths, block_kinds, block_index, block_masks, softcap,            \
      autocast_cpu(alibi_slopes), autocast_cpu(position_bias), position_buckets

namespace torchattn::ops {

namespace {

using torchattn::detail::autocast_cpu;

std::tuple<torch::Tensor, torch::Tensor> flex_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, c10::optional<double> scale, bool enable_gqa) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return torchattn::ops::flex_attention(
      autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), TORCHATTN_FLEX_ARGS_AUTOCAST,
      scale, enable_gqa);
}

torch::Tensor flex_weights_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, TORCHATTN_FLEX_PARAMS, c10::optional<double> scale,
    bool enable_gqa) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return torchattn::ops::flex_attention_weights(
      autocast_cpu(query), autocast_cpu(key), lse, rows, TORCHATTN_FLEX_ARGS_AUTOCAST, scale,
      enable_gqa);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, AutocastCPU, m) {
  m.impl("flex_attention", TORCH_FN(torchattn::ops::flex_autocast));
  m.impl("flex_attention_weights", TORCH_FN(torchattn::ops::flex_weights_autocast));
}

TORCHATTN_REGISTRATION_ANCHOR(flex_attention_autocast_registered)
