// Meta (shape-only) kernels of graph_attention and its backward: the CPU kernels' checks
// without reading the graph, outputs without data (torch.export, torch.compile, fake tensors).

#include "detail/checks.h"
#include "detail/graph_args.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention_meta(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale,
    bool need_weights) {
  // query [Nd, H, D], key [Ns, H, D], value [Ns, H, C]
  //   -> output [Nd, H, C], lse [Nd, H], weights [E, H] (or [0])
  const auto a = torchattn::detail::check_graph_attention_args(
      "torchattn::graph_attention", query, key, value, row_ptr, col_index, score, score_weight,
      negative_slope, scale, edge_scale, /*read_values=*/false);
  return {
      at::empty({a.num_dst, a.heads, a.value_dim}, query.options()),
      at::empty(
          {a.num_dst, a.heads},
          query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type()))),
      need_weights ? at::empty({a.num_edges, a.heads}, query.options())
                   : at::empty({0}, query.options())};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
graph_attention_backward_meta(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    double scale, const c10::optional<torch::Tensor>& edge_scale) {
  const auto a = torchattn::detail::check_graph_attention_backward_args(
      "torchattn::_graph_attention_backward", grad_output, query, key, value, row_ptr, col_index,
      score, score_weight, negative_slope, scale, edge_scale, /*read_values=*/false);
  torch::Tensor gw, ges;
  if (a.score == torchattn::detail::GraphScore::additive) {
    gw = at::empty({a.heads, a.head_dim}, query.options());
  }
  if (edge_scale.has_value() && edge_scale->defined()) {
    ges = at::empty({a.num_edges, a.heads}, query.options());
  }
  return {
      at::empty(query.sizes(), query.options()), at::empty(key.sizes(), key.options()),
      at::empty(value.sizes(), value.options()), gw, ges};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("graph_attention", TORCH_FN(torchattn::ops::graph_attention_meta));
  m.impl("_graph_attention_backward", TORCH_FN(torchattn::ops::graph_attention_backward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(graph_attention_meta_registered)
