// CPU autocast kernel of decode_attention: a lower-precision op under LibTorch's CPU
// autocast, like scaled_dot_product_attention (ops/autocast/scaled_dot_product_attention_
// kernel.cpp). query, key and value are cast to the autocast dtype; the lengths are integers.

#include <torchattn/ops/decode_attention.h>

#include "detail/compat.h"
#include "ops/registration.h"

#include <torch/library.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor> decode_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, c10::optional<double> scale) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  using torchattn::detail::autocast_cpu;
  return torchattn::ops::decode_attention(
      autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), kv_lengths, q_start, is_causal,
      window_left, scale);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, AutocastCPU, m) {
  m.impl("decode_attention", TORCH_FN(torchattn::ops::decode_autocast));
}

TORCHATTN_REGISTRATION_ANCHOR(decode_attention_autocast_registered)
