#pragma once

#include <torchattn/nn/options/flex_attention.h>

#include <torch/types.h>

namespace torchattn::nn::functional {

/// What flex_attention returns: the output [B, H, Lq, Ev], the logsumexp of each row's
/// scores [B, H, Lq] (-inf on a row with no key to attend), and the weights [B, H, Lq, Lk]
/// when need_weights (else undefined).
struct FlexAttentionOutput {
  torch::Tensor output, lse, weights;
};

/// Flexible attention (PyTorch's `flex_attention`) by the fused CPU kernel, forward and
/// backward: query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev].
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto q = torch::randn({1, 8, 1024, 64}), k = torch::randn({1, 2, 1024, 64});
/// auto v = torch::randn({1, 2, 1024, 64});
/// auto out = F::flex_attention(q, k, v, F::FlexAttentionFuncOptions()
///     .causal("top_left").alibi_slopes(F::alibi_slopes(8)).enable_gqa(true)).output;
/// ```
FlexAttentionOutput flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const FlexAttentionFuncOptions& options = {});

/// The exact weights [B, H, R, Lk] of query rows `rows` (int64 [R]) from query, key and the lse
/// flex_attention returned with the same options, in O(R · Lk) memory.
///
/// Example:
/// ```
/// auto r = F::flex_attention(q, k, v, opts);
/// auto w = F::flex_attention_weights(q, k, r.lse, torch::tensor({0, 4095}), opts);
/// ```
torch::Tensor flex_attention_weights(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, const FlexAttentionFuncOptions& options = {});

/// Variable-length (packed, unpadded) attention, FlashAttention's varlen interface: query
/// [T, H, E], key [Tk, H_kv, E], value [Tk, H_kv, Ev] hold the sequences back to back,
/// sequence s at rows [cu_seqlens_q[s], cu_seqlens_q[s + 1]) (cu_seqlens int64 [S + 1], from
/// 0 to T). Each sequence attends only itself. Causal masks and windows need the same
/// sequences for queries and keys (cu_seqlens_q equal to cu_seqlens_k), where they align
/// within each sequence. Returns output [T, H, Ev] and lse [H, T]. `options` may not hold
/// document ids.
///
/// Example:
/// ```
/// auto cu = torch::tensor({0, 100, 350, 400}, torch::kLong);
/// auto r = F::flex_attention_varlen(q, k, v, cu, cu, F::FlexAttentionFuncOptions()
///     .causal("top_left"));
/// ```
FlexAttentionOutput flex_attention_varlen(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& cu_seqlens_q, const torch::Tensor& cu_seqlens_k,
    const FlexAttentionFuncOptions& options = {});

/// Evaluates `mask_mod` on every (b, h, q, kv) of [B, H, Lq, Lk] (B or H may be 1 to
/// broadcast) and keeps, per block of `block_size` x `block_size`, whether it is empty, full
/// or partial; PyTorch's `create_block_mask`. O(B·H·Lq·Lk) calls, in parallel: build it once.
///
/// Example:
/// ```
/// auto bm = F::create_block_mask(
///     [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q && q - kv < 256; },
///     1, 1, 4096, 4096);
/// auto out = F::flex_attention(q, k, v, F::FlexAttentionFuncOptions().block_mask(bm)).output;
/// ```
BlockMask create_block_mask(
    const MaskMod& mask_mod, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
    int64_t block_size = 128);

/// A BlockMask from a dense bool mask broadcastable to [B, H, Lq, Lk] with B or H kept 1 where
/// the mask has 1 (true = may attend).
BlockMask block_mask_from_dense(const torch::Tensor& mask, int64_t block_size = 128);

/// Mask modifiers that hold when all (and_masks) or any (or_masks) of theirs do; PyTorch's
/// `and_masks` and `or_masks`.
MaskMod and_masks(std::vector<MaskMod> mods);
MaskMod or_masks(std::vector<MaskMod> mods);

/// The ALiBi slopes of H heads, 2^(-8 h / H) for h = 1..H (H a power of two; otherwise the
/// interleaving of Press et al.'s reference code): float32 [H].
torch::Tensor alibi_slopes(int64_t num_heads);

/// T5's relative-position buckets (HuggingFace's `_relative_position_bucket`) of j - i for
/// every j - i in [-(Lq - 1), Lk - 1]: int64 [Lq + Lk - 1], for position_buckets.
torch::Tensor t5_position_buckets(
    int64_t Lq, int64_t Lk, int64_t num_buckets = 32, int64_t max_distance = 128,
    bool bidirectional = true);

/// The plain clipped distance: bucket clamp(j - i, -max_distance, max_distance) +
/// max_distance, of 2 max_distance + 1 buckets: int64 [Lq + Lk - 1].
torch::Tensor clipped_position_buckets(int64_t Lq, int64_t Lk, int64_t max_distance);

} // namespace torchattn::nn::functional
