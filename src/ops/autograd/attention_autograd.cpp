// Autograd kernels of the attention ops: the fused forward saves q, k, v, the output and the
// softmax statistics (row max and log-sum); backward recomputes the scores per tile. The additive scores save q, k and the
// score weight; backward recomputes the energies. Double backward fails explicitly.

#include <torchattn/ops/attention.h>

#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Masks travel as optionals: Function::apply in LibTorch 1.13 cannot take undefined tensors,
// and a mask is never differentiated here (masks that require grad take the math path).
using OptionalTensor = c10::optional<torch::Tensor>;

OptionalTensor optional_mask(const torch::Tensor& mask) {
  return mask.defined() ? OptionalTensor(mask) : c10::nullopt;
}

using Stats = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>;

Stats call_forward(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const OptionalTensor& mask, bool is_causal, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_scaled_dot_product_attention_forward", "")
                       .typed<Stats(
                           const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                           const c10::optional<torch::Tensor>&, bool, double)>();
  return op.call(q, k, v, mask, is_causal, scale);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> call_backward(
    const torch::Tensor& grad_out, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& v, const OptionalTensor& mask, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, bool is_causal,
    double scale) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torchattn::_scaled_dot_product_attention_backward", "")
          .typed<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>(
              const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
              const torch::Tensor&, const c10::optional<torch::Tensor>&, const torch::Tensor&,
              const torch::Tensor&, const torch::Tensor&, bool, double)>();
  return op.call(grad_out, q, k, v, mask, out, row_max, row_log_sum, is_causal, scale);
}

/// The backward op as a Function whose own backward refuses, so that double backward names
/// the op instead of silently returning wrong (zero) second derivatives.
class FlashAttentionBackward : public torch::autograd::Function<FlashAttentionBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_out, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& v, const OptionalTensor& mask,
      const torch::Tensor& out, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
      bool is_causal, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gv] =
        call_backward(grad_out, q, k, v, mask, out, row_max, row_log_sum, is_causal, scale);
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

class FlashAttention : public torch::autograd::Function<FlashAttention> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
      const torch::Tensor& v, const OptionalTensor& mask, bool is_causal, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, row_max, row_log_sum] = call_forward(q, k, v, mask, is_causal, scale);
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
    auto g = FlashAttentionBackward::apply(
        grad_out, saved[0], saved[1], saved[2], mask, saved[3], saved[4], saved[5], is_causal,
        scale);
    return {g[0], g[1], g[2], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor sdpa_autograd(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    double dropout_p,
    bool is_causal,
    c10::optional<double> scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
  auto [mask, resolved] = detail::check_sdpa_args(
      "torchattn::scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, scale);
  // Dropout and gradients into the mask are not fused: the math path handles both.
  if (dropout_p > 0.0 || (mask.defined() && mask.requires_grad())) {
    return detail::sdpa_math(query, key, value, mask, dropout_p, is_causal, resolved);
  }
  return FlashAttention::apply(query, key, value, optional_mask(mask), is_causal, resolved)[0];
}

Stats forward_autograd(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    bool is_causal,
    double scale) {
  TORCH_CHECK(
      !torch::GradMode::is_enabled() ||
          !(query.requires_grad() || key.requires_grad() || value.requires_grad()),
      "torchattn::_scaled_dot_product_attention_forward: is not differentiable; call "
      "torchattn::scaled_dot_product_attention for gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_forward(query, key, value, attn_mask, is_causal, scale);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward_autograd(
    const torch::Tensor& grad_out,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& out,
    const torch::Tensor& row_max,
    const torch::Tensor& row_log_sum,
    bool is_causal,
    double scale) {
  auto g = FlashAttentionBackward::apply(
      grad_out, query, key, value, attn_mask, out, row_max, row_log_sum, is_causal, scale);
  return {g[0], g[1], g[2]};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> call_additive_backward(
    const torch::Tensor& grad_scores, const torch::Tensor& q, const torch::Tensor& k,
    const torch::Tensor& w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_additive_attention_scores_backward", "")
                       .typed<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>(
                           const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                           const torch::Tensor&)>();
  return op.call(grad_scores, q, k, w);
}

/// As FlashAttentionBackward: the backward op, whose own backward refuses.
class AdditiveScoresBackward : public torch::autograd::Function<AdditiveScoresBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_scores, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gw] = call_additive_backward(grad_scores, q, k, w);
    return {gq, gk, gw};
  }

  static tensor_list backward(AutogradContext* /*ctx*/, const tensor_list& /*grads*/) {
    TORCH_CHECK(
        false,
        "torchattn::additive_attention_scores: double backward is not supported by the fused "
        "kernel; use torchattn::nn::functional::additive_attention with need_weights(true) (the "
        "math path) for higher-order gradients");
  }
};

/// Saves only q, k and w: backward recomputes the energies.
class AdditiveScores : public torch::autograd::Function<AdditiveScores> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
      const torch::Tensor& w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto scores = ops::additive_attention_scores(q, k, w); // below autograd: the CPU kernel
    ctx->save_for_backward({q, k, w});
    return {scores};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) {
      return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    return AdditiveScoresBackward::apply(grads[0], saved[0], saved[1], saved[2]);
  }
};

torch::Tensor additive_scores_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  // query [..., Lq, D], key [..., Lk, D], score_weight [D] -> scores [..., Lq, Lk]
  detail::check_additive_args("torchattn::additive_attention_scores", query, key, score_weight);
  return AdditiveScores::apply(query, key, score_weight)[0];
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> additive_scores_backward_autograd(
    const torch::Tensor& grad_scores,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  auto g = AdditiveScoresBackward::apply(grad_scores, query, key, score_weight);
  return {g[0], g[1], g[2]};
}

} // namespace

namespace detail {
bool autograd_kernels_registered() {
  return true;
}
} // namespace detail

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("scaled_dot_product_attention", TORCH_FN(torchattn::ops::sdpa_autograd));
  m.impl("_scaled_dot_product_attention_forward", TORCH_FN(torchattn::ops::forward_autograd));
  m.impl("_scaled_dot_product_attention_backward", TORCH_FN(torchattn::ops::backward_autograd));
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_autograd));
  m.impl("_additive_attention_scores_backward",
         TORCH_FN(torchattn::ops::additive_scores_backward_autograd));
}
