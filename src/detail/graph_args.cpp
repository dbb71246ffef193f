#include "detail/graph_args.h"

#include "detail/checks.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::detail {

namespace {

void check_nodes(const char* fn, const char* name, const torch::Tensor& t, const char* layout) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected a 3-D tensor ", layout);
  TORCH_CHECK(
      t.dim() == 3, fn, ": ", name, " has ", t.dim(), " dims ", shape_str(t.sizes()),
      ", expected 3 ", layout);
  check_fused_dtype(fn, name, t);
}

void check_index(
    const char* fn, const char* name, const torch::Tensor& t, int64_t size, const char* layout,
    const torch::Tensor& query) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected int64 ", layout);
  TORCH_CHECK(
      t.dim() == 1 && t.size(0) == size, fn, ": ", name, " has shape ", shape_str(t.sizes()),
      ", expected [", size, "] ", layout);
  TORCH_CHECK(
      t.scalar_type() == torch::kLong, fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected Long (int64)");
  TORCH_CHECK(
      t.device() == query.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
      query.device(), " like query");
}

GraphScore parse_score(const char* fn, c10::string_view score) {
  if (score == "dot") {
    return GraphScore::dot;
  }
  TORCH_CHECK(
      score == "additive", fn, ": score is \"", std::string(score),
      "\", expected \"dot\" or \"additive\"");
  return GraphScore::additive;
}

// row_ptr[0] = 0, no negative degree, row_ptr[Nd] = E, sources in [0, Ns).
void check_graph_values(
    const char* fn, const torch::Tensor& row_ptr, const torch::Tensor& col_index, int64_t Ns) {
  const auto rp = row_ptr.contiguous();
  const int64_t* p = rp.data_ptr<int64_t>();
  const int64_t Nd = rp.size(0) - 1, E = col_index.size(0);
  TORCH_CHECK(p[0] == 0, fn, ": row_ptr[0] is ", p[0], ", expected 0");
  for (int64_t i = 0; i < Nd; ++i) {
    TORCH_CHECK(
        p[i + 1] >= p[i], fn, ": row_ptr decreases at node ", i, " (row_ptr[", i, "] = ", p[i],
        ", row_ptr[", i + 1, "] = ", p[i + 1],
        "), a negative degree; expected a CSR sorted by destination "
        "(torchattn::nn::functional::csr_from_edge_index builds one)");
  }
  TORCH_CHECK(
      p[Nd] == E, fn, ": row_ptr[", Nd, "] is ", p[Nd], ", expected the number of edges ", E,
      " (the length of col_index)");
  if (E == 0) {
    return;
  }
  const auto [lo, hi] = torch::aminmax(col_index);
  const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
  const int64_t bad = min < 0 ? min : max;
  TORCH_CHECK(
      min >= 0 && max < Ns, fn, ": col_index has source ", bad, " at edge ",
      (col_index == bad).nonzero()[0][0].item<int64_t>(), ", expected a node in [0, ", Ns,
      ") (key and value have ", Ns, " nodes)");
}

} // namespace

GraphArgs check_graph_attention_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale, bool read_values) {
  GraphArgs a;
  a.score = parse_score(fn, score);
  check_nodes(fn, "query", query, "[Nd, H, D]");
  check_nodes(fn, "key", key, "[Ns, H, D]");
  check_nodes(fn, "value", value, "[Ns, H, C]");
  check_like(fn, "key", key, query);
  check_like(fn, "value", value, query);
  a.num_dst = query.size(0), a.heads = query.size(1), a.head_dim = query.size(2);
  a.num_src = key.size(0), a.value_dim = value.size(2);
  TORCH_CHECK(
      a.head_dim > 0, fn, ": query has shape ", shape_str(query.sizes()),
      ", expected a head dim D of at least 1");
  TORCH_CHECK(
      key.size(1) == a.heads && key.size(2) == a.head_dim, fn, ": key has shape ",
      shape_str(key.sizes()), ", expected [Ns, ", a.heads, ", ", a.head_dim,
      "] (the heads and head dim of query)");
  TORCH_CHECK(
      value.size(0) == a.num_src && value.size(1) == a.heads, fn, ": value has shape ",
      shape_str(value.sizes()), ", expected [", a.num_src, ", ", a.heads,
      ", C] (the nodes of key and the heads of query)");
  check_index(fn, "row_ptr", row_ptr, a.num_dst + 1, "[Nd + 1]", query);
  TORCH_CHECK(
      col_index.defined() && col_index.dim() == 1, fn, ": col_index has shape ",
      col_index.defined() ? shape_str(col_index.sizes()) : "undefined", ", expected [E]");
  a.num_edges = col_index.size(0);
  check_index(fn, "col_index", col_index, a.num_edges, "[E]", query);
  if (a.score == GraphScore::additive) {
    TORCH_CHECK(
        score_weight.has_value() && score_weight->defined(), fn,
        ": score \"additive\" needs score_weight [H, D]");
    check_param(fn, "score_weight", *score_weight, query, {a.heads, a.head_dim}, "[H, D]");
    TORCH_CHECK(
        std::isfinite(negative_slope), fn, ": negative_slope is ", negative_slope,
        ", expected a finite number");
  } else {
    TORCH_CHECK(
        !score_weight.has_value() || !score_weight->defined(), fn,
        ": score_weight is given with score \"dot\", which has none; expected score "
        "\"additive\"");
  }
  if (edge_scale.has_value() && edge_scale->defined()) {
    check_param(fn, "edge_scale", *edge_scale, query, {a.num_edges, a.heads}, "[E, H]");
  }
  if (scale.has_value()) {
    TORCH_CHECK(std::isfinite(*scale), fn, ": scale is ", *scale, ", expected a finite number");
    a.scale = *scale;
  } else {
    a.scale = a.score == GraphScore::dot ? 1.0 / std::sqrt(static_cast<double>(a.head_dim)) : 1.0;
  }
  if (read_values) {
    check_graph_values(fn, row_ptr, col_index, a.num_src);
  }
  return a;
}

GraphArgs check_graph_attention_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& row_ptr,
    const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope, double scale,
    const c10::optional<torch::Tensor>& edge_scale, bool read_values) {
  const auto a = check_graph_attention_args(
      fn, query, key, value, row_ptr, col_index, score, score_weight, negative_slope, scale,
      edge_scale, read_values);
  check_param(
      fn, "grad_output", grad_output, query, {a.num_dst, a.heads, a.value_dim}, "[Nd, H, C]");
  return a;
}

} // namespace torchattn::detail

namespace torchattn::detail {

namespace {

// index int64 [B, Lq, Lk] or [Lq, Lk] on `device`; returns its B.
int64_t check_table_index(const char* fn, const torch::Tensor& index, torch::Device device) {
  TORCH_CHECK(index.defined(), fn, ": index is undefined, expected int64 [B, Lq, Lk]");
  TORCH_CHECK(
      index.dim() == 2 || index.dim() == 3, fn, ": index has shape ", shape_str(index.sizes()),
      ", expected [B, Lq, Lk] or [Lq, Lk]");
  TORCH_CHECK(
      index.scalar_type() == torch::kLong, fn, ": index has dtype ", index.scalar_type(),
      ", expected Long (int64)");
  TORCH_CHECK(
      index.device() == device, fn, ": index is on ", index.device(), ", expected ", device);
  return index.dim() == 3 ? index.size(0) : 1;
}

} // namespace

std::vector<int64_t> check_table_bias_args(
    const char* fn, const torch::Tensor& table, const torch::Tensor& index, bool read_values) {
  TORCH_CHECK(table.defined(), fn, ": table is undefined, expected [H, T]");
  TORCH_CHECK(
      table.dim() == 2 && table.size(1) > 0, fn, ": table has shape ", shape_str(table.sizes()),
      ", expected [H, T] with T >= 1");
  check_fused_dtype(fn, "table", table);
  const int64_t B = check_table_index(fn, index, table.device());
  if (read_values && index.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(index);
    const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
    TORCH_CHECK(
        min >= 0 && max < table.size(1), fn, ": index has ", min < 0 ? min : max,
        ", expected entries of table in [0, ", table.size(1), ") (clamp distances to the table)");
  }
  return {B, table.size(0), index.size(-2), index.size(-1)};
}

void check_table_bias_backward_args(
    const char* fn, const torch::Tensor& grad_bias, const torch::Tensor& index,
    int64_t num_entries) {
  TORCH_CHECK(num_entries >= 1, fn, ": num_entries is ", num_entries, ", expected >= 1");
  TORCH_CHECK(
      grad_bias.defined() && grad_bias.dim() == 4, fn, ": grad_bias has shape ",
      grad_bias.defined() ? shape_str(grad_bias.sizes()) : "undefined",
      ", expected [B, H, Lq, Lk]");
  check_fused_dtype(fn, "grad_bias", grad_bias);
  const std::vector<int64_t> shape{
      check_table_index(fn, index, grad_bias.device()), grad_bias.size(1), index.size(-2),
      index.size(-1)};
  TORCH_CHECK(
      grad_bias.sizes() == torch::IntArrayRef(shape), fn, ": grad_bias has shape ",
      shape_str(grad_bias.sizes()), ", expected ", shape_str(shape), " for index ",
      shape_str(index.sizes()));
}

} // namespace torchattn::detail
