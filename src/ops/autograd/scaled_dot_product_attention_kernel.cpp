// Autograd kernels of _scaled_dot_product_attention_forward and _backward. The forward saves
// q, k, v, the output and the softmax statistics (row max and log-sum); backward calls the
// backward op, which recomputes the scores per tile. The statistics are not differentiable,
// and double backward fails with a message that names the op.

#include <torchattn/ops/scaled_dot_product_attention.h>

#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
// Masks travel as optionals: Function::apply in LibTorch 1.13 cannot take undefined tensors.
// A mask is never differentiated here (masks that require grad take the math path).
using OptionalTensor = c10::optional<torch::Tensor>;

/// The backward op as a Function whose own backward refuses, so that double backward names
/// the op instead of silently returning wrong (zero) second derivatives.
class ScaledDotProductAttentionBackward
    : public torch::autograd::Function<ScaledDotProductAttentionBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_out, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& v, const OptionalTensor& mask,
      const torch::Tensor& out, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
      bool is_causal, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gv] = _scaled_dot_product_attention_backward(
        grad_out, q, k, v, mask, out, row_max, row_log_sum, is_causal, scale);
    return {gq, gk, gv};
  }

  static tensor_list backward(AutogradContext* /*ctx*/, const tensor_list& /*grads*/) {
    TORCH_CHECK(
        false,
        "torchattn::scaled_dot_product_attention: double backward is not supported by the "
        "fused kernel; use torchattn::nn::functional::scaled_dot_product_attention with "
        "need_weights(true) (the math path) for higher-order gradients");
  }
};

class ScaledDotProductAttentionForward
    : public torch::autograd::Function<ScaledDotProductAttentionForward> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
      const OptionalTensor& mask, bool is_causal, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, row_max, row_log_sum] =
        _scaled_dot_product_attention_forward(q, k, v, mask, is_causal, scale);
    ctx->save_for_backward({q, k, v, out, row_max, row_log_sum});
    ctx->saved_data["mask"] = mask;
    ctx->saved_data["is_causal"] = is_causal;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({row_max, row_log_sum});
    return {out, row_max, row_log_sum};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const auto mask = ctx->saved_data["mask"].toOptional<torch::Tensor>();
    const bool is_causal = ctx->saved_data["is_causal"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    auto grad_out = grads[0].defined() ? grads[0] : torch::zeros_like(saved[3]);
    auto g = ScaledDotProductAttentionBackward::apply(
        grad_out, saved[0], saved[1], saved[2], mask, saved[3], saved[4], saved[5], is_causal,
        scale);
    return {g[0], g[1], g[2], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, bool is_causal, double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  TORCH_CHECK(
      !(attn_mask.has_value() && attn_mask->defined() && attn_mask->requires_grad() &&
        torch::GradMode::is_enabled()),
      "torchattn::_scaled_dot_product_attention_forward: attn_mask requires grad, which the "
      "fused kernel does not compute; call torchattn::scaled_dot_product_attention, which takes "
      "the math path for it");
  auto r = ScaledDotProductAttentionForward::apply(query, key, value, attn_mask, is_causal, scale);
  return {r[0], r[1], r[2]};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward_autograd(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& out, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    bool is_causal, double scale) {
  auto g = ScaledDotProductAttentionBackward::apply(
      grad_out, query, key, value, attn_mask, out, row_max, row_log_sum, is_causal, scale);
  return {g[0], g[1], g[2]};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("_scaled_dot_product_attention_forward", TORCH_FN(torchattn::ops::forward_autograd));
  m.impl("_scaled_dot_product_attention_backward", TORCH_FN(torchattn::ops::backward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(scaled_dot_product_attention_autograd_registered)
