#pragma once

#include <torchattn/nn/functional/graph_attention.h>
#include <torchattn/nn/options/graph_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <tuple>

namespace torchattn::nn {

/// GATv2 (Brody et al. 2022), as PyTorch Geometric's `torch_geometric.nn.GATv2Conv` computes
/// it and with its parameter names: `lin_l` (sources) and `lin_r` (destinations), Linear
/// in → H·C with bias; `att` [1, H, C]; `bias` [H·C] (concat) or [C].
///
///   α_ij = softmax_j(attᵀ leaky_relu(W_l x_j + W_r x_i)),  out_i = Σ_j α_ij W_l x_j
///
/// Self-loops, dropout, heads and bias as GATConv. With share_weights, lin_r is lin_l and the
/// state dict has only `lin_l.*` (PyG lists the shared weights under both names; load its
/// `lin_l.*`). The attention runs in the fused torchattn::ops::graph_attention ("additive").
///
/// Not carried over from PyG: `edge_dim`, `fill_value`, `residual`, bipartite channels.
///
/// Example:
/// ```
/// torchattn::nn::GATv2Conv conv(torchattn::nn::GATv2ConvOptions(64, 16).heads(4));
/// auto h = conv(x, edge_index);  // [N, 64]
/// ```
class GATv2ConvImpl : public torch::nn::Cloneable<GATv2ConvImpl> {
 public:
  explicit GATv2ConvImpl(const GATv2ConvOptions& options_);

  void reset() override;
  /// PyG's initialisation: glorot for the weights and att, PyG's Linear bias, zero bias.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// x [N, in_channels], edge_index int64 [2, E] -> [N, heads·out_channels] or [N, out_channels]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& edge_index);

  /// The output, the edge_index with self-loops, and the weights [E', heads].
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_with_attention(
      const torch::Tensor& x, const torch::Tensor& edge_index);

  /// The graph forward builds from edge_index; see GATConvImpl::graph.
  functional::CsrGraph graph(const torch::Tensor& edge_index, int64_t num_nodes) const;

  /// forward over a prepared graph, and the weights [E, heads] when need_weights.
  std::tuple<torch::Tensor, torch::Tensor> forward_graph(
      const torch::Tensor& x, const functional::CsrGraph& graph, bool need_weights = false);

  GATv2ConvOptions options;
  torch::nn::Linear lin_l{nullptr}, lin_r{nullptr};
  torch::Tensor att, bias;
};

TORCH_MODULE(GATv2Conv);

} // namespace torchattn::nn
