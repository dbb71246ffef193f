// Autograd kernels of additive_attention_scores and its backward: the forward saves q, k and
// the score weight, and backward recomputes the energies in the backward op. Double backward
// fails with a message that names the op.

#include <torchattn/ops/additive_attention_scores.h>

#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

/// The backward op as a Function whose own backward refuses.
class AdditiveAttentionScoresBackward
    : public torch::autograd::Function<AdditiveAttentionScoresBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_scores, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gw] = _additive_attention_scores_backward(grad_scores, q, k, w);
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
class AdditiveAttentionScores : public torch::autograd::Function<AdditiveAttentionScores> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
      const torch::Tensor& w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto scores = additive_attention_scores(q, k, w);
    ctx->save_for_backward({q, k, w});
    return {scores};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) {
      return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    return AdditiveAttentionScoresBackward::apply(grads[0], saved[0], saved[1], saved[2]);
  }
};

torch::Tensor additive_scores_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  // query [..., Lq, D], key [..., Lk, D], score_weight [D] -> scores [..., Lq, Lk]
  return AdditiveAttentionScores::apply(query, key, score_weight)[0];
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> additive_scores_backward_autograd(
    const torch::Tensor& grad_scores, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  auto g = AdditiveAttentionScoresBackward::apply(grad_scores, query, key, score_weight);
  return {g[0], g[1], g[2]};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_autograd));
  m.impl(
      "_additive_attention_scores_backward",
      TORCH_FN(torchattn::ops::additive_scores_backward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(additive_attention_scores_autograd_registered)
