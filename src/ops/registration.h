#pragma once

// Shared by the op files: the anchors of the kernel registrations, the argument checks and the
// math path that the op falls back to where the fused kernel does not apply.

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <tuple>

namespace torchattn::ops::detail {

bool cpu_kernels_registered();
bool autograd_kernels_registered();

/// Checks the op's arguments; returns the mask as a 4-D [B, H, Lq, Lk] view (undefined when
/// none) and the resolved scale. `fn` names the op in messages.
std::tuple<torch::Tensor, double> check_sdpa_args(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    double dropout_p,
    c10::optional<double> scale);

/// Checks additive_attention_scores' arguments (query [..., Lq, D], key [..., Lk, D] with the
/// same leading dims, score_weight [D]; float32 or float64 on CPU). `fn` names the op.
void check_additive_args(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& score_weight);

/// softmax(Q Kᵀ · scale + mask) V with ATen ops (differentiable, O(Lq·Lk) memory): the path
/// for dropout and for masks that require grad. Fully masked rows give zeros, as the kernel.
torch::Tensor sdpa_math(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& mask4d,
    double dropout_p,
    bool is_causal,
    double scale);

} // namespace torchattn::ops::detail
