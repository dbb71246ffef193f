#pragma once

// What differs between the LibTorch versions torchattn builds against (1.13 on Debian 12, 2.6
// on Debian 13), in one place.

#include <torch/types.h>
#include <torch/version.h>

#include <c10/util/Optional.h>

/// 1 where ATen has at::scaled_dot_product_attention with a `scale` argument (LibTorch >= 2.1).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define TORCHATTN_HAS_ATEN_SDPA 1
#else
#define TORCHATTN_HAS_ATEN_SDPA 0
#endif

namespace torchattn::detail {

/// PyTorch's own fused attention (at::scaled_dot_product_attention) where this LibTorch has
/// it: no mask, optional causal, explicit scale. Fails on LibTorch 1.x.
///
/// query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
inline torch::Tensor aten_sdpa(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    bool is_causal, double scale) {
#if TORCHATTN_HAS_ATEN_SDPA
  return at::scaled_dot_product_attention(
      query, key, value, /*attn_mask=*/{}, /*dropout_p=*/0.0, is_causal, scale);
#else
  (void)query, (void)key, (void)value, (void)is_causal, (void)scale;
  TORCH_CHECK(
      false, "at::scaled_dot_product_attention needs LibTorch 2.1 or later; this is ",
      TORCH_VERSION);
#endif
}

} // namespace torchattn::detail
