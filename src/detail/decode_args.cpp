#include "detail/decode_args.h"

#include <torchattn/ops/decode_attention.h>

#include "detail/checks.h"
#include "detail/flex_args.h"

#include <torch/torch.h>

namespace torchattn::detail {

namespace {

/// Checks an optional int64 [B] argument; returns it (undefined when absent).
torch::Tensor per_row(
    const char* fn, const char* name, const c10::optional<torch::Tensor>& arg,
    const torch::Tensor& query) {
  if (!arg.has_value() || !arg->defined()) {
    return {};
  }
  const auto& t = *arg;
  TORCH_CHECK(
      t.dim() == 1 && t.size(0) == query.size(0) && t.scalar_type() == torch::kLong, fn, ": ", name,
      " has shape ", shape_str(t.sizes()), " ", t.scalar_type(), ", expected Long [", query.size(0),
      "] (one per batch row)");
  TORCH_CHECK(
      t.device() == query.device(), fn, ": ", name, " is on ", t.device(),
      ", expected query's device ", query.device());
  return t;
}

} // namespace

double check_decode_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& kv_lengths,
    const c10::optional<torch::Tensor>& q_start, int64_t window_left, c10::optional<double> scale,
    bool read_values) {
  const auto checked =
      check_flex_args(fn, query, key, value, FlexArgs{}, scale, /*enable_gqa=*/true, read_values);
  TORCH_CHECK(
      window_left >= -1, fn, ": window_left is ", window_left,
      ", expected -1 (unbounded) or a count >= 0");
  auto lengths = per_row(fn, "kv_lengths", kv_lengths, query);
  per_row(fn, "q_start", q_start, query);
  if (lengths.defined() && read_values && lengths.numel() > 0) {
    const int64_t lo = lengths.min().item<int64_t>(), hi = lengths.max().item<int64_t>();
    TORCH_CHECK(
        lo >= 0 && hi <= key.size(2), fn, ": kv_lengths has values in [", lo, ", ", hi,
        "], expected lengths in [0, ", key.size(2), "] (Lk, the keys given)");
  }
  return checked.scale;
}

bool decodable(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value) {
  const bool grad = torch::GradMode::is_enabled() &&
                    (query.requires_grad() || key.requires_grad() || value.requires_grad());
  return query.size(2) <= torchattn::ops::kDecodeMaxQueries && !grad;
}

torch::Tensor decode_mask(
    const torch::Tensor& query, const torch::Tensor& key,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left) {
  const int64_t B = query.size(0), Lq = query.size(2), Lk = key.size(2);
  const auto opts = torch::TensorOptions().dtype(torch::kLong).device(query.device());
  auto len =
      kv_lengths.has_value() && kv_lengths->defined() ? *kv_lengths : torch::full({B}, Lk, opts);
  auto start = q_start.has_value() && q_start->defined() ? *q_start : len - Lq;
  auto j = torch::arange(Lk, opts).view({1, 1, Lk});                     // [1, 1, Lk]
  auto p = (start.view({B, 1}) + torch::arange(Lq, opts)).unsqueeze(-1); // [B, Lq, 1]
  auto mask = j < len.view({B, 1, 1});
  if (is_causal) {
    mask = mask & (j <= p);
  }
  if (window_left >= 0) {
    mask = mask & (j >= p - window_left);
  }
  return mask.unsqueeze(1);
}

} // namespace torchattn::detail
