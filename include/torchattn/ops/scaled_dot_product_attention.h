#pragma once

/// The op `torchattn::scaled_dot_product_attention` and the two ops that are its fused kernel's
/// halves. Each C++ entry point calls through the dispatcher, so C++, TorchScript and Python
/// (after `torch.ops.load_library("libtorchattn.so")`) share one path:
///
/// ```
/// torchattn::scaled_dot_product_attention(Tensor query, Tensor key, Tensor value,
///     Tensor? attn_mask=None, float dropout_p=0.0, bool is_causal=False, float? scale=None)
///     -> Tensor
/// torchattn::_scaled_dot_product_attention_forward(Tensor query, Tensor key, Tensor value,
///     Tensor? attn_mask, bool is_causal, float scale)
///     -> (Tensor output, Tensor row_max, Tensor row_log_sum)
/// torchattn::_scaled_dot_product_attention_backward(Tensor grad_output, Tensor query,
///     Tensor key, Tensor value, Tensor? attn_mask, Tensor output, Tensor row_max,
///     Tensor row_log_sum, bool is_causal, float scale)
///     -> (Tensor grad_query, Tensor grad_key, Tensor grad_value)
/// ```
///
/// Kernels: src/ops/cpu/, src/ops/autograd/ and
/// src/ops/meta/scaled_dot_product_attention_kernel.cpp.

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <tuple>

namespace torchattn::ops {

/// softmax(Q Kᵀ · scale + mask) V by the fused CPU kernel: tiles of queries and keys with an
/// online softmax, so memory stays O(L) where the math path needs [B, H, Lq, Lk] for the
/// scores. Mirrors `torch.nn.functional.scaled_dot_product_attention` (PyTorch 2.x).
///
/// query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
///
/// - `attn_mask`: broadcastable to [B, H, Lq, Lk]; bool (true = may attend) or additive in the
///   dtype of query. Rows with no key to attend give zero output and zero gradients (PyTorch
///   gives NaN).
/// - `is_causal`: query i attends keys j <= i (top-left aligned, as PyTorch); whole tiles
///   above the diagonal are skipped.
/// - `scale`: Default: 1/√E.
/// - `dropout_p > 0`, or an additive mask that requires grad, is not fused: the op then runs
///   the math path (same results, O(Lq·Lk) memory).
/// - float32, float64, bfloat16 and float16 (scores and accumulators in float32; P and dS
///   rounded to the input dtype before their products, see README "bfloat16 and float16"),
///   any strides; double backward is not supported.
///
/// Example:
/// ```
/// auto q = torch::randn({1, 8, 4096, 64}), k = torch::randn_like(q), v = torch::randn_like(q);
/// auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0,
///                                                          /*is_causal=*/true);
/// ```
torch::Tensor scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask = c10::nullopt, double dropout_p = 0.0,
    bool is_causal = false, c10::optional<double> scale = c10::nullopt);

/// The fused forward on its own, for callers that merge partial results (ring attention,
/// split-K decoding): the output and each row's softmax statistics of the scaled, masked
/// scores s, row_max m = max s and row_log_sum log Σ exp(s - m) [B, H, Lq]. Their sum is the
/// logsumexp; they are kept apart because the sum rounds away log Σ where |m| is large. Both
/// are -inf on a row with no key to attend, whose output is zero. `scale` is explicit. For
/// bfloat16 and float16 inputs the output and the statistics are float32 (the output
/// unrounded; backward takes it so, or rounded).
/// Differentiable in query, key and value (not in the statistics).
///
/// Example:
/// ```
/// auto [out, row_max, row_log_sum] = torchattn::ops::_scaled_dot_product_attention_forward(
///     q, k, v, {}, /*is_causal=*/false, /*scale=*/0.125);
/// auto lse = row_max + row_log_sum;  // [B, H, Lq]
/// ```
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _scaled_dot_product_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, bool is_causal, double scale);

/// The fused backward: gradients of query, key and value from grad_output and what
/// _scaled_dot_product_attention_forward returned for the same arguments. Its statistics are
/// checked (shapes, and values the forward can produce). Not differentiable.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _scaled_dot_product_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& output, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    bool is_causal, double scale);

} // namespace torchattn::ops
