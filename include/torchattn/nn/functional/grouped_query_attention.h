#pragma once

#include <torchattn/nn/options/grouped_query_attention.h>

#include <torch/types.h>

namespace torchattn::nn::functional {

/// The attention of GroupedQueryAttention on projected, rotated heads: query [B, H, Lq, E],
/// key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev], H_kv dividing H (query head h reads kv
/// head h / (H / H_kv), with no copy) -> output [B, H, Lq, Ev].
///
/// Positions are bottom-right aligned: query i of row b stands at q_start[b] + i (by default
/// the last Lq of the row's keys), key j at j; with is_causal it sees keys j <= its position,
/// with a sliding window only the last `sliding_window` of those.
///
/// Routing: with kv_lengths or q_start (a cache), ops::decode_attention: the decoding kernel
/// for up to ops::kDecodeMaxQueries queries without gradient, else the tiled kernel. Without,
/// the fused flex_attention kernel (forward and backward), with key_padding_mask.
/// A query with no key to see gets a zero output.
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto q = torch::randn({2, 8, 1, 64}), k = torch::randn({2, 2, 100, 64});
/// auto v = torch::randn({2, 2, 100, 64});
/// auto out = F::grouped_query_attention(q, k, v, F::GroupedQueryAttentionFuncOptions()
///     .kv_lengths(torch::tensor({100, 37}, torch::kLong)));   // [2, 8, 1, 64]
/// ```
torch::Tensor grouped_query_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const GroupedQueryAttentionFuncOptions& options = {});

} // namespace torchattn::nn::functional
