#pragma once

/// C++ entry points of the dispatcher ops in the `torchattn` library. They call through the
/// dispatcher, so C++, TorchScript and Python (after
/// `torch.ops.load_library("libtorchattn.so")`) share one path:
///
/// ```
/// torchattn::scaled_dot_product_attention(Tensor query, Tensor key, Tensor value,
///     Tensor? attn_mask=None, float dropout_p=0.0, bool is_causal=False, float? scale=None)
///     -> Tensor
/// torchattn::additive_attention_scores(Tensor query, Tensor key, Tensor score_weight)
///     -> Tensor
/// ```

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <string>

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
/// - float32 and float64, any strides; double backward is not supported.
///
/// Example:
/// ```
/// auto q = torch::randn({1, 8, 4096, 64}), k = torch::randn_like(q), v = torch::randn_like(q);
/// auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0,
///                                                          /*is_causal=*/true);
/// ```
torch::Tensor scaled_dot_product_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask = c10::nullopt,
    double dropout_p = 0.0,
    bool is_causal = false,
    c10::optional<double> scale = c10::nullopt);

/// The additive (Bahdanau) scores Σ_d w_d tanh(q_id + k_jd), fused: neither forward nor
/// backward forms the [..., Lq, Lk, D] energies, which the composite of ATen ops writes, reads
/// again and keeps for backward. Backward recomputes them and skips scores whose gradient is
/// exactly zero (masked ones).
///
/// query [..., Lq, D], key [..., Lk, D] (the same leading dims), score_weight [D]
///   -> scores [..., Lq, Lk]
///
/// - query and key are already projected (W_q q + b_q and W_k k + b_k); a bias on the score
///   shifts every score equally and is added by the caller.
/// - float32 and float64 on CPU, any strides; double backward is not supported.
///
/// Example:
/// ```
/// auto q = torch::randn({32, 12, 256}), k = torch::randn({32, 15, 256});
/// auto scores = torchattn::ops::additive_attention_scores(q, k, torch::randn({256}));  // [32, 12, 15]
/// ```
torch::Tensor additive_attention_scores(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& score_weight);

/// The vector instruction set the fused kernels run with: "avx512", "avx2" or "default".
/// Chosen at load time as the best the CPU supports, lowered by the environment variable
/// `TORCHATTN_CPU_CAPABILITY` (or ATen's `ATEN_CPU_CAPABILITY`).
std::string kernel_capability();

/// Runs the fused kernels with `capability` ("avx512", "avx2" or "default") from now on, e.g.
/// to compare the builds on one machine; fails if the CPU lacks it. Returns the previous one.
std::string set_kernel_capability(const std::string& capability);

/// Whether the op library is registered. Referenced by <torchattn/torchattn.h>, so that linking
/// any torchattn code keeps the static registrations (which nothing else references).
bool ops_registered();

} // namespace torchattn::ops
