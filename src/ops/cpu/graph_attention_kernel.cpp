// CPU kernels of graph_attention and _graph_attention_backward: checks (the graph's values
// included), then the vector build of the fused kernel (ops/cpu/graph_attention/) that the CPU
// runs.

#include <torchattn/ops/graph_attention.h>

#include "detail/checks.h"
#include "detail/graph_args.h"
#include "ops/cpu/graph_attention/kernel.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torchattn::detail::GraphScore;

cpu::GraphScoreArgs kernel_args(
    const torchattn::detail::GraphArgs& a, const c10::optional<torch::Tensor>& score_weight,
    double negative_slope, const c10::optional<torch::Tensor>& edge_scale) {
  cpu::GraphScoreArgs k;
  k.additive = a.score == GraphScore::additive;
  k.negative_slope = negative_slope;
  k.scale = a.scale;
  if (k.additive) {
    k.score_weight = score_weight->contiguous();
  }
  if (edge_scale.has_value() && edge_scale->defined()) {
    k.edge_scale = edge_scale->contiguous();
  }
  return k;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale,
    bool need_weights) {
  // query [Nd, H, D], key [Ns, H, D], value [Ns, H, C]
  //   -> output [Nd, H, C], lse [Nd, H], weights [E, H] (or [0])
  const auto a = torchattn::detail::check_graph_attention_args(
      "torchattn::graph_attention", query, key, value, row_ptr, col_index, score, score_weight,
      negative_slope, scale, edge_scale, /*read_values=*/true);
  auto output = torch::empty({a.num_dst, a.heads, a.value_dim}, query.options());
  auto lse = torch::empty(
      {a.num_dst, a.heads},
      query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type())));
  auto weights = need_weights ? torch::empty({a.num_edges, a.heads}, query.options())
                              : torch::empty({0}, query.options());
  torch::Tensor weights_out = need_weights ? weights : torch::Tensor();
  TORCHATTN_CAPABILITY_KERNEL(graph_attention_forward)
  (query.contiguous(), key.contiguous(), value.contiguous(), row_ptr.contiguous(),
   col_index.contiguous(), kernel_args(a, score_weight, negative_slope, edge_scale), output, lse,
   weights_out);
  return {output, lse, weights};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
graph_attention_backward_cpu(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    double scale, const c10::optional<torch::Tensor>& edge_scale) {
  // grad_output [Nd, H, C] -> grad_query [Nd, H, D], grad_key [Ns, H, D], grad_value
  // [Ns, H, C], grad_score_weight [H, D], grad_edge_scale [E, H]
  const auto a = torchattn::detail::check_graph_attention_backward_args(
      "torchattn::_graph_attention_backward", grad_output, query, key, value, row_ptr, col_index,
      score, score_weight, negative_slope, scale, edge_scale, /*read_values=*/true);
  auto gq = torch::empty(query.sizes(), query.options());
  auto gk = torch::empty(key.sizes(), key.options());
  auto gv = torch::empty(value.sizes(), value.options());
  torch::Tensor gw, ges;
  if (a.score == GraphScore::additive) {
    gw = torch::empty({a.heads, a.head_dim}, query.options());
  }
  if (edge_scale.has_value() && edge_scale->defined()) {
    ges = torch::empty({a.num_edges, a.heads}, query.options());
  }
  TORCHATTN_CAPABILITY_KERNEL(graph_attention_backward)
  (grad_output.contiguous(), query.contiguous(), key.contiguous(), value.contiguous(),
   row_ptr.contiguous(), col_index.contiguous(),
   kernel_args(a, score_weight, negative_slope, edge_scale), gq, gk, gv, gw, ges);
  return {gq, gk, gv, gw, ges};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("graph_attention", TORCH_FN(torchattn::ops::graph_attention_cpu));
  m.impl("_graph_attention_backward", TORCH_FN(torchattn::ops::graph_attention_backward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(graph_attention_cpu_registered)
