#include "ops/registration.h"

#include "detail/attention_core.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::ops::detail {

namespace {

void check_qkv(const char* fn, const char* name, const torch::Tensor& t, const char* desc,
               const torch::Tensor& query) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected a 4-D tensor ", desc);
  TORCH_CHECK(
      t.dim() == 4, fn, ": ", name, " has ", t.dim(), " dims ",
      torchattn::detail::shape_str(t.sizes()), ", expected 4 ", desc);
  TORCH_CHECK(
      t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble, fn, ": ", name,
      " has dtype ", t.scalar_type(), ", expected Float or Double");
  torchattn::detail::check_like(fn, name, t, query);
}

} // namespace

void check_additive_args(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  using torchattn::detail::shape_str;
  for (const auto& [name, t, desc] :
       {std::tuple<const char*, const torch::Tensor&, const char*>{"query", query, "[..., Lq, D]"},
        {"key", key, "[..., Lk, D]"}}) {
    TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected a tensor ", desc);
    TORCH_CHECK(
        t.dim() >= 2, fn, ": ", name, " has ", t.dim(), " dims ", shape_str(t.sizes()),
        ", expected at least 2 ", desc);
    TORCH_CHECK(
        t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble, fn, ": ", name,
        " has dtype ", t.scalar_type(), ", expected Float or Double");
    TORCH_CHECK(t.device().is_cpu(), fn, ": ", name, " is on ", t.device(), ", expected cpu");
  }
  torchattn::detail::check_like(fn, "key", key, query);
  const int64_t D = query.size(-1);
  TORCH_CHECK(
      key.dim() == query.dim() && key.size(-1) == D &&
          key.sizes().slice(0, key.dim() - 2) == query.sizes().slice(0, query.dim() - 2),
      fn, ": key has shape ", shape_str(key.sizes()), ", expected [..., Lk, ", D,
      "] with the leading dims of query ", shape_str(query.sizes()));
  torchattn::detail::check_param(fn, "score_weight", score_weight, query, {D}, "[D]");
}

std::tuple<torch::Tensor, double> check_sdpa_args(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    double dropout_p,
    c10::optional<double> scale) {
  using torchattn::detail::shape_str;
  check_qkv(fn, "query", query, "[B, H, Lq, E]", query);
  check_qkv(fn, "key", key, "[B, H, Lk, E]", query);
  check_qkv(fn, "value", value, "[B, H, Lk, Ev]", query);
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), E = query.size(3);
  const int64_t Lk = key.size(2);
  TORCH_CHECK(
      key.size(0) == B && key.size(1) == H && key.size(3) == E, fn, ": key has shape ",
      shape_str(key.sizes()), ", expected [", B, ", ", H, ", Lk, ", E,
      "] [B, H, Lk, E] for query ", shape_str(query.sizes()));
  TORCH_CHECK(
      value.size(0) == B && value.size(1) == H && value.size(2) == Lk, fn,
      ": value has shape ", shape_str(value.sizes()), ", expected [", B, ", ", H, ", ", Lk,
      ", Ev] [B, H, Lk, Ev] for key ", shape_str(key.sizes()));
  TORCH_CHECK(
      dropout_p >= 0.0 && dropout_p < 1.0, fn, ": dropout_p is ", dropout_p,
      ", expected a probability in [0, 1)");
  const double resolved = torchattn::detail::resolve_scale(fn, scale, query);

  torch::Tensor mask;
  if (attn_mask.has_value() && attn_mask->defined()) {
    const auto& m = *attn_mask;
    TORCH_CHECK(
        m.scalar_type() == torch::kBool || m.scalar_type() == query.scalar_type(), fn,
        ": attn_mask has dtype ", m.scalar_type(), ", expected Bool or ", query.scalar_type(),
        " like query");
    TORCH_CHECK(
        m.device() == query.device(), fn, ": attn_mask is on ", m.device(), ", expected ",
        query.device(), " like query");
    const std::vector<int64_t> scores{B, H, Lq, Lk};
    TORCH_CHECK(
        m.dim() <= 4 && torchattn::detail::broadcastable(m.sizes(), scores), fn,
        ": attn_mask has shape ", shape_str(m.sizes()),
        ", expected a shape broadcastable to the scores ", shape_str(scores),
        " [B, H, Lq, Lk]");
    std::vector<int64_t> shape(4 - m.dim(), 1);
    shape.insert(shape.end(), m.sizes().begin(), m.sizes().end());
    mask = m.view(shape).expand(scores);
  }
  return {mask, resolved};
}

torch::Tensor sdpa_math(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& mask4d,
    double dropout_p,
    bool is_causal,
    double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
  const torch::Tensor no_padding;
  const torchattn::detail::MaskArgs masks{mask4d, no_padding, is_causal, dropout_p,
                                          /*need_weights=*/false};
  auto scores = (query * scale).matmul(key.transpose(-2, -1));
  return std::get<0>(torchattn::detail::attend(std::move(scores), value, masks));
}

} // namespace torchattn::ops::detail
