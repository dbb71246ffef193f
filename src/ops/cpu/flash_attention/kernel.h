#pragma once

// The fused attention kernel, compiled once per CPU capability (DEFAULT, AVX2, AVX512, and
// AVX512_BF16 for bfloat16's products) from ops/cpu/flash_attention/{forward,backward}.cpp;
// TORCHATTN_BF16_CAPABILITY_KERNEL picks one at run time.

#include "ops/cpu/capability.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace torchattn::ops::cpu {

/// Where a causal mask's diagonal lies: query i sees keys j <= i (top-left, PyTorch's
/// is_causal) or j <= i + Lk - Lq (bottom-right: the queries are the last Lq of the keys).
enum class Causal : int8_t { none = 0, top_left = 1, bottom_right = 2 };

/// Flexible attention's modifiers, all optional (see include/torchattn/ops/flex_attention.h),
/// already checked and in the layouts noted. B' and H' are B or H, or 1 where broadcast.
struct FlexMods {
  // Mask modifiers; a query attends a key where every one of them allows it.
  Causal causal = Causal::none;
  int64_t window_left = -1; // keys before the diagonal a query sees; -1: unbounded
  int64_t window_right = -1;
  at::Tensor q_doc, kv_doc; // int64 [B', Lq], [B', Lk], contiguous: same id, same document
  at::Tensor prefix;        // int64 [B'] contiguous: keys < prefix are seen by every query
  at::Tensor block_kinds;   // uint8 [B', H', ceil(Lq / S), ceil(Lk / S)]: 0 empty, 1 partial,
  at::Tensor block_index;   //   2 full; int64, same shape: partial's index in block_masks
  at::Tensor block_masks;   // bool [P, S, S]: the partial blocks, true = may attend
  // Score modifiers: s = softcap(scale q·k) + slope (j - i) + table[h, bucket(j - i)] + bias.
  double softcap = 0.0; // 0: none
  at::Tensor alibi;     // [H] contiguous, dtype of query
  at::Tensor table;     // [H, num_buckets] contiguous, dtype of query
  at::Tensor buckets;   // int64 [Lq + Lk - 1] contiguous: bucket of j - i at j - i + Lq - 1
  at::Tensor bias;      // [B, H, Lq, Lk] view (broadcast dims have stride 0), dtype of query
};

/// What the kernels need besides the tensors. The mask, when defined, is a 4-D view
/// [B, H, Lq, Lk] (broadcast dims have stride 0), bool (true = may attend) or additive. Key
/// and value may have fewer heads than query (H_kv dividing H): query head h reads kv head
/// h / (H / H_kv).
///
/// The kernels compute in float32 or float64. Inputs in bfloat16 or float16 are computed in
/// float32 (ops/cpu/flash_attention/low_precision.h), with `low_precision` their dtype: the
/// weights P and the score gradients dS are rounded to it before they are multiplied, as
/// FlashAttention rounds them for its bf16/fp16 matrix units.
struct FlashArgs {
  double scale = 1.0;
  FlexMods mods;
  at::ScalarType low_precision = at::ScalarType::Undefined;
};

/// The arguments of plain attention, causal (top-left) or not.
inline FlashArgs plain_args(bool is_causal, double scale) {
  FlashArgs args;
  args.scale = scale;
  args.mods.causal = is_causal ? Causal::top_left : Causal::none;
  return args;
}

/// Backward's outputs: the gradients of query, key and value, preallocated with their shapes;
/// grad_bias [B, H, Lq, Lk] contiguous, zeros, when the bias needs its gradient (the caller
/// reduces it over broadcast dims); grad_diagonal float64 [B, H, Lq + Lk - 1], zeros, the sums of
/// dS along each diagonal j - i (at j - i + Lq - 1), when the ALiBi slopes or the position table
/// need theirs.
struct FlashGrads {
  at::Tensor& grad_query;
  at::Tensor& grad_key;
  at::Tensor& grad_value;
  at::Tensor grad_bias;
  at::Tensor grad_diagonal;
};

// query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
//   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq] (float32 for bfloat16 and
//      float16 inputs, else their dtype): the softmax statistics
//      of each row of scaled, masked scores s, m = max s and log Σ exp(s - m), whose sum is the
//      logsumexp (both -inf on rows with no key to attend, whose output is zero)
using FlashForwardFn = void(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& mask,
    const FlashArgs& args, at::Tensor& out, at::Tensor& row_max, at::Tensor& row_log_sum);

// grad_out [B, H, Lq, Ev] (+ the forward's tensors) -> grads (see FlashGrads).
using FlashBackwardFn = void(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    FlashGrads& grads);

TORCHATTN_DECLARE_BF16_CAPABILITY_KERNEL(flash_attention_forward, FlashForwardFn)
TORCHATTN_DECLARE_BF16_CAPABILITY_KERNEL(flash_attention_backward, FlashBackwardFn)

} // namespace torchattn::ops::cpu
