// Meta (shape-only) kernel of _decode_attention_forward: the same checks as the CPU kernel,
// outputs without data, for torch.export, torch.compile and fake tensors.

#include "detail/checks.h"
#include "detail/decode_args.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor> forward_meta(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> output [B, H, Lq, Ev], lse [B, H, Lq]
  (void)is_causal;
  torchattn::detail::check_decode_args(
      "torchattn::_decode_attention_forward", query, key, value, kv_lengths, q_start, window_left,
      scale, /*read_values=*/false);
  auto out =
      at::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, query.options());
  return {
      out, at::empty(
               {query.size(0), query.size(1), query.size(2)},
               query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type())))};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("_decode_attention_forward", TORCH_FN(torchattn::ops::forward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(decode_attention_meta_registered)
