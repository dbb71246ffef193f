#pragma once

/// The op `torchattn::additive_attention_scores` and its backward, through the dispatcher:
///
/// ```
/// torchattn::additive_attention_scores(Tensor query, Tensor key, Tensor score_weight) -> Tensor
/// torchattn::_additive_attention_scores_backward(Tensor grad_scores, Tensor query, Tensor key,
///     Tensor score_weight) -> (Tensor grad_query, Tensor grad_key, Tensor grad_score_weight)
/// ```
///
/// Kernels: src/ops/cpu/, src/ops/autograd/ and src/ops/meta/additive_attention_scores_kernel.cpp.

#include <torch/types.h>

#include <tuple>

namespace torchattn::ops {

/// The additive (Bahdanau) scores Σ_d w_d tanh(q_id + k_jd), fused: neither forward nor
/// backward forms the [..., Lq, Lk, D] energies, which the composite of ATen ops writes, reads
/// again and keeps for backward. Backward recomputes them and skips scores whose gradient is
/// exactly zero (masked ones).
///
/// query [..., Lq, D], key [..., Lk, D] (the same leading dims), score_weight [D]
///   -> scores [..., Lq, Lk]
///
/// - query and key are already projected (W_q q + b_q and W_k k + b_k); a bias on the score
///   shifts every score equally and is added by the caller.
/// - float32, float64, bfloat16 and float16 (computed in float32) on CPU, any strides; double
///   backward is not supported.
///
/// Example:
/// ```
/// auto q = torch::randn({32, 12, 256}), k = torch::randn({32, 15, 256});
/// auto scores = torchattn::ops::additive_attention_scores(q, k, torch::randn({256}));  // [32, 12,
/// 15]
/// ```
torch::Tensor additive_attention_scores(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight);

/// The backward of additive_attention_scores: gradients of query, key and score_weight from
/// grad_scores [..., Lq, Lk]. Recomputes the energies. Not differentiable.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _additive_attention_scores_backward(
    const torch::Tensor& grad_scores, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight);

} // namespace torchattn::ops
