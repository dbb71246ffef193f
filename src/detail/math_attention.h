#pragma once

// The math path: attention composed of ATen ops (differentiable to any order, O(Lq·Lk)
// memory). Every score function ends here unless the fused kernel applies; the ops fall back to
// it for dropout and for masks that require grad. Arguments are checked before (checks.h).

#include "detail/mask_args.h"

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <tuple>

namespace torchattn::detail {

/// [rows, cols] bool, true where key j is later than query i's position `offset + i`: the
/// masked entries of causal attention (top-left aligned when offset is 0).
torch::Tensor causal_masked(
    int64_t rows, int64_t cols, int64_t offset, const torch::TensorOptions& options);

/// key_padding_mask [Lk] or [B, Lk] as a mask broadcastable to scores of `scores_dim` dims,
/// its batch aligned with their first dim: [B, 1, ..., 1, Lk]. The one place that reshapes it.
torch::Tensor align_key_padding_mask(const torch::Tensor& key_padding_mask, int64_t scores_dim);

/// attn_mask and key_padding_mask as one mask in the ops' convention (bool true = may attend,
/// or additive), broadcastable to scores of `scores_dim` dims; undefined when there is none.
torch::Tensor combined_mask(const MaskArgs& masks, int64_t scores_dim);

/// Scores [..., Lq, Lk] with the masks applied: masked entries -inf, additive masks added.
/// `masked_any` tells whether anything was masked or added (rows may then be fully masked).
torch::Tensor mask_scores(torch::Tensor scores, const MaskArgs& masks, bool* masked_any = nullptr);

/// softmax(masked scores) V, with dropout on the weights: scores [..., Lq, Lk], value
/// [..., Lk, Ev] -> (out [..., Lq, Ev], weights [..., Lq, Lk] or undefined). A fully masked
/// row gives zero output and zero gradients (PyTorch gives NaN).
std::tuple<torch::Tensor, torch::Tensor> softmax_attend(
    torch::Tensor scores, const torch::Tensor& value, const MaskArgs& masks);

/// softmax((Q · scale) Kᵀ + mask) V for the scaled_dot_product_attention op's checked
/// arguments (mask4d from check_sdpa_args): its path for dropout and for masks that require
/// grad, and for devices without the fused kernel.
torch::Tensor math_scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& mask4d, double dropout_p, bool is_causal, double scale);

/// τ = exp(min(logit_scale, log(max_temperature))) for cosine attention's log temperatures.
torch::Tensor temperature_from_log(
    const torch::Tensor& logit_scale, const c10::optional<double>& max_temperature);

} // namespace torchattn::detail
