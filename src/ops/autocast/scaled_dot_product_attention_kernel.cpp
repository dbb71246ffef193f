// CPU autocast kernel of scaled_dot_product_attention. Under LibTorch's CPU autocast
// (at::autocast::set_cpu_enabled / torch.autocast("cpu")) the op is a lower-precision op, as
// PyTorch's own scaled_dot_product_attention is: query, key, value and a floating attn_mask are
// cast to the autocast dtype (bfloat16 by default), so that a model whose projections autocast
// made bfloat16 runs the fused bfloat16 kernel. float64 inputs are left as they are.

#include <torchattn/ops/scaled_dot_product_attention.h>

#include "detail/compat.h"
#include "ops/registration.h"

#include <torch/library.h>

namespace torchattn::ops {

namespace {

torch::Tensor sdpa_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, double dropout_p, bool is_causal,
    c10::optional<double> scale) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  using torchattn::detail::autocast_cpu;
  return torchattn::ops::scaled_dot_product_attention(
      autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), autocast_cpu(attn_mask),
      dropout_p, is_causal, scale);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, AutocastCPU, m) {
  m.impl("scaled_dot_product_attention", TORCH_FN(torchattn::ops::sdpa_autocast));
}

TORCHATTN_REGISTRATION_ANCHOR(scaled_dot_product_attention_autocast_registered)
