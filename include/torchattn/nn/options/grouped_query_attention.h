#pragma once

#include <torchattn/nn/options/rotary_embedding.h>

#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>

namespace torchattn::nn {

/// Options for `GroupedQueryAttention`, the attention block of Llama and Mistral (Hugging
/// Face's LlamaAttention / MistralAttention): projections q_proj, k_proj, v_proj and o_proj,
/// rotary embeddings on queries and keys, num_kv_heads key/value heads shared by groups of
/// query heads.
///
/// Example:
/// ```
/// torchattn::nn::GroupedQueryAttention attn(
///     torchattn::nn::GroupedQueryAttentionOptions(4096, 32).num_kv_heads(8).sliding_window(4096));
/// ```
struct GroupedQueryAttentionOptions {
  GroupedQueryAttentionOptions(int64_t embed_dim, int64_t num_heads)
      : embed_dim_(embed_dim), num_heads_(num_heads) {}

  /// Model width (Hugging Face's hidden_size).
  TORCH_ARG(int64_t, embed_dim);
  /// Query heads (num_attention_heads).
  TORCH_ARG(int64_t, num_heads);
  /// Key/value heads, dividing num_heads: 1 is MQA, num_heads is MHA; 0: num_heads.
  /// Default: 0.
  TORCH_ARG(int64_t, num_kv_heads) = 0;
  /// Features per head; 0: embed_dim / num_heads. Default: 0.
  TORCH_ARG(int64_t, head_dim) = 0;
  /// Biases on all four projections (Hugging Face's attention_bias). Default: false.
  TORCH_ARG(bool, bias) = false;
  /// Rotary embeddings on queries and keys. Default: true.
  TORCH_ARG(bool, rope) = true;
  /// Their options; head_dim 0 takes the block's. Default: base 10000, rotate_half.
  TORCH_ARG(RotaryEmbeddingOptions, rotary) = {};
  /// Keys a query sees, itself included (Mistral's sliding_window); -1: all. Default: -1.
  TORCH_ARG(int64_t, sliding_window) = -1;
  /// A query sees no later key. Default: true.
  TORCH_ARG(bool, is_causal) = true;
  /// Score scale. Default: 1/√head_dim.
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
};

namespace functional {

/// Options for `functional::grouped_query_attention`, the attention core of
/// GroupedQueryAttention (after the projections and rotary embeddings).
///
/// Example:
/// ```
/// auto out = F::grouped_query_attention(q, k, v,
///     F::GroupedQueryAttentionFuncOptions().sliding_window(4096).kv_lengths(lengths));
/// ```
struct GroupedQueryAttentionFuncOptions {
  /// A query at position p sees no key after p. Default: true.
  TORCH_ARG(bool, is_causal) = true;
  /// Keys a query sees, itself included; -1: all. Default: -1.
  TORCH_ARG(int64_t, sliding_window) = -1;
  /// Score scale. Default: 1/√E.
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// Bool [B, Lk], true = a padding key no query sees. Not with kv_lengths. Default: undefined.
  TORCH_ARG(torch::Tensor, key_padding_mask) = {};
  /// int64 [B]: row b's cache holds its first kv_lengths[b] keys; the rest are never read.
  /// Default: undefined (all Lk).
  TORCH_ARG(torch::Tensor, kv_lengths) = {};
  /// int64 [B]: the position of row b's first query. Default: undefined (kv_lengths[b] - Lq,
  /// or Lk - Lq: the queries are the last keys).
  TORCH_ARG(torch::Tensor, q_start) = {};
};

} // namespace functional

} // namespace torchattn::nn
