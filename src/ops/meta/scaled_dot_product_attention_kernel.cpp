// Meta (shape-only) kernels of _scaled_dot_product_attention_forward and _backward: the same
// checks as the CPU kernels, outputs without data. torch.export, torch.compile and fake tensors
// trace the op through these.

#include "detail/checks.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_meta(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, bool is_causal, double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  (void)is_causal;
  torchattn::detail::check_sdpa_args(
      "torchattn::_scaled_dot_product_attention_forward", query, key, value, attn_mask,
      /*dropout_p=*/0.0, scale);
  const auto opts = query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type()));
  auto out = at::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, opts);
  auto row_max = at::empty({query.size(0), query.size(1), query.size(2)}, opts);
  return {out, row_max, at::empty_like(row_max)};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward_meta(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& out, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    bool is_causal, double scale) {
  // grad_out [B, H, Lq, Ev] -> grad_query, grad_key, grad_value shaped as query, key, value
  (void)is_causal;
  torchattn::detail::check_sdpa_backward_args(
      "torchattn::_scaled_dot_product_attention_backward", grad_out, query, key, value, attn_mask,
      out, row_max, row_log_sum, scale);
  return {
      at::empty_like(query, at::MemoryFormat::Contiguous),
      at::empty_like(key, at::MemoryFormat::Contiguous),
      at::empty_like(value, at::MemoryFormat::Contiguous)};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("_scaled_dot_product_attention_forward", TORCH_FN(torchattn::ops::forward_meta));
  m.impl("_scaled_dot_product_attention_backward", TORCH_FN(torchattn::ops::backward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(scaled_dot_product_attention_meta_registered)
