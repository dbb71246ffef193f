#pragma once

// The fused graph attention (see include/torchattn/ops/graph_attention.h), compiled once per
// CPU capability from forward.cpp and backward.cpp; TORCHATTN_CAPABILITY_KERNEL picks one at
// run time. Every tensor is contiguous; the op kernel (ops/cpu/graph_attention_kernel.cpp) has
// checked them.

#include "ops/cpu/capability.h"

#include <ATen/core/Tensor.h>

namespace torchattn::ops::cpu {

/// The score function and its constants. `score_weight` [H, D] is defined for "additive" only,
/// `edge_scale` [E, H] where the caller gave one.
struct GraphScoreArgs {
  bool additive = false;
  double negative_slope = 0.2;
  double scale = 1.0;
  at::Tensor score_weight;
  at::Tensor edge_scale;
};

// query [Nd, H, D], key [Ns, H, D], value [Ns, H, C], row_ptr [Nd + 1], col_index [E]
//   -> output [Nd, H, C], lse [Nd, H] (float32 for bfloat16/float16), and weights [E, H] when
//      defined; all preallocated.
using GraphAttentionForwardFn = void(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& row_ptr, const at::Tensor& col_index, const GraphScoreArgs& score,
    at::Tensor& output, at::Tensor& lse, at::Tensor& weights);

// grad_output [Nd, H, C] (+ the forward's inputs) -> grad_query,
// grad_key, grad_value, and grad_score_weight [H, D] / grad_edge_scale [E, H] where defined;
// all preallocated (any contents).
using GraphAttentionBackwardFn = void(
    const at::Tensor& grad_output, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& row_ptr, const at::Tensor& col_index,
    const GraphScoreArgs& score, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_value, at::Tensor& grad_score_weight, at::Tensor& grad_edge_scale);

TORCHATTN_DECLARE_CAPABILITY_KERNEL(graph_attention_forward, GraphAttentionForwardFn)
TORCHATTN_DECLARE_CAPABILITY_KERNEL(graph_attention_backward, GraphAttentionBackwardFn)

} // namespace torchattn::ops::cpu
