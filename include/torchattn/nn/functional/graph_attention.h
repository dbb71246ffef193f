#pragma once

/// Graphs for graph attention, and the functional over them (the op is
/// torchattn::ops::graph_attention).

#include <torchattn/nn/options/graph_attention.h>

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <tuple>

namespace torchattn::nn::functional {

/// A graph in CSR form by destination, as torchattn::ops::graph_attention takes it: the edges
/// into node i are row_ptr[i] .. row_ptr[i + 1] - 1, with their sources col_index[e] and
/// their position in the edge_index they came from, edge_order[e].
struct CsrGraph {
  torch::Tensor row_ptr;    // int64 [num_nodes + 1]
  torch::Tensor col_index;  // int64 [E]
  torch::Tensor edge_order; // int64 [E]
  int64_t num_src_nodes = 0;

  int64_t num_nodes() const { return row_ptr.size(0) - 1; }
  int64_t num_edges() const { return col_index.size(0); }
};

/// The CSR of edge_index int64 [2, E] (row 0 the sources, row 1 the destinations, as PyTorch
/// Geometric's `edge_index`) by destination, each node's edges in edge_index's order (a stable
/// sort). `num_src_nodes`: Default: num_nodes (a graph, not a bipartite one).
///
/// Example:
/// ```
/// auto graph = torchattn::nn::functional::csr_from_edge_index(edge_index, x.size(0));
/// ```
CsrGraph csr_from_edge_index(
    const torch::Tensor& edge_index, int64_t num_nodes,
    c10::optional<int64_t> num_src_nodes = c10::nullopt);

/// PyTorch Geometric's `remove_self_loops` then `add_self_loops`: edge_index without its
/// self-loops, then one loop (i, i) for each node, appended in node order.
torch::Tensor add_self_loops(const torch::Tensor& edge_index, int64_t num_nodes);

/// Attention over a graph's edges (torchattn::ops::graph_attention), with dropout on the
/// weights in training.
///
/// query [Nd, H, D], key [Ns, H, D], value [Ns, H, C]
///   -> output [Nd, H, C], weights [E, H] in edge_index's order (undefined unless
///      options.need_weights(); after dropout, as PyTorch Geometric returns them)
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto [out, w] = F::graph_attention(q, k, v, F::csr_from_edge_index(edge_index, N));
/// ```
std::tuple<torch::Tensor, torch::Tensor> graph_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const CsrGraph& graph, const GraphAttentionFuncOptions& options = {});

} // namespace torchattn::nn::functional
