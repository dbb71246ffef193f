#pragma once

#include <torchattn/nn/options/flex_attention.h>

#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>

namespace torchattn::nn {

/// The score function each head of `MultiheadAttention` uses.
enum class AttentionScore {
  /// softmax(Q Kᵀ / √head_dim), as `torch.nn.MultiheadAttention`.
  ScaledDotProduct,
  /// softmax(Q Kᵀ).
  DotProduct,
  /// softmax(τ_h · cos(Q, K)) with a learnable temperature per head (`logit_scale`,
  /// initialised to log 10 and clamped at log 100, as Swin Transformer V2).
  Cosine,
};

/// Options for `MultiheadAttention`; names and defaults mirror `torch.nn.MultiheadAttention`.
///
/// Example:
/// ```
/// torchattn::nn::MultiheadAttention mha(
///     torchattn::nn::MultiheadAttentionOptions(512, 8).batch_first(true).dropout(0.1));
/// ```
struct MultiheadAttentionOptions {
  MultiheadAttentionOptions(int64_t embed_dim, int64_t num_heads)
      : embed_dim_(embed_dim), num_heads_(num_heads), kdim_(embed_dim), vdim_(embed_dim) {}

  /// Total dimension E of the model; split across heads (no default).
  TORCH_ARG(int64_t, embed_dim);
  /// Number of parallel heads H; embed_dim must be divisible by it (no default).
  TORCH_ARG(int64_t, num_heads);
  /// Dropout probability on the attention weights, in training mode only. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Whether the input and output projections have biases. Default: true.
  TORCH_ARG(bool, bias) = true;
  /// Learned biases appended to the key and value sequences. Default: false.
  TORCH_ARG(bool, add_bias_kv) = false;
  /// A zero key and value appended after projection. Default: false.
  TORCH_ARG(bool, add_zero_attn) = false;
  /// Feature size of key. Default: embed_dim.
  TORCH_ARG(int64_t, kdim);
  /// Feature size of value. Default: embed_dim.
  TORCH_ARG(int64_t, vdim);
  /// Inputs and output are [B, L, E] when true, [L, B, E] when false. Default: false.
  TORCH_ARG(bool, batch_first) = false;
  /// The score function of every head. Default: AttentionScore::ScaledDotProduct.
  TORCH_ARG(AttentionScore, score) = AttentionScore::ScaledDotProduct;
  /// flex_attention's modifiers for every head (causal alignment, windows, documents, ALiBi,
  /// soft-cap, position table, bias; no GQA here), fused forward and backward; the scaled
  /// dot-product score only, without dropout. forward's masks combine with them (give
  /// attn_mask to forward, not here). Default: none.
  TORCH_ARG(c10::optional<functional::FlexAttentionFuncOptions>, flex) = c10::nullopt;
};

} // namespace torchattn::nn
