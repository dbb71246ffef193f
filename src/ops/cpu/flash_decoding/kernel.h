#pragma once

// The decoding kernel (flash-decoding): a few queries per head against a long key/value cache,
// the keys split across threads and the partial results merged by their logsumexp. Compiled
// once per CPU capability from ops/cpu/flash_decoding/decode.cpp; TORCHATTN_CAPABILITY_KERNEL
// picks one at run time.

#include "ops/cpu/capability.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace torchattn::ops::cpu {

/// Which keys each query sees. Row b's keys are the first kv_len[b] (all Lk when undefined);
/// its query i stands at position p = q_start[b] + i (kv_len[b] - Lq when undefined: the
/// queries are the last Lq of the keys). Query i sees key j < kv_len[b] where, if causal,
/// j <= p, and, if window_left >= 0, j >= p - window_left.
struct DecodeArgs {
  double scale = 1.0;
  bool causal = true;
  int64_t window_left = -1;
  at::Tensor kv_len;  // int64 [B] contiguous, values in [0, Lk]; or undefined
  at::Tensor q_start; // int64 [B] contiguous; or undefined
};

// query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev] (any strides but a unit
// stride in the last dim; H_kv divides H: query head h reads kv head h / (H / H_kv))
//   -> out [B, H, Lq, Ev] contiguous, lse [B, H, Lq] contiguous (-inf, and a zero output, on
//      rows with no key to see), both in query's dtype, or float32 for bfloat16 and float16
//      (the output unrounded: the caller rounds it once)
using FlashDecodeFn = void(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const DecodeArgs& args,
    at::Tensor& out, at::Tensor& lse);

TORCHATTN_DECLARE_CAPABILITY_KERNEL(flash_decode, FlashDecodeFn)

} // namespace torchattn::ops::cpu
