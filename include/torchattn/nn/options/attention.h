#pragma once

#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>

/// Mask, dropout and weight-request arguments shared by every attention functional.
///
/// Mask conventions mirror PyTorch:
/// - `attn_mask` follows `torch.nn.functional.scaled_dot_product_attention`: a boolean mask is
///   true where a query may attend to a key (false entries are masked out); a floating mask of
///   the query's dtype is added to the scores. Broadcastable to the scores `[..., Lq, Lk]`.
///   Default: undefined (no mask).
/// - `key_padding_mask` follows `torch.nn.MultiheadAttention`: shape `[Lk]` or `[B, Lk]`
///   (B is the first dim of the scores); a boolean mask is true where a key is padding and
///   must be ignored; a floating mask is added to the scores. Default: undefined.
/// - `is_causal`: query i attends to keys 0..i (a top-left aligned lower-triangular mask, as
///   in PyTorch's `is_causal`, also when Lq != Lk). Unlike PyTorch's fused kernels it may be
///   combined with `attn_mask`: both apply. Default: false.
/// - `dropout_p`: dropout probability on the attention weights, applied whenever it is
///   positive (as in PyTorch's functional; modules pass 0 in eval mode). Default: 0.
/// - `need_weights`: return the attention weights (after dropout, as `nn.MultiheadAttention`
///   does) as the second tuple element; otherwise it is an undefined tensor. Default: false.
///
/// A query row whose keys are all masked has zero output and zero weights (PyTorch gives
/// NaN there), and its gradients are zero.
#define TORCHATTN_ATTENTION_FUNC_ARGS              \
  TORCH_ARG(torch::Tensor, attn_mask) = {};        \
  TORCH_ARG(torch::Tensor, key_padding_mask) = {}; \
  TORCH_ARG(bool, is_causal) = false;              \
  TORCH_ARG(double, dropout_p) = 0.0;              \
  TORCH_ARG(bool, need_weights) = false

namespace torchattn::nn {

namespace functional {

/// Options for `functional::dot_product_attention`: the shared mask arguments
/// (see TORCHATTN_ATTENTION_FUNC_ARGS).
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto [out, w] = F::dot_product_attention(q, k, v,
///     F::DotProductAttentionFuncOptions().is_causal(true).need_weights(true));
/// ```
struct DotProductAttentionFuncOptions {
  TORCHATTN_ATTENTION_FUNC_ARGS;
};

/// Options for `functional::scaled_dot_product_attention`, which mirrors
/// `torch.nn.functional.scaled_dot_product_attention`.
///
/// Example:
/// ```
/// F::scaled_dot_product_attention(q, k, v,
///     F::ScaledDotProductAttentionFuncOptions().attn_mask(keep).scale(0.125));
/// ```
struct ScaledDotProductAttentionFuncOptions {
  TORCHATTN_ATTENTION_FUNC_ARGS;
  /// Factor applied to Q Kᵀ. Default: 1 / sqrt(E), E = query.size(-1).
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
};

/// Options for `functional::cosine_attention`.
///
/// Example:
/// ```
/// F::cosine_attention(q, k, v, F::CosineAttentionFuncOptions().temperature(tau));
/// ```
struct CosineAttentionFuncOptions {
  TORCHATTN_ATTENTION_FUNC_ARGS;
  /// τ multiplying the cosine similarities; a tensor broadcastable to the scores
  /// `[..., Lq, Lk]` (e.g. `[H, 1, 1]` for one temperature per head), of the query's dtype.
  /// Gradients flow into it. Default: undefined, meaning τ = 1.
  TORCH_ARG(torch::Tensor, temperature) = {};
  /// q and k are divided by max(‖x‖, eps), so zero vectors give cosine 0 (as
  /// `torch.nn.functional.normalize`). Default: 1e-12.
  TORCH_ARG(double, eps) = 1e-12;
};

/// Options for `functional::additive_attention`: optional biases of the three projections.
struct AdditiveAttentionFuncOptions {
  TORCHATTN_ATTENTION_FUNC_ARGS;
  /// Bias of W_q, shape [D]. Default: undefined (none).
  TORCH_ARG(torch::Tensor, query_bias) = {};
  /// Bias of W_k, shape [D]. Default: undefined (none).
  TORCH_ARG(torch::Tensor, key_bias) = {};
  /// Bias of v, shape [1]. It shifts every score equally, so it never changes the result; it
  /// is accepted so that weights of `Linear(D, 1)` load unchanged. Default: undefined.
  TORCH_ARG(torch::Tensor, score_bias) = {};
};

/// Options for `functional::general_attention`: the shared mask arguments.
struct GeneralAttentionFuncOptions {
  TORCHATTN_ATTENTION_FUNC_ARGS;
};

} // namespace functional

/// Options for `DotProductAttention`.
///
/// Example:
/// ```
/// torchattn::nn::DotProductAttention
/// attn(torchattn::nn::DotProductAttentionOptions().dropout(0.1));
/// ```
struct DotProductAttentionOptions {
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
};

/// Options for `ScaledDotProductAttention`.
///
/// Example:
/// ```
/// torchattn::nn::ScaledDotProductAttention attn(
///     torchattn::nn::ScaledDotProductAttentionOptions().dropout(0.1).scale(0.125));
/// ```
struct ScaledDotProductAttentionOptions {
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Factor applied to Q Kᵀ. Default: 1 / sqrt(E), E = query.size(-1).
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
};

/// Options for `CosineAttention`: softmax(τ · cos(Q, K)) V.
///
/// τ is stored in log space as `logit_scale` of shape [num_heads, 1, 1] (a parameter when
/// learnable, a buffer otherwise), as in Swin Transformer V2. Swin V2 uses
/// `temperature(10).learnable(true).max_temperature(100)`.
///
/// Example:
/// ```
/// torchattn::nn::CosineAttention attn(
///     torchattn::nn::CosineAttentionOptions().num_heads(8).learnable(true).max_temperature(100));
/// ```
struct CosineAttentionOptions {
  /// Initial τ. Default: 10.
  TORCH_ARG(double, temperature) = 10.0;
  /// Whether τ is a trained parameter. Default: false.
  TORCH_ARG(bool, learnable) = false;
  /// Number of temperatures; with more than one, the scores must have the heads at dim -3
  /// (`[B, H, Lq, Lk]`). Default: 1.
  TORCH_ARG(int64_t, num_heads) = 1;
  /// Upper clamp on τ, applied as `exp(min(logit_scale, log(max_temperature)))`; gradients
  /// stop flowing into a clamped temperature. Default: none.
  TORCH_ARG(c10::optional<double>, max_temperature) = c10::nullopt;
  /// See `CosineAttentionFuncOptions::eps`. Default: 1e-12.
  TORCH_ARG(double, eps) = 1e-12;
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
};

/// Options for `AdditiveAttention` (Bahdanau): score(q, k) = vᵀ tanh(W_q q + W_k k).
///
/// Example:
/// ```
/// torchattn::nn::AdditiveAttention attn(torchattn::nn::AdditiveAttentionOptions(256, 512, 128));
/// ```
struct AdditiveAttentionOptions {
  AdditiveAttentionOptions(int64_t query_dim, int64_t key_dim, int64_t hidden_dim)
      : query_dim_(query_dim), key_dim_(key_dim), hidden_dim_(hidden_dim) {}
  /// Size of each query vector (no default).
  TORCH_ARG(int64_t, query_dim);
  /// Size of each key vector (no default).
  TORCH_ARG(int64_t, key_dim);
  /// Size D of the hidden space in which q and k are added (no default).
  TORCH_ARG(int64_t, hidden_dim);
  /// Whether the projections have biases (as PyTorch's seq2seq tutorial). Default: true.
  TORCH_ARG(bool, bias) = true;
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
};

/// Options for `GeneralAttention` (Luong "general"): score(q, k) = qᵀ W k.
///
/// Example:
/// ```
/// torchattn::nn::GeneralAttention attn(torchattn::nn::GeneralAttentionOptions(256, 512));
/// ```
struct GeneralAttentionOptions {
  /* implicit */ GeneralAttentionOptions(int64_t query_dim)
      : query_dim_(query_dim), key_dim_(query_dim) {}
  GeneralAttentionOptions(int64_t query_dim, int64_t key_dim)
      : query_dim_(query_dim), key_dim_(key_dim) {}
  /// Size of each query vector (no default).
  TORCH_ARG(int64_t, query_dim);
  /// Size of each key vector. Default: query_dim.
  TORCH_ARG(int64_t, key_dim);
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
};

} // namespace torchattn::nn
