#pragma once

#include <torchattn/nn/options/rotary_embedding.h>

#include <torch/types.h>

#include <utility>

namespace torchattn::nn::functional {

/// The inverse frequencies [rotary_dim / 2], float64, after the options' scaling (see
/// RotaryEmbeddingOptions). `options.head_dim()` must be set.
torch::Tensor rotary_inv_freq(const RotaryEmbeddingOptions& options);

/// cos and sin of positions x inv_freq: [..., rotary_dim / 2] for positions [...] (any
/// integer or floating tensor), float64.
std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(
    const torch::Tensor& positions, const torch::Tensor& inv_freq);

/// Rotates the first 2 * cos.size(-1) features of x [..., L, D] by the angles whose cos and sin
/// are given, broadcastable to [..., L, rotary_dim / 2] (cast to x's dtype); the rest of x
/// passes through. Differentiable in x (ATen ops).
///   interleaved = false: (x[i], x[i + d/2]) -> (x[i] cos - x[i + d/2] sin,
///                                              x[i + d/2] cos + x[i] sin)    (rotate_half)
///   interleaved = true:  (x[2i], x[2i+1]) rotate the same way                  (GPT-J)
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto inv = F::rotary_inv_freq(torchattn::nn::RotaryEmbeddingOptions(64));
/// auto [cos, sin] = F::rotary_cos_sin(torch::arange(L), inv);
/// auto q_rot = F::apply_rotary_embedding(q, cos, sin, /*interleaved=*/false);
/// ```
torch::Tensor apply_rotary_embedding(
    const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool interleaved);

} // namespace torchattn::nn::functional
