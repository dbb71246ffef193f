#include "detail/attention_core.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

namespace torchattn::detail {

std::string shape_str(torch::IntArrayRef sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

void check_like(const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query) {
  TORCH_CHECK(
      t.scalar_type() == query.scalar_type(), fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected ", query.scalar_type(), " like query");
  TORCH_CHECK(
      t.device() == query.device(), fn, ": ", name, " is on ", t.device(), ", expected ",
      query.device(), " like query");
}

namespace {

void check_tensor(const char* fn, const char* name, const torch::Tensor& t, const char* layout) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected a tensor ", layout);
  TORCH_CHECK(
      t.dim() >= 2, fn, ": ", name, " has ", t.dim(), " dims ", shape_str(t.sizes()),
      ", expected at least 2 ", layout);
  TORCH_CHECK(
      t.is_floating_point(), fn, ": ", name, " has dtype ", t.scalar_type(),
      ", expected a floating dtype");
#if TORCH_VERSION_MAJOR < 2
  // LibTorch 1.x has no CPU kernels for Half matmul, softmax or tanh.
  TORCH_CHECK(
      !(t.scalar_type() == torch::kHalf && t.device().is_cpu()), fn, ": ", name,
      " has dtype Half, which LibTorch ", TORCH_VERSION,
      " cannot multiply on the CPU; expected Float, Double or BFloat16 (Half needs LibTorch 2.x "
      "or another device)");
#endif
}

// Broadcasts the leading (batch/head) dims of two tensors, or reports which ones clash.
std::vector<int64_t> broadcast_leading(
    const char* fn,
    const char* a_name,
    torch::IntArrayRef a_shape,
    torch::IntArrayRef a_lead,
    const char* b_name,
    torch::IntArrayRef b_shape,
    torch::IntArrayRef b_lead) {
  const size_t n = std::max(a_lead.size(), b_lead.size());
  std::vector<int64_t> out(n, 1);
  for (size_t i = 0; i < n; ++i) {
    const int64_t a = i < n - a_lead.size() ? 1 : a_lead[i - (n - a_lead.size())];
    const int64_t b = i < n - b_lead.size() ? 1 : b_lead[i - (n - b_lead.size())];
    TORCH_CHECK(
        a == b || a == 1 || b == 1, fn, ": the leading dims of ", a_name, " ",
        shape_str(a_shape), " and ", b_name, " ", shape_str(b_shape),
        " do not broadcast (", a, " vs ", b, ")");
    out[i] = a == 1 ? b : a;
  }
  return out;
}

void check_mask(
    const char* fn,
    const char* name,
    const torch::Tensor& mask,
    const torch::Tensor& query,
    torch::IntArrayRef target,
    const char* target_desc) {
  TORCH_CHECK(
      mask.scalar_type() == torch::kBool || mask.scalar_type() == query.scalar_type(), fn, ": ",
      name, " has dtype ", mask.scalar_type(), ", expected bool or ", query.scalar_type(),
      " like query");
  TORCH_CHECK(
      mask.device() == query.device(), fn, ": ", name, " is on ", mask.device(), ", expected ",
      query.device(), " like query");
  TORCH_CHECK(
      broadcastable(mask.sizes(), target), fn, ": ", name, " has shape ", shape_str(mask.sizes()),
      ", expected a shape broadcastable to ", shape_str(target), " ", target_desc);
}

} // namespace

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

torch::Tensor causal_masked(int64_t rows, int64_t cols, int64_t offset, const torch::TensorOptions& options) {
  return torch::ones({rows, cols}, options.dtype(torch::kBool)).triu(offset + 1);
}

torch::Tensor temperature_from_log(const torch::Tensor& logit_scale, const c10::optional<double>& max_temperature) {
  return max_temperature.has_value() ? logit_scale.clamp_max(std::log(*max_temperature)).exp()
                                     : logit_scale.exp();
}

std::vector<int64_t> check_inputs(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const MaskArgs& masks,
    bool same_qk_dim) {
  check_tensor(fn, "query", query, "[..., Lq, E]");
  check_tensor(fn, "key", key, "[..., Lk, E]");
  check_tensor(fn, "value", value, "[..., Lk, Ev]");
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
      shape_str(value.sizes()), "), expected ", key.size(-2), " like key ",
      shape_str(key.sizes()));
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
    const auto& kpm = masks.key_padding_mask;
    const int64_t lk = key.size(-2);
    const bool batched = scores.size() >= 3;
    const bool ok = (kpm.dim() == 1 && kpm.size(0) == lk) ||
        (batched && kpm.dim() == 2 && kpm.size(1) == lk && kpm.size(0) == scores[0]);
    TORCH_CHECK(
        ok, fn, ": key_padding_mask has shape ", shape_str(kpm.sizes()), ", expected [", lk,
        "] [Lk]",
        batched ? fmt::format(" or [{}, {}] [B, Lk]", scores[0], lk) : std::string(),
        " for scores ", shape_str(scores));
    check_mask(
        fn, "key_padding_mask", kpm, query, kpm.sizes(), kpm.dim() == 1 ? "[Lk]" : "[B, Lk]");
  }
  TORCH_CHECK(
      masks.dropout_p >= 0.0 && masks.dropout_p < 1.0, fn, ": dropout_p is ", masks.dropout_p,
      ", expected a probability in [0, 1)");
  return scores;
}

double resolve_scale(const char* fn, const c10::optional<double>& scale, const torch::Tensor& query) {
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
    const char* fn,
    const char* name,
    const torch::Tensor& param,
    const torch::Tensor& like,
    torch::IntArrayRef expected,
    const char* expected_desc) {
  TORCH_CHECK(
      param.defined(), fn, ": ", name, " is undefined, expected shape ", shape_str(expected),
      " ", expected_desc);
  TORCH_CHECK(
      param.sizes() == expected, fn, ": ", name, " has shape ", shape_str(param.sizes()),
      ", expected ", shape_str(expected), " ", expected_desc);
  check_like(fn, name, param, like);
}

std::tuple<torch::Tensor, torch::Tensor> attend(
    torch::Tensor scores, const torch::Tensor& value, const MaskArgs& masks) {
  // scores [..., Lq, Lk], value [..., Lk, Ev] -> out [..., Lq, Ev], weights [..., Lq, Lk]
  const int64_t lq = scores.size(-2);
  const int64_t lk = scores.size(-1);
  torch::Tensor masked; // bool, true where a query may not attend to a key
  bool additive = false;
  auto mask_out = [&](const torch::Tensor& m) {
    masked = masked.defined() ? masked.logical_or(m) : m;
  };

  if (masks.attn_mask.defined()) {
    if (masks.attn_mask.scalar_type() == torch::kBool) {
      mask_out(masks.attn_mask.logical_not());
    } else {
      scores = scores + masks.attn_mask;
      additive = true;
    }
  }
  if (masks.key_padding_mask.defined()) {
    // [Lk] or [B, Lk] -> [B, 1, ..., 1, Lk], aligned with the first dim of the scores
    auto kpm = masks.key_padding_mask;
    if (kpm.dim() == 2) {
      std::vector<int64_t> shape(scores.dim(), 1);
      shape.front() = kpm.size(0);
      shape.back() = lk;
      kpm = kpm.view(shape);
    }
    if (kpm.scalar_type() == torch::kBool) {
      mask_out(kpm);
    } else {
      scores = scores + kpm;
      additive = true;
    }
  }
  if (masks.is_causal) {
    mask_out(causal_masked(lq, lk, /*offset=*/0, scores.options()));
  }
  if (masked.defined()) {
    scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
  }

  torch::Tensor weights;
  if (masked.defined() || additive) {
    // A row with every key masked would be softmax(-inf, ..., -inf) = NaN, and NaN would
    // reach the gradients too. Such rows get finite scores before the softmax (so its
    // backward stays finite) and zero weights after it (so the gradient into them is zero).
    auto dead = scores.eq(-std::numeric_limits<double>::infinity()).all(-1, /*keepdim=*/true);
    weights = torch::softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0);
  } else {
    weights = torch::softmax(scores, -1);
  }
  if (masks.dropout_p > 0.0) {
    weights = torch::dropout(weights, masks.dropout_p, /*train=*/true);
  }
  auto out = weights.matmul(value);
  if (!masks.need_weights) {
    weights = torch::Tensor();
  }
  return {out, weights};
}

} // namespace torchattn::detail

namespace torchattn::detail {

void check_dropout_option(const char* module, double p) {
  TORCH_CHECK(
      p >= 0.0 && p < 1.0, "torchattn::nn::", module, ": dropout is ", p,
      ", expected a probability in [0, 1)");
}

void print_optional(std::ostream& stream, const c10::optional<double>& value) {
  if (value.has_value()) {
    stream << *value;
  } else {
    stream << "None";
  }
}

} // namespace torchattn::detail
