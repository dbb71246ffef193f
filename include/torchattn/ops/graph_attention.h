#pragma once

/// The op `torchattn::graph_attention` and its backward, through the dispatcher:
///
/// ```
/// torchattn::graph_attention(Tensor query, Tensor key, Tensor value, Tensor row_ptr,
///     Tensor col_index, *, str score="dot", Tensor? score_weight=None,
///     float negative_slope=0.2, float? scale=None, Tensor? edge_scale=None,
///     bool need_weights=False) -> (Tensor output, Tensor lse, Tensor weights)
/// torchattn::_graph_attention_backward(Tensor grad_output, Tensor query, Tensor key,
///     Tensor value, Tensor row_ptr, Tensor col_index, str score, Tensor? score_weight,
///     float negative_slope, float scale, Tensor? edge_scale) -> (Tensor grad_query, Tensor
///     grad_key, Tensor grad_value, Tensor grad_score_weight,
///         Tensor grad_edge_scale)
/// ```
///
/// Kernels: src/ops/{cpu,autograd,meta,autocast}/graph_attention_kernel.cpp.

#include <torch/types.h>

#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace torchattn::ops {

/// Attention over a graph's edges, fused: for each destination node i and head h,
///
///   out[i, h] = Σ_{e = (j → i)} softmax_e(s_e) · edge_scale[e, h] · value[j, h]
///
/// over the edges e into i, with the score s_e of `score`:
/// - "dot": s = scale · query[i, h] · key[j, h] (a graph transformer's TransformerConv);
/// - "additive": s = scale · Σ_d score_weight[h, d] · leaky_relu(query[i, h, d] + key[j, h, d])
///   (GATv2; GAT is the case D = 1, score_weight = 1, with query and key the per-node terms
///   a_dstᵀ W x_i and a_srcᵀ W x_j).
///
/// The softmax over each node's incoming edges is computed row by row: no per-edge score and
/// no edges × heads × channels tensor exists in forward or backward (PyTorch Geometric's
/// composite gathers value[col] into one). Backward recomputes the scores and each node's
/// softmax statistics from the saved inputs, gathering the gradients of query per destination and
/// those of key and value per source: no atomics, so results are bit-identical across runs and
/// thread counts.
///
/// query [Nd, H, D], key [Ns, H, D], value [Ns, H, C], the graph in CSR form by destination:
/// row_ptr int64 [Nd + 1] (row_ptr[0] = 0, nondecreasing, row_ptr[Nd] = E), col_index int64
/// [E] (the source of each edge, in [0, Ns)); score_weight [H, D] ("additive" only);
/// edge_scale [E, H] (a multiplier of each softmax weight, such as a dropout mask)
///   -> output [Nd, H, C] (zero on a node without edges), lse [Nd, H] (the logsumexp of each
///      node's scores; -inf without edges), weights [E, H] (softmax · edge_scale, PyTorch
///      Geometric's returned attention weights; [0] unless need_weights)
///
/// `scale`: Default: 1/√D for "dot", 1 for "additive". `negative_slope`: Default: 0.2.
/// float32, float64, bfloat16 and float16 (computed in float32; lse float32). Differentiable in
/// query, key, value, score_weight and edge_scale; double backward is not supported.
///
/// Example:
/// ```
/// auto g = torchattn::nn::functional::csr_from_edge_index(edge_index, /*num_nodes=*/N);
/// auto q = torch::randn({N, 4, 16}), k = torch::randn({N, 4, 16}), v = torch::randn({N, 4, 16});
/// auto [out, lse, w] = torchattn::ops::graph_attention(q, k, v, g.row_ptr, g.col_index);
/// ```
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score = "dot",
    const c10::optional<torch::Tensor>& score_weight = c10::nullopt, double negative_slope = 0.2,
    c10::optional<double> scale = c10::nullopt,
    const c10::optional<torch::Tensor>& edge_scale = c10::nullopt, bool need_weights = false);

/// The backward of graph_attention, with the scale resolved: gradients of query, key, value,
/// score_weight ("additive"; undefined otherwise) and edge_scale (undefined without one).
/// Recomputes the scores and each node's softmax from the inputs. Not differentiable.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
_graph_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    double scale, const c10::optional<torch::Tensor>& edge_scale);

} // namespace torchattn::ops
