#pragma once

// The fused additive (Bahdanau) score, compiled once per CPU capability (DEFAULT, AVX2, AVX512)
// from ops/cpu/additive_scores/kernel.cpp; TORCHATTN_CAPABILITY_KERNEL picks one at run time.

#include "ops/cpu/capability.h"

#include <ATen/core/Tensor.h>

namespace torchattn::ops::cpu {

// query [N, Lq, D], key [N, Lk, D], weight [D], all contiguous
//   -> scores [N, Lq, Lk] = sum_d weight_d tanh(query_id + key_jd)
using AdditiveScoresForwardFn = void(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& weight, at::Tensor& scores);

// grad_scores [N, Lq, Lk] (+ the forward's inputs, all contiguous) -> grad_query, grad_key,
// grad_weight, preallocated (any contents) with the shapes of query, key and weight. The
// energies are recomputed; entries whose gradient is exactly zero (masked scores) are skipped.
using AdditiveScoresBackwardFn = void(
    const at::Tensor& grad_scores, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& weight, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_weight);

TORCHATTN_DECLARE_CAPABILITY_KERNEL(additive_scores_forward, AdditiveScoresForwardFn)
TORCHATTN_DECLARE_CAPABILITY_KERNEL(additive_scores_backward, AdditiveScoresBackwardFn)

} // namespace torchattn::ops::cpu
