#include "detail/checks.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>

namespace torchattn::detail {

std::string shape_str(torch::IntArrayRef sizes) {
  return c10::str(sizes);
}

bool broadcastable(torch::IntArrayRef shape, torch::IntArrayRef target) {
  if (shape.size() > target.size()) {
    return false;
  }
  for (size_t i = 1; i <= shape.size(); ++i) {
    const int64_t d = shape[shape.size() - i];
    if (d != 1 && d != target[target.size() - i]) {
      return false;
    }
  }
  return true;
}

void check_like(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query) {
  TORCH_CHECK(
      t.scalar_type() == query.scalar_type(), fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected ", query.scalar_type(), " like query");
  TORCH_CHECK(
      t.device() == query.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
      query.device(), " like query");
}

torch::ScalarType stats_dtype(torch::ScalarType dtype) {
  return dtype == torch::kBFloat16 || dtype == torch::kHalf ? torch::kFloat : dtype;
}

void check_fused_dtype(const char* fn, const char* name, const torch::Tensor& t) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(
      dt == torch::kFloat || dt == torch::kDouble || dt == torch::kBFloat16 || dt == torch::kHalf,
      fn, ": ", name, " has dtype ", dt, ", expected Float, Double, BFloat16 or Half");
}

void check_output_like(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query,
    torch::IntArrayRef shape) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected ", shape_str(shape));
  const auto dtype = query.scalar_type(), wide = stats_dtype(dtype);
  TORCH_CHECK(
      t.sizes() == shape && (t.scalar_type() == dtype || t.scalar_type() == wide), fn, ": ", name,
      " has shape ", shape_str(t.sizes()), " and dtype ", t.scalar_type(), ", expected ",
      shape_str(shape), " and ", dtype, dtype == wide ? std::string() : c10::str(" or ", wide));
  TORCH_CHECK(
      t.device() == query.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
      query.device(), " like query");
}

void check_softmax_stats_shape(
    const char* fn, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    const torch::Tensor& query) {
  const auto stats_shape = query.sizes().slice(0, 3);
  const auto dtype = stats_dtype(query.scalar_type());
  for (const auto& [name, t] :
       {std::pair<const char*, const torch::Tensor&>{"row_max", row_max},
        {"row_log_sum", row_log_sum}}) {
    TORCH_CHECK(
        t.defined(), fn, ": ", name, " is undefined, expected [B, H, Lq] from the forward op");
    TORCH_CHECK(
        t.sizes() == stats_shape && t.scalar_type() == dtype && t.is_contiguous(), fn, ": ", name,
        " has shape ", shape_str(t.sizes()), " and dtype ", t.scalar_type(),
        ", expected a contiguous ", shape_str(stats_shape), " ", dtype,
        " tensor from the forward op");
    TORCH_CHECK(
        t.device() == query.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
        query.device(), " like query");
  }
}

void check_like_parameters(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& like) {
  TORCH_CHECK(
      t.scalar_type() == like.scalar_type(), fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected ", like.scalar_type(),
      " like the module's parameters (convert the input, or the "
      "module with ->to(",
      t.scalar_type(), "))");
  TORCH_CHECK(
      t.device() == like.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
      like.device(), " like the module's parameters");
}

void check_mask_dtype(
    const char* fn, const char* name, const torch::Tensor& mask, const torch::Tensor& query) {
  TORCH_CHECK(
      mask.scalar_type() == torch::kBool || mask.scalar_type() == query.scalar_type(), fn, ": ",
      name, " has dtype ", mask.scalar_type(), ", expected Bool or ", query.scalar_type(),
      " like query");
  TORCH_CHECK(
      mask.device() == query.device(), fn, ": ", name, " is on ", mask.device(), ", expected ",
      query.device(), " like query");
}

void check_mask(
    const char* fn, const char* name, const torch::Tensor& mask, const torch::Tensor& query,
    torch::IntArrayRef target, const char* target_desc) {
  check_mask_dtype(fn, name, mask, query);
  TORCH_CHECK(
      broadcastable(mask.sizes(), target), fn, ": ", name, " has shape ", shape_str(mask.sizes()),
      ", expected a shape broadcastable to the scores ", shape_str(target), " ", target_desc);
}

void check_dropout(const char* fn, const char* name, double p) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, fn, ": ", name, " is ", p, ", expected a probability in [0, 1)");
}

namespace {

/// Which dtypes an operand may have: any floating dtype (the functionals' math path), or the
/// fused kernels' float32, float64, bfloat16 and float16.
enum class Dtypes { Floating, Fused };

/// An operand: defined, `dims` dims exactly (`exact_dims`) or at least, of `dtypes`. `layout`
/// names its dims in messages, e.g. "[B, H, Lq, E]".
void check_operand(
    const char* fn, const char* name, const torch::Tensor& t, const char* layout, int64_t dims,
    bool exact_dims, Dtypes dtypes) {
  TORCH_CHECK(
      t.defined(), fn, ": ", name, " is undefined, expected a ",
      exact_dims ? c10::str(dims, "-D ") : std::string(), "tensor ", layout);
  TORCH_CHECK(
      exact_dims ? t.dim() == dims : t.dim() >= dims, fn, ": ", name, " has ", t.dim(), " dims ",
      shape_str(t.sizes()), ", expected ", exact_dims ? "" : "at least ", dims, " ", layout);
  if (dtypes == Dtypes::Fused) {
    check_fused_dtype(fn, name, t);
    return;
  }
  TORCH_CHECK(
      t.is_floating_point(), fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected a floating dtype");
}

// Broadcasts the leading (batch/head) dims of two tensors, or reports which ones clash.
std::vector<int64_t> broadcast_leading(
    const char* fn, const char* a_name, torch::IntArrayRef a_shape, torch::IntArrayRef a_lead,
    const char* b_name, torch::IntArrayRef b_shape, torch::IntArrayRef b_lead) {
  const size_t n = std::max(a_lead.size(), b_lead.size());
  std::vector<int64_t> out(n, 1);
  for (size_t i = 0; i < n; ++i) {
    const int64_t a = i < n - a_lead.size() ? 1 : a_lead[i - (n - a_lead.size())];
    const int64_t b = i < n - b_lead.size() ? 1 : b_lead[i - (n - b_lead.size())];
    TORCH_CHECK(
        a == b || a == 1 || b == 1, fn, ": the leading dims of ", a_name, " ", shape_str(a_shape),
        " and ", b_name, " ", shape_str(b_shape), " do not broadcast (", a, " vs ", b, ")");
    out[i] = a == 1 ? b : a;
  }
  return out;
}

void check_key_padding_mask(
    const char* fn, const torch::Tensor& kpm, const torch::Tensor& query,
    const std::vector<int64_t>& scores, int64_t lk) {
  const bool batched = scores.size() >= 3;
  const bool ok = (kpm.dim() == 1 && kpm.size(0) == lk) ||
                  (batched && kpm.dim() == 2 && kpm.size(1) == lk && kpm.size(0) == scores[0]);
  TORCH_CHECK(
      ok, fn, ": key_padding_mask has shape ", shape_str(kpm.sizes()), ", expected [", lk, "] [Lk]",
      batched ? c10::str(" or [", scores[0], ", ", lk, "] [B, Lk]") : std::string(), " for scores ",
      shape_str(scores));
  check_mask_dtype(fn, "key_padding_mask", kpm, query);
}

} // namespace

std::vector<int64_t> check_inputs(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const MaskArgs& masks, bool same_qk_dim) {
  check_operand(fn, "query", query, "[..., Lq, E]", 2, /*exact_dims=*/false, Dtypes::Floating);
  check_operand(fn, "key", key, "[..., Lk, E]", 2, /*exact_dims=*/false, Dtypes::Floating);
  check_operand(fn, "value", value, "[..., Lk, Ev]", 2, /*exact_dims=*/false, Dtypes::Floating);
  check_like(fn, "key", key, query);
  check_like(fn, "value", value, query);
  if (same_qk_dim) {
    TORCH_CHECK(
        query.size(-1) == key.size(-1), fn, ": key has E=", key.size(-1), " (shape ",
        shape_str(key.sizes()), "), expected ", query.size(-1), " like query ",
        shape_str(query.sizes()));
  }
  TORCH_CHECK(
      value.size(-2) == key.size(-2), fn, ": value has Lk=", value.size(-2), " (shape ",
      shape_str(value.sizes()), "), expected ", key.size(-2), " like key ", shape_str(key.sizes()));
  auto lead = broadcast_leading(
      fn, "query", query.sizes(), query.sizes().slice(0, query.dim() - 2), "key", key.sizes(),
      key.sizes().slice(0, key.dim() - 2));
  broadcast_leading(
      fn, "query and key", lead, lead, "value", value.sizes(),
      value.sizes().slice(0, value.dim() - 2));

  std::vector<int64_t> scores = lead;
  scores.push_back(query.size(-2));
  scores.push_back(key.size(-2));
  if (masks.attn_mask.defined()) {
    check_mask(fn, "attn_mask", masks.attn_mask, query, scores, "[..., Lq, Lk]");
  }
  if (masks.key_padding_mask.defined()) {
    check_key_padding_mask(fn, masks.key_padding_mask, query, scores, key.size(-2));
  }
  check_dropout(fn, "dropout_p", masks.dropout_p);
  return scores;
}

double resolve_scale(
    const char* fn, const c10::optional<double>& scale, const torch::Tensor& query) {
  if (scale.has_value()) {
    TORCH_CHECK(std::isfinite(*scale), fn, ": scale is ", *scale, ", expected a finite number");
    return *scale;
  }
  const int64_t e = query.size(-1);
  TORCH_CHECK(
      e > 0, fn, ": query has E=0 (shape ", shape_str(query.sizes()),
      "), so the default scale 1/sqrt(E) is infinite; pass a finite scale or E >= 1");
  return 1.0 / std::sqrt(static_cast<double>(e));
}

void check_param(
    const char* fn, const char* name, const torch::Tensor& param, const torch::Tensor& like,
    torch::IntArrayRef expected, const char* expected_desc) {
  TORCH_CHECK(
      param.defined(), fn, ": ", name, " is undefined, expected shape ", shape_str(expected), " ",
      expected_desc);
  TORCH_CHECK(
      param.sizes() == expected, fn, ": ", name, " has shape ", shape_str(param.sizes()),
      ", expected ", shape_str(expected), " ", expected_desc);
  check_like(fn, name, param, like);
}

void check_features(
    const char* fn, const char* input_name, const torch::Tensor& input, const char* weight_name,
    const torch::Tensor& weight, int64_t dim, const char* layout) {
  TORCH_CHECK(
      weight.defined() && weight.dim() == 2, fn, ": ", weight_name, " has shape ",
      weight.defined() ? shape_str(weight.sizes()) : "undefined", ", expected 2 dims ", layout);
  TORCH_CHECK(
      input.size(-1) == weight.size(dim), fn, ": ", input_name, " has ", input.size(-1),
      " features (shape ", shape_str(input.sizes()), "), expected ", weight.size(dim), ", dim ",
      dim, " of ", weight_name, " ", shape_str(weight.sizes()), " ", layout);
}

std::tuple<torch::Tensor, double> check_sdpa_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask, double dropout_p,
    c10::optional<double> scale) {
  for (const auto& [name, t, layout] :
       {std::tuple<const char*, const torch::Tensor&, const char*>{"query", query, "[B, H, Lq, E]"},
        {"key", key, "[B, H, Lk, E]"},
        {"value", value, "[B, H, Lk, Ev]"}}) {
    check_operand(fn, name, t, layout, 4, /*exact_dims=*/true, Dtypes::Fused);
    check_like(fn, name, t, query);
  }
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), E = query.size(3);
  const int64_t Lk = key.size(2);
  TORCH_CHECK(
      key.size(0) == B && key.size(1) == H && key.size(3) == E, fn, ": key has shape ",
      shape_str(key.sizes()), ", expected [", B, ", ", H, ", Lk, ", E, "] [B, H, Lk, E] for query ",
      shape_str(query.sizes()));
  TORCH_CHECK(
      value.size(0) == B && value.size(1) == H && value.size(2) == Lk, fn, ": value has shape ",
      shape_str(value.sizes()), ", expected [", B, ", ", H, ", ", Lk,
      ", Ev] [B, H, Lk, Ev] for key ", shape_str(key.sizes()));
  check_dropout(fn, "dropout_p", dropout_p);
  const double resolved = resolve_scale(fn, scale, query);
  if (!attn_mask.has_value() || !attn_mask->defined()) {
    return {torch::Tensor(), resolved};
  }
  const auto& m = *attn_mask;
  const std::vector<int64_t> scores{B, H, Lq, Lk};
  check_mask(fn, "attn_mask", m, query, scores, "[B, H, Lq, Lk]");
  std::vector<int64_t> shape(4 - m.dim(), 1);
  shape.insert(shape.end(), m.sizes().begin(), m.sizes().end());
  return {m.view(shape).expand(scores), resolved};
}

std::tuple<torch::Tensor, double> check_sdpa_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, const torch::Tensor& output,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale) {
  auto checked = check_sdpa_args(fn, query, key, value, attn_mask, /*dropout_p=*/0.0, scale);
  const std::vector<int64_t> out_shape{query.size(0), query.size(1), query.size(2), value.size(3)};
  check_output_like(fn, "grad_output", grad_output, query, out_shape);
  check_output_like(fn, "output", output, query, out_shape);
  check_softmax_stats_shape(fn, row_max, row_log_sum, query);
  return checked;
}

void check_additive_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  for (const auto& [name, t, desc] :
       {std::tuple<const char*, const torch::Tensor&, const char*>{"query", query, "[..., Lq, D]"},
        {"key", key, "[..., Lk, D]"}}) {
    check_operand(fn, name, t, desc, 2, /*exact_dims=*/false, Dtypes::Fused);
  }
  check_like(fn, "key", key, query);
  const int64_t D = query.size(-1);
  TORCH_CHECK(
      key.dim() == query.dim() && key.size(-1) == D &&
          key.sizes().slice(0, key.dim() - 2) == query.sizes().slice(0, query.dim() - 2),
      fn, ": key has shape ", shape_str(key.sizes()), ", expected [..., Lk, ", D,
      "] with the leading dims of query ", shape_str(query.sizes()));
  check_param(fn, "score_weight", score_weight, query, {D}, "[D]");
}

void check_additive_backward_args(
    const char* fn, const torch::Tensor& grad_scores, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& score_weight) {
  check_additive_args(fn, query, key, score_weight);
  auto shape = query.sizes().vec();
  shape.back() = key.size(-2);
  TORCH_CHECK(grad_scores.defined(), fn, ": grad_scores is undefined, expected ", shape_str(shape));
  TORCH_CHECK(
      grad_scores.sizes() == torch::IntArrayRef(shape) &&
          grad_scores.scalar_type() == query.scalar_type(),
      fn, ": grad_scores has shape ", shape_str(grad_scores.sizes()), " and dtype ",
      grad_scores.scalar_type(), ", expected ", shape_str(shape), " and ", query.scalar_type());
  check_like(fn, "grad_scores", grad_scores, query);
}

void check_dropout_option(const char* module, double p) {
  check_dropout(c10::str("torchattn::nn::", module).c_str(), "dropout", p);
}

} // namespace torchattn::detail
