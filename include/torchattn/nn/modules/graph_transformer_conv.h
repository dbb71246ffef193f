#pragma once

#include <torchattn/nn/functional/graph_attention.h>
#include <torchattn/nn/options/graph_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <tuple>

namespace torchattn::nn {

/// The graph transformer layer of Shi et al. (2021), as PyTorch Geometric's
/// `torch_geometric.nn.TransformerConv` computes it and with its parameter names: `lin_query`,
/// `lin_key`, `lin_value` (Linear in → H·C with bias) and `lin_skip` (Linear in → H·C, or C
/// when the heads are averaged; with root_weight).
///
///   α_ij = softmax_j((W_q x_i)ᵀ (W_k x_j) / √C),  out_i = Σ_j α_ij W_v x_j + W_skip x_i
///
/// over the edges j → i of edge_index as given (no self-loops, as in PyG), dropout on α in
/// training, heads concatenated or averaged. The attention runs in the fused
/// torchattn::ops::graph_attention ("dot").
///
/// Not carried over from PyG: `beta` (the gated skip), `edge_dim`, bipartite channels.
///
/// Example:
/// ```
/// torchattn::nn::GraphTransformerConv conv(
///     torchattn::nn::GraphTransformerConvOptions(64, 16).heads(4));
/// auto h = conv(x, edge_index);  // [N, 64]
/// ```
class GraphTransformerConvImpl : public torch::nn::Cloneable<GraphTransformerConvImpl> {
 public:
  explicit GraphTransformerConvImpl(const GraphTransformerConvOptions& options_);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// x [N, in_channels], edge_index int64 [2, E] -> [N, heads·out_channels] or [N, out_channels]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& edge_index);

  /// The output, edge_index, and the weights [E, heads].
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_with_attention(
      const torch::Tensor& x, const torch::Tensor& edge_index);

  /// forward over a prepared graph (functional::csr_from_edge_index), and the weights
  /// [E, heads] when need_weights.
  std::tuple<torch::Tensor, torch::Tensor> forward_graph(
      const torch::Tensor& x, const functional::CsrGraph& graph, bool need_weights = false);

  GraphTransformerConvOptions options;
  torch::nn::Linear lin_key{nullptr}, lin_query{nullptr}, lin_value{nullptr}, lin_skip{nullptr};
};

TORCH_MODULE(GraphTransformerConv);

} // namespace torchattn::nn
