#pragma once

// The arguments of decode_attention, checked once (by the composite and the kernels), and its
// masks as a dense boolean mask for the tiled route.

#include <torch/types.h>

#include <c10/util/Optional.h>

namespace torchattn::detail {

/// Checks query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev] (H_kv dividing H),
/// float32 or float64, kv_lengths int64 [B] in [0, Lk] and q_start int64 [B] (values read only
/// when `read_values`: not on Meta), window_left >= -1; returns the resolved scale.
double check_decode_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& kv_lengths,
    const c10::optional<torch::Tensor>& q_start, int64_t window_left, c10::optional<double> scale,
    bool read_values = true);

/// Whether a forward may take the decoding kernel, on a device it runs on: at most
/// ops::kDecodeMaxQueries queries per head, and no gradient needed (the kernel is forward
/// only). decode_attention, scaled_dot_product_attention and flex_attention route with it.
bool decodable(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value);

/// decode_attention's masks as bool [B, 1, Lq, Lk], true where a query sees a key.
torch::Tensor decode_mask(
    const torch::Tensor& query, const torch::Tensor& key,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left);

} // namespace torchattn::detail
