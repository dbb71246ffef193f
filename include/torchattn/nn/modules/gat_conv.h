#pragma once

#include <torchattn/nn/functional/graph_attention.h>
#include <torchattn/nn/options/graph_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <tuple>

namespace torchattn::nn {

/// The graph attention layer of Veličković et al. (2018), as PyTorch Geometric's
/// `torch_geometric.nn.GATConv` (2.5+, `in_channels` an int) computes it and with its
/// parameter names, so that its state dict loads by name: `lin.weight` [H·C, in],
/// `att_src` and `att_dst` [1, H, C], `bias` [H·C] (concat) or [C].
///
///   α_ij = softmax_j(leaky_relu(a_srcᵀ W x_j + a_dstᵀ W x_i)),  out_i = Σ_j α_ij W x_j
///
/// over the edges j → i of edge_index (with self-loops: PyG removes existing ones and adds
/// one per node), dropout on α in training, heads concatenated or averaged, plus the bias.
/// The attention runs in the fused torchattn::ops::graph_attention: no edges × heads ×
/// channels tensor, deterministic gradients.
///
/// Not carried over from PyG: `edge_dim` (edge features), `fill_value`, `residual`, and
/// bipartite `(in_src, in_dst)` channels (PyG's `lin_src` / `lin_dst`).
///
/// Example:
/// ```
/// torchattn::nn::GATConv conv(torchattn::nn::GATConvOptions(1433, 8).heads(8).dropout(0.6));
/// auto h = conv(x, edge_index);  // [N, 64]
/// ```
class GATConvImpl : public torch::nn::Cloneable<GATConvImpl> {
 public:
  explicit GATConvImpl(const GATConvOptions& options_);

  void reset() override;
  /// PyG's initialisation: glorot for lin.weight, att_src and att_dst; zero bias.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// x [N, in_channels], edge_index int64 [2, E] -> [N, heads·out_channels] (concat) or
  /// [N, out_channels]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& edge_index);

  /// PyG's `return_attention_weights=True`: the output, the edge_index the weights belong to
  /// (with the self-loops) and the weights [E', heads].
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_with_attention(
      const torch::Tensor& x, const torch::Tensor& edge_index);

  /// The graph that forward builds from edge_index (self-loops as the options say): build it
  /// once for a fixed graph and call forward_graph.
  functional::CsrGraph graph(const torch::Tensor& edge_index, int64_t num_nodes) const;

  /// forward over a prepared graph: the output, and the weights [E, heads] in the graph's
  /// edge_index order when need_weights (undefined otherwise).
  std::tuple<torch::Tensor, torch::Tensor> forward_graph(
      const torch::Tensor& x, const functional::CsrGraph& graph, bool need_weights = false);

  GATConvOptions options;
  torch::nn::Linear lin{nullptr};
  torch::Tensor att_src, att_dst, bias;
};

TORCH_MODULE(GATConv);

} // namespace torchattn::nn
