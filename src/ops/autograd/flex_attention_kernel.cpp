// Autograd kernels of _flex_attention_forward and _backward. The forward saves q, k, v, the
// differentiable modifiers (bias, position_bias, alibi_slopes), the output and the softmax
// statistics; backward calls the backward op, which recomputes the scores per tile and gives
// the modifiers' gradients too. The statistics are not differentiable, and double backward
// fails with a message that names the op.

#include <torchattn/ops/flex_attention.h>

#include "ops/flex_attention_params.h"
#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using OptionalTensor = c10::optional<torch::Tensor>;

/// The backward op as a Function whose own backward refuses, so that double backward names
/// the op instead of silently returning wrong (zero) second derivatives.
class FlexAttentionBackward : public torch::autograd::Function<FlexAttentionBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_out, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& v, const OptionalTensor& attn_mask,
      const OptionalTensor& bias, const std::string& causal, int64_t window_left,
      int64_t window_right, const OptionalTensor& q_doc_ids, const OptionalTensor& kv_doc_ids,
      const OptionalTensor& prefix_lengths, const OptionalTensor& block_kinds,
      const OptionalTensor& block_index, const OptionalTensor& block_masks, double softcap,
      const OptionalTensor& alibi_slopes, const OptionalTensor& position_bias,
      const OptionalTensor& position_buckets, const torch::Tensor& out,
      const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
      std::array<bool, 3> modifier_grads) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gv, gb, gp, ga] = _flex_attention_backward(
        grad_out, q, k, v, TORCHATTN_FLEX_ARGS, out, row_max, row_log_sum, scale, modifier_grads);
    // A Function's outputs must be defined: gradients not asked for travel as empty tensors
    // (see modifier_grads_of).
    auto or_empty = [](const torch::Tensor& t) { return t.defined() ? t : torch::empty({0}); };
    return {gq, gk, gv, or_empty(gb), or_empty(gp), or_empty(ga)};
  }

  static tensor_list backward(AutogradContext* /*ctx*/, const tensor_list& /*grads*/) {
    TORCH_CHECK(
        false,
        "torchattn::flex_attention: double backward is not supported by the fused kernel; use "
        "torchattn::nn::functional::flex_attention with need_weights(true) (the math path) for "
        "higher-order gradients");
  }
};

/// The backward's gradients with those of modifiers that were not asked for undefined again
/// (FlexAttentionBackward returns them as empty tensors).
tensor_list modifier_grads_of(
    tensor_list g, const std::array<bool, 3>& asked, const OptionalTensor& bias,
    const OptionalTensor& position_bias, const OptionalTensor& alibi_slopes) {
  const OptionalTensor* mods[] = {&bias, &position_bias, &alibi_slopes};
  for (size_t i = 0; i < 3; ++i) {
    if (!(asked[i] && mods[i]->has_value() && (*mods[i])->defined())) {
      g[3 + i] = torch::Tensor();
    }
  }
  return g;
}

// The names under which the forward keeps its non-tensor and optional arguments.
constexpr const char* kOptionals[] = {"attn_mask",      "q_doc_ids",       "kv_doc_ids",
                                      "prefix_lengths", "block_kinds",     "block_index",
                                      "block_masks",    "position_buckets"};

class FlexAttentionForward : public torch::autograd::Function<FlexAttentionForward> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
      const OptionalTensor& attn_mask, const OptionalTensor& bias, const std::string& causal,
      int64_t window_left, int64_t window_right, const OptionalTensor& q_doc_ids,
      const OptionalTensor& kv_doc_ids, const OptionalTensor& prefix_lengths,
      const OptionalTensor& block_kinds, const OptionalTensor& block_index,
      const OptionalTensor& block_masks, double softcap, const OptionalTensor& alibi_slopes,
      const OptionalTensor& position_bias, const OptionalTensor& position_buckets, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, row_max, row_log_sum] = _flex_attention_forward(q, k, v, TORCHATTN_FLEX_ARGS, scale);
    ctx->save_for_backward({q, k, v, out, row_max, row_log_sum});
    const OptionalTensor* optionals[] = {&attn_mask,      &q_doc_ids,       &kv_doc_ids,
                                         &prefix_lengths, &block_kinds,     &block_index,
                                         &block_masks,    &position_buckets};
    for (size_t i = 0; i < std::size(kOptionals); ++i) {
      ctx->saved_data[kOptionals[i]] = *optionals[i];
    }
    ctx->saved_data["bias"] = bias;
    ctx->saved_data["alibi_slopes"] = alibi_slopes;
    ctx->saved_data["position_bias"] = position_bias;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["window_left"] = window_left;
    ctx->saved_data["window_right"] = window_right;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({row_max, row_log_sum});
    return {out, row_max, row_log_sum};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    const auto saved = ctx->get_saved_variables();
    auto opt = [&](const char* name) { return ctx->saved_data[name].toOptional<torch::Tensor>(); };
    const auto bias = opt("bias"), alibi = opt("alibi_slopes"), table = opt("position_bias");
    auto wants = [](const OptionalTensor& t) {
      return t.has_value() && t->defined() && t->requires_grad();
    };
    const std::array<bool, 3> modifier_grads{wants(bias), wants(table), wants(alibi)};
    auto grad_out = grads[0].defined() ? grads[0] : torch::zeros_like(saved[3]);
    auto g = FlexAttentionBackward::apply(
        grad_out, saved[0], saved[1], saved[2], opt("attn_mask"), bias,
        ctx->saved_data["causal"].toStringRef(), ctx->saved_data["window_left"].toInt(),
        ctx->saved_data["window_right"].toInt(), opt("q_doc_ids"), opt("kv_doc_ids"),
        opt("prefix_lengths"), opt("block_kinds"), opt("block_index"), opt("block_masks"),
        ctx->saved_data["softcap"].toDouble(), alibi, table, opt("position_buckets"), saved[3],
        saved[4], saved[5], ctx->saved_data["scale"].toDouble(), modifier_grads);
    g = modifier_grads_of(std::move(g), modifier_grads, bias, table, alibi);
    const torch::Tensor none;
    // One gradient per argument of forward: q, k, v, attn_mask, bias, causal, window_left,
    // window_right, q_doc_ids, kv_doc_ids, prefix_lengths, block_kinds, block_index,
    // block_masks, softcap, alibi_slopes, position_bias, position_buckets, scale.
    return {g[0], g[1], g[2], none, g[3], none, none, none, none, none,
            none, none, none, none, none, g[5], g[4], none, none};
  }
};

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, double scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  TORCH_CHECK(
      !(attn_mask.has_value() && attn_mask->defined() && attn_mask->requires_grad() &&
        torch::GradMode::is_enabled()),
      "torchattn::_flex_attention_forward: attn_mask requires grad, which the fused kernel "
      "does not compute; pass it as bias (or call torchattn::flex_attention, which does)");
  auto r = FlexAttentionForward::apply(
      query, key, value, attn_mask, bias, std::string(causal), window_left, window_right, q_doc_ids,
      kv_doc_ids, prefix_lengths, block_kinds, block_index, block_masks, softcap, alibi_slopes,
      position_bias, position_buckets, scale);
  return {r[0], r[1], r[2]};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
backward_autograd(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, TORCHATTN_FLEX_PARAMS, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
    std::array<bool, 3> modifier_grads) {
  auto g = FlexAttentionBackward::apply(
      grad_out, query, key, value, attn_mask, bias, std::string(causal), window_left, window_right,
      q_doc_ids, kv_doc_ids, prefix_lengths, block_kinds, block_index, block_masks, softcap,
      alibi_slopes, position_bias, position_buckets, out, row_max, row_log_sum, scale,
      modifier_grads);
  g = modifier_grads_of(std::move(g), modifier_grads, bias, position_bias, alibi_slopes);
  return {g[0], g[1], g[2], g[3], g[4], g[5]};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("_flex_attention_forward", TORCH_FN(torchattn::ops::forward_autograd));
  m.impl("_flex_attention_backward", TORCH_FN(torchattn::ops::backward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(flex_attention_autograd_registered)
