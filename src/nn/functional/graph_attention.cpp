#include <torchattn/nn/functional/graph_attention.h>
#include <torchattn/ops/graph_attention.h>

#include "detail/checks.h"

#include <torch/torch.h>

namespace torchattn::nn::functional {

namespace {

void check_edge_index(const char* fn, const torch::Tensor& edge_index) {
  TORCH_CHECK(edge_index.defined(), fn, ": edge_index is undefined, expected int64 [2, E]");
  TORCH_CHECK(
      edge_index.dim() == 2 && edge_index.size(0) == 2, fn, ": edge_index has shape ",
      torchattn::detail::shape_str(edge_index.sizes()), ", expected [2, E]");
  TORCH_CHECK(
      edge_index.scalar_type() == torch::kLong, fn, ": edge_index has dtype ",
      edge_index.scalar_type(), ", expected Long (int64)");
}

// Every value of row `row` of edge_index in [0, n).
void check_nodes_in_range(
    const char* fn, const torch::Tensor& edge_index, int64_t row, const char* what, int64_t n,
    const char* nodes) {
  const auto r = edge_index[row];
  if (r.numel() == 0) {
    return;
  }
  const auto [lo, hi] = torch::aminmax(r);
  const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
  const int64_t bad = min < 0 ? min : max;
  TORCH_CHECK(
      min >= 0 && max < n, fn, ": edge_index has ", what, " ", bad, " at edge ",
      (r == bad).nonzero()[0][0].item<int64_t>(), ", expected a node in [0, ", n, ") (", nodes,
      ")");
}

} // namespace

CsrGraph csr_from_edge_index(
    const torch::Tensor& edge_index, int64_t num_nodes, c10::optional<int64_t> num_src_nodes) {
  // edge_index [2, E] (sources, destinations) -> row_ptr [N + 1], col_index [E], edge_order [E]
  constexpr const char* fn = "torchattn::nn::functional::csr_from_edge_index";
  check_edge_index(fn, edge_index);
  const int64_t Ns = num_src_nodes.value_or(num_nodes);
  TORCH_CHECK(num_nodes >= 0, fn, ": num_nodes is ", num_nodes, ", expected >= 0");
  TORCH_CHECK(Ns >= 0, fn, ": num_src_nodes is ", Ns, ", expected >= 0");
  check_nodes_in_range(fn, edge_index, 0, "source", Ns, "num_src_nodes");
  check_nodes_in_range(fn, edge_index, 1, "destination", num_nodes, "num_nodes");
  const auto src = edge_index[0].contiguous(), dst = edge_index[1].contiguous();
  const auto order = std::get<1>(torch::sort(dst, /*stable=*/c10::optional<bool>(true), /*dim=*/0));
  const auto counts = torch::bincount(dst, {}, num_nodes);
  CsrGraph g;
  g.row_ptr = torch::cat({torch::zeros({1}, torch::kLong), counts.cumsum(0)});
  g.col_index = src.index_select(0, order);
  g.edge_order = order;
  g.num_src_nodes = Ns;
  return g;
}

torch::Tensor add_self_loops(const torch::Tensor& edge_index, int64_t num_nodes) {
  // edge_index [2, E] -> [2, E' + num_nodes]
  constexpr const char* fn = "torchattn::nn::functional::add_self_loops";
  check_edge_index(fn, edge_index);
  TORCH_CHECK(num_nodes >= 0, fn, ": num_nodes is ", num_nodes, ", expected >= 0");
  const auto kept = edge_index.index({torch::indexing::Slice(), edge_index[0] != edge_index[1]});
  const auto loops = torch::arange(num_nodes, edge_index.options()).expand({2, num_nodes});
  return torch::cat({kept, loops}, 1);
}

std::tuple<torch::Tensor, torch::Tensor> graph_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const CsrGraph& graph, const GraphAttentionFuncOptions& options) {
  // query [Nd, H, D], key [Ns, H, D], value [Ns, H, C] -> output [Nd, H, C], weights [E, H]
  constexpr const char* fn = "torchattn::nn::functional::graph_attention";
  torchattn::detail::check_dropout(fn, "dropout", options.dropout());
  c10::optional<torch::Tensor> edge_scale;
  if (options.training() && options.dropout() > 0 && query.defined() && query.dim() == 3) {
    const double keep = 1.0 - options.dropout();
    edge_scale = torch::empty({graph.num_edges(), query.size(1)}, query.options())
                     .bernoulli_(keep)
                     .div_(keep);
  }
  c10::optional<torch::Tensor> score_weight;
  if (options.score_weight().defined()) {
    score_weight = options.score_weight();
  }
  auto [out, lse, w] = torchattn::ops::graph_attention(
      query, key, value, graph.row_ptr, graph.col_index, options.score(), score_weight,
      options.negative_slope(), options.scale(), edge_scale, options.need_weights());
  (void)lse;
  if (!options.need_weights()) {
    return {out, torch::Tensor()};
  }
  TORCH_CHECK(
      graph.edge_order.defined() && graph.edge_order.size(0) == graph.num_edges(), fn,
      ": graph.edge_order has shape ",
      graph.edge_order.defined() ? torchattn::detail::shape_str(graph.edge_order.sizes())
                                 : "undefined",
      ", expected [", graph.num_edges(), "] (csr_from_edge_index fills it)");
  return {out, torch::empty_like(w).index_copy_(0, graph.edge_order, w)};
}

} // namespace torchattn::nn::functional
