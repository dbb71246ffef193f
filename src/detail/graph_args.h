#pragma once

// The checks of graph_attention's arguments, shared by its op kernels (CPU, Meta), its
// autograd kernel and the graph modules, with the wording of detail/checks.h.

#include <torch/types.h>

#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <vector>

namespace torchattn::detail {

/// graph_attention's score functions.
enum class GraphScore { dot, additive };

/// What the checks resolved: the score, the scale and the sizes.
struct GraphArgs {
  GraphScore score = GraphScore::dot;
  double scale = 1.0;
  int64_t num_dst = 0, num_src = 0, heads = 0, head_dim = 0, value_dim = 0, num_edges = 0;
};

/// Checks graph_attention's arguments (see include/torchattn/ops/graph_attention.h) and
/// resolves the scale. `read_values`: also read row_ptr and col_index (false for Meta tensors):
/// row_ptr[0] = 0, nondecreasing (no negative degree), row_ptr[Nd] = E, and every source in
/// [0, Ns).
GraphArgs check_graph_attention_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale, bool read_values);

/// check_graph_attention_args, and grad_output [Nd, H, C] in query's dtype.
GraphArgs check_graph_attention_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& row_ptr,
    const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope, double scale,
    const c10::optional<torch::Tensor>& edge_scale, bool read_values);

} // namespace torchattn::detail

namespace torchattn::detail {

/// Checks table_bias's arguments (table [H, T] in a fused dtype, index int64 [B, Lq, Lk] or
/// [Lq, Lk] on table's device); `read_values`: every index in [0, T). Returns [B, H, Lq, Lk].
std::vector<int64_t> check_table_bias_args(
    const char* fn, const torch::Tensor& table, const torch::Tensor& index, bool read_values);

/// Checks _table_bias_backward's arguments: grad_bias [B, H, Lq, Lk] for index, num_entries
/// >= 1.
void check_table_bias_backward_args(
    const char* fn, const torch::Tensor& grad_bias, const torch::Tensor& index,
    int64_t num_entries);

} // namespace torchattn::detail
