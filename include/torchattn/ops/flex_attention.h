#pragma once

/// The op `torchattn::flex_attention`: attention with score modifiers (soft-capping, ALiBi, a
/// relative-position table, an additive bias) and mask modifiers (causal at either alignment,
/// sliding windows, documents, prefix-LM, block masks), grouped-query attention and the
/// logsumexp, fused forward and backward on the CPU. Each C++ entry point calls through the
/// dispatcher, so C++, TorchScript and Python share one path:
///
/// ```
/// torchattn::flex_attention(Tensor query, Tensor key, Tensor value, *,
///     Tensor? attn_mask=None, Tensor? bias=None, str causal="none", int window_left=-1,
///     int window_right=-1, Tensor? q_doc_ids=None, Tensor? kv_doc_ids=None,
///     Tensor? prefix_lengths=None, Tensor? block_kinds=None, Tensor? block_index=None,
///     Tensor? block_masks=None, float softcap=0.0, Tensor? alibi_slopes=None,
///     Tensor? position_bias=None, Tensor? position_buckets=None, float? scale=None,
///     bool enable_gqa=False) -> (Tensor output, Tensor lse)
/// torchattn::_flex_attention_forward(<the same, scale resolved, no enable_gqa>)
///     -> (Tensor output, Tensor row_max, Tensor row_log_sum)
/// torchattn::_flex_attention_backward(Tensor grad_output, Tensor query, Tensor key,
///     Tensor value, <the modifiers>, Tensor output, Tensor row_max, Tensor row_log_sum,
///     float scale, bool[3] modifier_grads)
///     -> (Tensor grad_query, Tensor grad_key, Tensor grad_value, Tensor grad_bias,
///         Tensor grad_position_bias, Tensor grad_alibi_slopes)
/// ```
///
/// Kernels: src/ops/{cpu,autograd,meta}/flex_attention_kernel.cpp. C++ users call
/// torchattn::nn::functional::flex_attention with FlexAttentionFuncOptions, which also builds
/// block masks from a C++ mask_mod (include/torchattn/nn/functional/flex_attention.h).

#include <torch/types.h>

#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>

namespace torchattn::ops {

/// softmax(s) V with s = softcap(scale q·kᵀ) + slope_h (j - i) + position_bias[h,
/// position_buckets[j - i + Lq - 1]] + bias + attn_mask, -inf where a mask modifier forbids;
/// PyTorch's `torch.nn.attention.flex_attention` with these as score_mod and mask_mod.
///
/// query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
///   -> output [B, H, Lq, Ev], lse [B, H, Lq] (the logsumexp of each row of s; -inf on a row
///      with no key to attend, whose output is zero)
///
/// Mask modifiers (a query attends a key where all allow it):
/// - `attn_mask`: broadcastable to [B, H, Lq, Lk]; bool (true = may attend) or additive.
/// - `causal`: "none", "top_left" (j <= i, PyTorch's is_causal) or "bottom_right"
///   (j <= i + Lk - Lq: the queries are the last Lq keys, as in decoding with a cache).
/// - `window_left`, `window_right`: keys j with diag - window_left <= j <= diag + window_right,
///   diag being i (or i + Lk - Lq under "bottom_right"); -1: unbounded. Default: -1.
/// - `q_doc_ids` [Lq] or [B, Lq], `kv_doc_ids` [Lk] or [B, Lk], integers: a query sees only
///   keys of its document (packed sequences).
/// - `prefix_lengths` [B] or [1], integers, with causal: keys j < prefix are seen by every
///   query (prefix-LM).
/// - `block_kinds`, `block_index`, `block_masks`: a BlockMask (built in C++ by
///   torchattn::nn::functional::create_block_mask).
///
/// Score modifiers, differentiable: `bias` (broadcastable to [B, H, Lq, Lk], its gradient
/// reduced over broadcast dims), `alibi_slopes` [H], `position_bias` [H, num_buckets] with
/// `position_buckets` int64 [Lq + Lk - 1] (never materialised as [Lq, Lk]); `softcap` c > 0:
/// c tanh(x / c) of the scaled dot product before the other terms. Default: none.
///
/// `scale`: Default: 1/√E. `enable_gqa`: key and value may have H_kv heads, H_kv dividing H;
/// query head h reads kv head h / (H / H_kv), with no copy. Default: false.
/// float32, float64, bfloat16 and float16 (lse float32); double backward is not supported.
std::tuple<torch::Tensor, torch::Tensor> flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, const c10::optional<torch::Tensor>& bias,
    c10::string_view causal, int64_t window_left, int64_t window_right,
    const c10::optional<torch::Tensor>& q_doc_ids, const c10::optional<torch::Tensor>& kv_doc_ids,
    const c10::optional<torch::Tensor>& prefix_lengths,
    const c10::optional<torch::Tensor>& block_kinds,
    const c10::optional<torch::Tensor>& block_index,
    const c10::optional<torch::Tensor>& block_masks, double softcap,
    const c10::optional<torch::Tensor>& alibi_slopes,
    const c10::optional<torch::Tensor>& position_bias,
    const c10::optional<torch::Tensor>& position_buckets, c10::optional<double> scale,
    bool enable_gqa);

/// The fused forward on its own: the output and each row's softmax statistics (see
/// _scaled_dot_product_attention_forward). Differentiable in query, key, value, bias,
/// alibi_slopes and position_bias.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _flex_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, const c10::optional<torch::Tensor>& bias,
    c10::string_view causal, int64_t window_left, int64_t window_right,
    const c10::optional<torch::Tensor>& q_doc_ids, const c10::optional<torch::Tensor>& kv_doc_ids,
    const c10::optional<torch::Tensor>& prefix_lengths,
    const c10::optional<torch::Tensor>& block_kinds,
    const c10::optional<torch::Tensor>& block_index,
    const c10::optional<torch::Tensor>& block_masks, double softcap,
    const c10::optional<torch::Tensor>& alibi_slopes,
    const c10::optional<torch::Tensor>& position_bias,
    const c10::optional<torch::Tensor>& position_buckets, double scale);

/// The fused backward: the gradients of query, key, value and, where `modifier_grads` asks,
/// of bias (shaped as bias), position_bias and alibi_slopes (undefined otherwise).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
_flex_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const c10::optional<torch::Tensor>& bias, c10::string_view causal, int64_t window_left,
    int64_t window_right, const c10::optional<torch::Tensor>& q_doc_ids,
    const c10::optional<torch::Tensor>& kv_doc_ids,
    const c10::optional<torch::Tensor>& prefix_lengths,
    const c10::optional<torch::Tensor>& block_kinds,
    const c10::optional<torch::Tensor>& block_index,
    const c10::optional<torch::Tensor>& block_masks, double softcap,
    const c10::optional<torch::Tensor>& alibi_slopes,
    const c10::optional<torch::Tensor>& position_bias,
    const c10::optional<torch::Tensor>& position_buckets, const torch::Tensor& output,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
    std::array<bool, 3> modifier_grads);

/// The exact attention weights of query rows `rows` (int64 [R]) from query, key and the lse
/// that flex_attention returned, with the same modifiers: [B, H, R, Lk], in O(R · Lk) memory,
/// so the weights of a long sequence can be read without its [Lq, Lk] matrix.
torch::Tensor flex_attention_weights(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, const c10::optional<torch::Tensor>& attn_mask,
    const c10::optional<torch::Tensor>& bias, c10::string_view causal, int64_t window_left,
    int64_t window_right, const c10::optional<torch::Tensor>& q_doc_ids,
    const c10::optional<torch::Tensor>& kv_doc_ids,
    const c10::optional<torch::Tensor>& prefix_lengths,
    const c10::optional<torch::Tensor>& block_kinds,
    const c10::optional<torch::Tensor>& block_index,
    const c10::optional<torch::Tensor>& block_masks, double softcap,
    const c10::optional<torch::Tensor>& alibi_slopes,
    const c10::optional<torch::Tensor>& position_bias,
    const c10::optional<torch::Tensor>& position_buckets, c10::optional<double> scale,
    bool enable_gqa);

} // namespace torchattn::ops
