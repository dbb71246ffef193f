#pragma once

// The op torchattn::decode_attention: attention of a few new queries against a key/value
// cache, as autoregressive decoding runs it. Registered with the dispatcher, so it serves C++,
// TorchScript and Python (torch.ops.torchattn.decode_attention) alike.

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <tuple>

namespace torchattn::ops {

/// The most queries per head that go to the decoding kernel; longer query blocks (prefill) and
/// calls that need gradients take the tiled kernel.
constexpr int64_t kDecodeMaxQueries = 16;

/// Attention of query [B, H, Lq, E] against a cache key [B, H_kv, Lk, E], value
/// [B, H_kv, Lk, Ev] (H_kv dividing H: query head h reads kv head h / (H / H_kv), with no copy;
/// any strides with unit stride in the last dim read without a copy, so a slice of a
/// preallocated cache costs nothing) -> (output [B, H, Lq, Ev], lse [B, H, Lq]).
///
/// Schema:
///   decode_attention(Tensor query, Tensor key, Tensor value, *, Tensor? kv_lengths=None,
///     Tensor? q_start=None, bool is_causal=True, int window_left=-1, float? scale=None)
///     -> (Tensor output, Tensor lse)
///
/// - `kv_lengths` int64 [B]: row b's cache holds its first kv_lengths[b] keys (0 to Lk); the
///   rest are never read. Default: all Lk.
/// - `q_start` int64 [B]: the position of row b's first query; query i stands at
///   q_start[b] + i. Default: kv_lengths[b] - Lq (the queries are the last Lq cache entries,
///   PyTorch's bottom-right causal alignment).
/// - `is_causal`: query at position p sees keys j <= p. Default: true.
/// - `window_left` >= 0: it also sees only keys j >= p - window_left (a sliding window of
///   window_left + 1 keys, Mistral's sliding_window - 1). Default: -1 (unbounded).
/// - `scale`: Default: 1/√E.
/// A query with no key to see gets a zero output and lse -inf.
///
/// Routing: with Lq <= kDecodeMaxQueries and no gradient needed, the decoding kernel
/// (flash-decoding: keys split across threads, partial results merged by their logsumexp;
/// each cache row read once for all query heads of its group). Otherwise the tiled kernel of
/// flex_attention with these masks, which is differentiable.
/// float32 and float64; bfloat16 and float16 are converted to float32 (lse float32).
///
/// Example:
///   auto [out, lse] = torchattn::ops::decode_attention(
///       q, cache_k.narrow(2, 0, len), cache_v.narrow(2, 0, len), lengths, c10::nullopt,
///       /*is_causal=*/true, /*window_left=*/-1, c10::nullopt);
std::tuple<torch::Tensor, torch::Tensor> decode_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, c10::optional<double> scale);

/// The decoding kernel on its own (forward only; `scale` resolved): (output, lse).
std::tuple<torch::Tensor, torch::Tensor> _decode_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale);

} // namespace torchattn::ops
