#pragma once

// What differs between the LibTorch versions torchattn builds against (1.13 on Debian 12, 2.6
// on Debian 13), in one place.

#include <torch/torch.h>
#include <torch/types.h>
#include <torch/version.h>

#include <c10/util/Optional.h>

#include <torchattn/autocast.h>

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

/// `t` as CPU autocast casts the inputs of its lower-precision ops: float32 (and float16 or
/// bfloat16) tensors to AutocastCpu::get_dtype(); float64, integer and bool tensors unchanged.
inline torch::Tensor autocast_cpu(const torch::Tensor& t) {
  return at::autocast::cached_cast(AutocastCpu::get_dtype(), t, c10::DeviceType::CPU);
}
inline c10::optional<torch::Tensor> autocast_cpu(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? c10::optional<torch::Tensor>(autocast_cpu(*t)) : c10::nullopt;
}

/// Whether `t` is Half on the CPU under LibTorch 1.x, which has no CPU kernels for Half
/// matmul, softmax, exp or tanh: the math path's ops below compute it in float32 and round the
/// result to Half, as Half kernels with float32 arithmetic inside (LibTorch 2.x's) round it.
inline bool needs_float_for_half(const torch::Tensor& t) {
#if TORCH_VERSION_MAJOR < 2
  return t.scalar_type() == torch::kHalf && t.device().is_cpu();
#else
  (void)t;
  return false;
#endif
}

/// a.matmul(b), in any floating dtype (see needs_float_for_half).
inline torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b) {
  if (needs_float_for_half(a)) {
    return a.to(torch::kFloat).matmul(b.to(torch::kFloat)).to(a.scalar_type());
  }
  return a.matmul(b);
}

/// torch::softmax(x, dim), in any floating dtype (see needs_float_for_half).
inline torch::Tensor softmax(const torch::Tensor& x, int64_t dim) {
  if (needs_float_for_half(x)) {
    return torch::softmax(x.to(torch::kFloat), dim).to(x.scalar_type());
  }
  return torch::softmax(x, dim);
}

/// torch::logsumexp(x, dim, keepdim), in any floating dtype (see needs_float_for_half).
inline torch::Tensor logsumexp(const torch::Tensor& x, int64_t dim, bool keepdim) {
  if (needs_float_for_half(x)) {
    return torch::logsumexp(x.to(torch::kFloat), dim, keepdim).to(x.scalar_type());
  }
  return torch::logsumexp(x, dim, keepdim);
}

/// torch::tanh(x), in any floating dtype (see needs_float_for_half).
inline torch::Tensor tanh(const torch::Tensor& x) {
  if (needs_float_for_half(x)) {
    return torch::tanh(x.to(torch::kFloat)).to(x.scalar_type());
  }
  return torch::tanh(x);
}

/// torch::linear(x, w, b), in any floating dtype (see needs_float_for_half).
inline torch::Tensor linear(
    const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (needs_float_for_half(x)) {
    return torch::linear(
               x.to(torch::kFloat), w.to(torch::kFloat), b.defined() ? b.to(torch::kFloat) : b)
        .to(x.scalar_type());
  }
  return torch::linear(x, w, b);
}

} // namespace torchattn::detail
