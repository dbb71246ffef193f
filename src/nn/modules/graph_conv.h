#pragma once

// What GATConv, GATv2Conv and GraphTransformerConv share: the input check, the graph of an
// edge_index (with PyTorch Geometric's self-loop handling) and the combination of the heads.

#include <torchattn/nn/functional/graph_attention.h>

#include <torch/types.h>

#include <tuple>
#include <utility>

namespace torchattn::nn::detail {

/// Checks x [N, in_channels] against a parameter of the module (dtype, device).
void check_node_features(
    const char* fn, const torch::Tensor& x, int64_t in_channels, const torch::Tensor& like);

/// The CSR of edge_index over num_nodes nodes, after remove/add_self_loops when `self_loops`.
/// Also returns the edge_index the weights are reported for (with the loops).
std::pair<functional::CsrGraph, torch::Tensor> graph_of(
    const char* fn, const torch::Tensor& edge_index, int64_t num_nodes, bool self_loops);

/// A module's forward_with_attention: its forward_graph over the graph of edge_index, with the
/// weights, and the edge_index they belong to.
template <typename Module>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> with_attention(
    Module& module, const char* fn, const torch::Tensor& x, const torch::Tensor& edge_index,
    bool self_loops) {
  auto [graph, edges] = graph_of(fn, edge_index, x.defined() ? x.size(0) : 0, self_loops);
  auto [y, weights] = module.forward_graph(x, graph, /*need_weights=*/true);
  return {y, edges, weights};
}

/// out [N, H, C] -> [N, H * C] (concat) or the mean over heads [N, C].
torch::Tensor combine_heads(const torch::Tensor& out, bool concat);

/// PyTorch Geometric's glorot: uniform in ±√(6 / (size(-2) + size(-1))).
void glorot_(torch::Tensor& t);

} // namespace torchattn::nn::detail
