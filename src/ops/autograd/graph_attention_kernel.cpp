// Autograd kernels of graph_attention and its backward: the forward saves its inputs only,
// and backward calls the backward op, which recomputes the scores and each node's softmax. lse and
// the attention weights are not differentiable; double backward fails with a message that names the
// op.

#include <torchattn/ops/graph_attention.h>

#include "detail/graph_args.h"
#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using OptionalTensor = c10::optional<torch::Tensor>;

OptionalTensor optional_of(const torch::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : c10::nullopt;
}

/// The backward op as a Function whose own backward refuses.
class GraphAttentionBackward : public torch::autograd::Function<GraphAttentionBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_out, const torch::Tensor& q,
      const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& row_ptr,
      const torch::Tensor& col_index, const std::string& score, const OptionalTensor& score_weight,
      double negative_slope, double scale, const OptionalTensor& edge_scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gq, gk, gv, gw, ges] = _graph_attention_backward(
        grad_out, q, k, v, row_ptr, col_index, score, score_weight, negative_slope, scale,
        edge_scale);
    // A Function's outputs must be defined: absent gradients travel as empty tensors.
    auto or_empty = [](const torch::Tensor& t) { return t.defined() ? t : torch::empty({0}); };
    return {gq, gk, gv, or_empty(gw), or_empty(ges)};
  }

  static tensor_list backward(AutogradContext* /*ctx*/, const tensor_list& /*grads*/) {
    TORCH_CHECK(
        false, "torchattn::graph_attention: double backward is not supported by the fused kernel");
  }
};

class GraphAttentionFunction : public torch::autograd::Function<GraphAttentionFunction> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
      const torch::Tensor& row_ptr, const torch::Tensor& col_index, const std::string& score,
      const OptionalTensor& score_weight, double negative_slope, double scale,
      const OptionalTensor& edge_scale, bool need_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, lse, weights] = graph_attention(
        q, k, v, row_ptr, col_index, score, score_weight, negative_slope, scale, edge_scale,
        need_weights);
    ctx->save_for_backward(
        {q, k, v, row_ptr, col_index, score_weight.value_or(torch::Tensor()),
         edge_scale.value_or(torch::Tensor())});
    ctx->saved_data["score"] = score;
    ctx->saved_data["negative_slope"] = negative_slope;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({lse, weights});
    return {out, lse, weights};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    const auto s = ctx->get_saved_variables();
    const tensor_list none(11);
    if (!grads[0].defined()) {
      return none;
    }
    const auto score_weight = optional_of(s[5]), edge_scale = optional_of(s[6]);
    auto g = GraphAttentionBackward::apply(
        grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["score"].toStringRef(),
        score_weight, ctx->saved_data["negative_slope"].toDouble(),
        ctx->saved_data["scale"].toDouble(), edge_scale);
    return {
        g[0],
        g[1],
        g[2],
        torch::Tensor(),
        torch::Tensor(),
        torch::Tensor(),
        score_weight ? g[3] : torch::Tensor(),
        torch::Tensor(),
        torch::Tensor(),
        edge_scale ? g[4] : torch::Tensor(),
        torch::Tensor()};
  }
};

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention_autograd(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score,
    const OptionalTensor& score_weight, double negative_slope, c10::optional<double> scale,
    const OptionalTensor& edge_scale, bool need_weights) {
  // query [Nd, H, D], key [Ns, H, D], value [Ns, H, C] -> output [Nd, H, C], lse, weights
  // The scale is resolved here, so that backward gets the forward's.
  const auto a = torchattn::detail::check_graph_attention_args(
      "torchattn::graph_attention", query, key, value, row_ptr, col_index, score, score_weight,
      negative_slope, scale, edge_scale, /*read_values=*/false);
  auto r = GraphAttentionFunction::apply(
      query, key, value, row_ptr, col_index, std::string(score), score_weight, negative_slope,
      a.scale, edge_scale, need_weights);
  return {r[0], r[1], r[2]};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
graph_attention_backward_autograd(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const OptionalTensor& score_weight, double negative_slope, double scale,
    const OptionalTensor& edge_scale) {
  auto g = GraphAttentionBackward::apply(
      grad_output, query, key, value, row_ptr, col_index, std::string(score), score_weight,
      negative_slope, scale, edge_scale);
  auto undefined_if_empty = [](const torch::Tensor& t, bool present) {
    return present ? t : torch::Tensor();
  };
  return {
      g[0], g[1], g[2],
      undefined_if_empty(g[3], score_weight.has_value() && score_weight->defined()),
      undefined_if_empty(g[4], edge_scale.has_value() && edge_scale->defined())};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("graph_attention", TORCH_FN(torchattn::ops::graph_attention_autograd));
  m.impl("_graph_attention_backward", TORCH_FN(torchattn::ops::graph_attention_backward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(graph_attention_autograd_registered)
