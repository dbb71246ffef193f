#pragma once

#include <torchattn/nn/options/attention.h>

#include <torch/types.h>

#include <tuple>

/// Attention on tensors shaped `[..., L, E]`: any number of leading batch/head dims (they
/// broadcast between query, key and value), Lq may differ from Lk, and the value dim Ev may
/// differ from the key dim.
///
/// Every function returns `(output [..., Lq, Ev], weights [..., Lq, Lk])`; the weights are
/// defined only when `need_weights(true)` was asked for. All of them accept the masks
/// described at TORCHATTN_ATTENTION_FUNC_ARGS, run on any device, in any floating dtype, and
/// differentiate through every tensor argument.
namespace torchattn::nn::functional {

/// Lq · Lk up to which the functionals (and so the modules) take the math path on the CPU even
/// where torchattn's fused CPU kernel applies (other devices are not affected): small score
/// matrices cost little memory, and there a few batched matmuls beat the tiled kernel's
/// per-head setup. Process-wide, like PyTorch's
/// `torch.backends.cuda.enable_*_sdp` switches; 0 sends every eligible call to the kernel.
/// Default: 2304 (48 × 48).
///
/// Example:
/// ```
/// torchattn::nn::functional::set_math_path_max_scores(0);  // always the fused kernel
/// ```
void set_math_path_max_scores(int64_t n);
int64_t math_path_max_scores();

/// softmax(Q Kᵀ) V.
///
/// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
///
/// Example:
/// ```
/// auto [out, w] = torchattn::nn::functional::dot_product_attention(q, k, v);
/// ```
std::tuple<torch::Tensor, torch::Tensor> dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const DotProductAttentionFuncOptions& options = {});

/// softmax(Q Kᵀ · scale) V with scale = 1/√E unless given; mirrors
/// `torch.nn.functional.scaled_dot_product_attention` (mask conventions included), and also
/// returns the weights on request.
///
/// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
///
/// Example:
/// ```
/// auto [out, w] = torchattn::nn::functional::scaled_dot_product_attention(q, k, v,
///     torchattn::nn::functional::ScaledDotProductAttentionFuncOptions().is_causal(true));
/// ```
std::tuple<torch::Tensor, torch::Tensor> scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const ScaledDotProductAttentionFuncOptions& options = {});

/// softmax(τ · cos(Q, K)) V, with q and k normalised as `torch.nn.functional.normalize`
/// (zero vectors are safe) and τ from `options.temperature()` (1 when undefined).
///
/// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
///
/// Example:
/// ```
/// auto tau = torch::full({8, 1, 1}, 10.0);
/// auto [out, w] = torchattn::nn::functional::cosine_attention(q, k, v,
///     torchattn::nn::functional::CosineAttentionFuncOptions().temperature(tau));
/// ```
std::tuple<torch::Tensor, torch::Tensor> cosine_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const CosineAttentionFuncOptions& options = {});

/// Bahdanau attention: score(q, k) = vᵀ tanh(W_q q + b_q + W_k k + b_k) + b_v.
/// Weights are in `torch::nn::Linear` layout: query_weight [D, Eq], key_weight [D, Ek],
/// score_weight [1, D]. Where the weights are not returned (need_weights false), on the CPU in
/// float32/float64, the scores come from the fused op torchattn::additive_attention_scores,
/// which never forms the [..., Lq, Lk, D] energies; otherwise the composite of ATen ops forms
/// them (and keeps double backward).
///
/// query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
///
/// Example:
/// ```
/// auto [out, w] = torchattn::nn::functional::additive_attention(q, k, v, wq, wk, wv,
///     torchattn::nn::functional::AdditiveAttentionFuncOptions().query_bias(bq).key_bias(bk));
/// ```
std::tuple<torch::Tensor, torch::Tensor> additive_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& query_weight, const torch::Tensor& key_weight,
    const torch::Tensor& score_weight, const AdditiveAttentionFuncOptions& options = {});

/// Luong "general" attention: score(q, k) = qᵀ W k with weight W [Eq, Ek].
///
/// query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
///
/// Example:
/// ```
/// auto [out, w] = torchattn::nn::functional::general_attention(q, k, v, weight);
/// ```
std::tuple<torch::Tensor, torch::Tensor> general_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& weight, const GeneralAttentionFuncOptions& options = {});

} // namespace torchattn::nn::functional
