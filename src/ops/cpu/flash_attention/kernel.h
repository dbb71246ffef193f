#pragma once

// The fused attention kernel, compiled once per CPU capability (DEFAULT, AVX2, AVX512) from
// ops/cpu/flash_attention/{forward,backward}.cpp; TORCHATTN_CAPABILITY_KERNEL picks one at run
// time.

#include "ops/cpu/capability.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace torchattn::ops::cpu {

/// What the kernels need besides the tensors. The mask, when defined, is a 4-D view
/// [B, H, Lq, Lk] (broadcast dims have stride 0), bool (true = may attend) or additive.
struct FlashArgs {
  bool is_causal = false;
  double scale = 1.0;
};

// query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
//   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]: the softmax statistics
//      of each row of scaled, masked scores s, m = max s and log Σ exp(s - m), whose sum is the
//      logsumexp (both -inf on rows with no key to attend, whose output is zero)
using FlashForwardFn = void(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& mask,
    const FlashArgs& args, at::Tensor& out, at::Tensor& row_max, at::Tensor& row_log_sum);

// grad_out [B, H, Lq, Ev] (+ the forward's tensors) -> grad_query, grad_key, grad_value, all
// preallocated with the shapes of query, key and value.
using FlashBackwardFn = void(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value);

TORCHATTN_DECLARE_CAPABILITY_KERNEL(flash_attention_forward, FlashForwardFn)
TORCHATTN_DECLARE_CAPABILITY_KERNEL(flash_attention_backward, FlashBackwardFn)

} // namespace torchattn::ops::cpu
