// Meta (shape-only) kernels of _flex_attention_forward and _backward: the same checks as the
// CPU kernels where they need no data, outputs without data. torch.export, torch.compile and
// fake tensors trace the op through these.

#include "detail/checks.h"
#include "detail/flex_args.h"
#include "ops/flex_attention_params.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_meta(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, double scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  torchattn::detail::check_flex_args(
      "torchattn::_flex_attention_forward", query, key, value, TORCHATTN_FLEX_ARGS_VALUE, scale,
      /*enable_gqa=*/true, /*read_values=*/false);
  const auto opts = query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type()));
  auto out = at::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, opts);
  auto row_max = at::empty({query.size(0), query.size(1), query.size(2)}, opts);
  return {out, row_max, at::empty_like(row_max)};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
backward_meta(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, TORCHATTN_FLEX_PARAMS, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
    std::array<bool, 3> modifier_grads) {
  // grad_out [B, H, Lq, Ev] -> gradients shaped as query, key, value and the modifiers
  (void)grad_out, (void)out, (void)row_max, (void)row_log_sum, (void)scale;
  const auto a = TORCHATTN_FLEX_ARGS_VALUE;
  auto like = [](bool want, const torch::Tensor& t) {
    return want && t.defined() ? at::empty_like(t, at::MemoryFormat::Contiguous) : torch::Tensor();
  };
  return {
      at::empty_like(query, at::MemoryFormat::Contiguous),
      at::empty_like(key, at::MemoryFormat::Contiguous),
      at::empty_like(value, at::MemoryFormat::Contiguous),
      like(modifier_grads[0], a.bias),
      like(modifier_grads[1], a.position_bias),
      like(modifier_grads[2], a.alibi_slopes)};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("_flex_attention_forward", TORCH_FN(torchattn::ops::forward_meta));
  m.impl("_flex_attention_backward", TORCH_FN(torchattn::ops::backward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(flex_attention_meta_registered)
