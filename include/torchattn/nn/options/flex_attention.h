#pragma once

#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace torchattn::nn {

namespace functional {

/// A mask modifier: whether query `q` of batch `b`, head `h` may attend key `kv`; PyTorch's
/// `mask_mod(b, h, q_idx, kv_idx)`. C++ only: it becomes a BlockMask (create_block_mask),
/// which the op takes from C++, TorchScript and Python alike.
using MaskMod = std::function<bool(int64_t b, int64_t h, int64_t q, int64_t kv)>;

/// Which (query block, key block) tiles of [B, H, Lq, Lk] a mask leaves empty (skipped by the
/// kernel), full (no per-element work) or partial (with their element masks), in blocks of
/// `block_size` x `block_size`; PyTorch's `BlockMask`. Build it once with create_block_mask
/// and reuse it across layers and steps. B or H of size 1 broadcast.
struct BlockMask {
  torch::Tensor kinds; ///< uint8 [B, H, ceil(Lq / S), ceil(Lk / S)]: 0 empty, 1 partial, 2 full
  torch::Tensor index; ///< int64, same shape: a partial block's index in `masks`, else -1
  torch::Tensor masks; ///< bool [P, S, S]: the partial blocks, true = may attend
  int64_t block_size = 128;
  int64_t Lq = 0, Lk = 0;

  /// The fraction of blocks that are not empty (PyTorch's BlockMask.sparsity(), as density).
  double density() const;
};

/// Options for `functional::flex_attention`, which mirrors
/// `torch.nn.attention.flex_attention.flex_attention` with the common score and mask
/// modifiers built in (see include/torchattn/ops/flex_attention.h for the formulas).
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto r = F::flex_attention(q, k, v,
///     F::FlexAttentionFuncOptions().causal("top_left").window_left(256).softcap(50.0));
/// auto out = r.output, lse = r.lse;
/// ```
struct FlexAttentionFuncOptions {
  /// Bool (true = may attend) or additive, broadcastable to [B, H, Lq, Lk]. Default: undefined.
  TORCH_ARG(torch::Tensor, attn_mask) = {};
  /// Additive and differentiable, broadcastable to [B, H, Lq, Lk]. Default: undefined.
  TORCH_ARG(torch::Tensor, bias) = {};
  /// "none", "top_left" (PyTorch's is_causal) or "bottom_right". Default: "none".
  TORCH_ARG(std::string, causal) = "none";
  /// Keys before / after the diagonal a query sees; -1: unbounded. Default: -1.
  TORCH_ARG(int64_t, window_left) = -1;
  TORCH_ARG(int64_t, window_right) = -1;
  /// Document ids [Lq] or [B, Lq] and [Lk] or [B, Lk]. Default: undefined.
  TORCH_ARG(torch::Tensor, q_doc_ids) = {};
  TORCH_ARG(torch::Tensor, kv_doc_ids) = {};
  /// Prefix-LM: [B] or [1] lengths of a bidirectional prefix, with causal. Default: undefined.
  TORCH_ARG(torch::Tensor, prefix_lengths) = {};
  /// A block mask from create_block_mask. Default: none.
  TORCH_ARG(c10::optional<BlockMask>, block_mask) = c10::nullopt;
  /// Soft-cap c > 0 of the scaled dot product, c tanh(x / c); 0: none. Default: 0.
  TORCH_ARG(double, softcap) = 0.0;
  /// ALiBi slopes [H] (alibi_slopes() gives the standard ones). Default: undefined.
  TORCH_ARG(torch::Tensor, alibi_slopes) = {};
  /// Relative-position table [H, num_buckets] and the bucket of each j - i
  /// (t5_position_buckets, clipped_position_buckets). Default: undefined.
  TORCH_ARG(torch::Tensor, position_bias) = {};
  TORCH_ARG(torch::Tensor, position_buckets) = {};
  /// Default: 1/√E.
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// Key and value may have fewer heads, dividing H. Default: false.
  TORCH_ARG(bool, enable_gqa) = false;
  /// Also return the weights [B, H, Lq, Lk], by the math path (O(Lq·Lk) memory, any order of
  /// gradients). Default: false.
  TORCH_ARG(bool, need_weights) = false;
};

} // namespace functional

/// Options for `FlexAttention`: the modifiers a model keeps, with its learnable ones as
/// parameters (the per-call ones, documents and masks, are forward's arguments).
///
/// Example:
/// ```
/// torchattn::nn::FlexAttention t5(torchattn::nn::FlexAttentionOptions(8)
///     .position_buckets(32).max_distance(128));   // T5's learnable relative positions
/// ```
struct FlexAttentionOptions {
  /* implicit */ FlexAttentionOptions(int64_t num_heads) : num_heads_(num_heads) {}
  /// Heads of the query (H).
  TORCH_ARG(int64_t, num_heads);
  /// "none", "top_left" or "bottom_right". Default: "none".
  TORCH_ARG(std::string, causal) = "none";
  /// Sliding window; -1: unbounded. Default: -1.
  TORCH_ARG(int64_t, window_left) = -1;
  TORCH_ARG(int64_t, window_right) = -1;
  /// Soft-cap of the scaled dot product; 0: none. Default: 0.
  TORCH_ARG(double, softcap) = 0.0;
  /// ALiBi with the standard slopes (a buffer `alibi_slopes` [H]). Default: false.
  TORCH_ARG(bool, alibi) = false;
  /// ALiBi slopes as a parameter, initialised to the standard ones. Default: false.
  TORCH_ARG(bool, learnable_alibi) = false;
  /// T5 relative-position buckets; > 0 adds the parameter `position_bias` [H, buckets]
  /// (normal, std 0.02). Default: 0 (none).
  TORCH_ARG(int64_t, position_buckets) = 0;
  /// T5's max_distance and bidirectional. Default: 128, true.
  TORCH_ARG(int64_t, max_distance) = 128;
  TORCH_ARG(bool, bidirectional) = true;
  /// Default: 1/√E.
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// Key and value may have fewer heads, dividing H. Default: false.
  TORCH_ARG(bool, enable_gqa) = false;
};

} // namespace torchattn::nn
