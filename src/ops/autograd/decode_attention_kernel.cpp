// Autograd kernel of _decode_attention_forward. The decoding kernel is forward only: the
// public op routes calls that need gradients to the tiled kernel, and a direct call of this
// op with inputs that require grad fails here, naming the op to use, instead of returning
// outputs silently cut from the graph.

#include <torchattn/ops/decode_attention.h>

#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor> forward_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale) {
  TORCH_CHECK(
      !torch::GradMode::is_enabled() ||
          !(query.requires_grad() || key.requires_grad() || value.requires_grad()),
      "torchattn::_decode_attention_forward: query, key or value requires grad, expected none "
      "(the decoding kernel is forward only; torchattn::decode_attention routes gradients to "
      "the tiled kernel)");
  at::AutoDispatchBelowADInplaceOrView guard;
  return _decode_attention_forward(
      query, key, value, kv_lengths, q_start, is_causal, window_left, scale);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("_decode_attention_forward", TORCH_FN(torchattn::ops::forward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(decode_attention_autograd_registered)
