#include "detail/math_attention.h"
#include "detail/compat.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace torchattn::detail {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
} // namespace

torch::Tensor causal_masked(
    int64_t rows, int64_t cols, int64_t offset, const torch::TensorOptions& options) {
  return torch::ones({rows, cols}, options.dtype(torch::kBool)).triu(offset + 1);
}

torch::Tensor align_key_padding_mask(const torch::Tensor& key_padding_mask, int64_t scores_dim) {
  if (key_padding_mask.dim() != 2) {
    return key_padding_mask;
  }
  std::vector<int64_t> shape(scores_dim, 1);
  shape.front() = key_padding_mask.size(0);
  shape.back() = key_padding_mask.size(1);
  return key_padding_mask.view(shape);
}

torch::Tensor combined_mask(const MaskArgs& masks, int64_t scores_dim) {
  const torch::Tensor& attn = masks.attn_mask;
  if (!masks.key_padding_mask.defined()) {
    return attn;
  }
  auto kpm = align_key_padding_mask(masks.key_padding_mask, scores_dim);
  const bool kpm_bool = kpm.scalar_type() == torch::kBool;
  if (!attn.defined()) {
    return kpm_bool ? kpm.logical_not() : kpm;
  }
  const bool attn_bool = attn.scalar_type() == torch::kBool;
  if (attn_bool && kpm_bool) {
    return attn.logical_and(kpm.logical_not());
  }
  const auto dtype = attn_bool ? kpm.scalar_type() : attn.scalar_type();
  auto additive = [&](const torch::Tensor& keep) {
    return torch::zeros({}, keep.options().dtype(dtype)).masked_fill(keep.logical_not(), -kInf);
  };
  return (attn_bool ? additive(attn) : attn) + (kpm_bool ? additive(kpm.logical_not()) : kpm);
}

torch::Tensor mask_scores(torch::Tensor scores, const MaskArgs& masks, bool* masked_any) {
  // scores [..., Lq, Lk] -> the same, masked
  torch::Tensor masked; // bool, true where a query may not attend to a key
  bool additive = false;
  auto mask_out = [&](const torch::Tensor& m) {
    masked = masked.defined() ? masked.logical_or(m) : m;
  };
  auto apply = [&](const torch::Tensor& m, bool true_masks) {
    if (m.scalar_type() != torch::kBool) {
      scores = scores + m;
      additive = true;
    } else {
      mask_out(true_masks ? m : m.logical_not());
    }
  };
  if (masks.attn_mask.defined()) {
    apply(masks.attn_mask, /*true_masks=*/false);
  }
  if (masks.key_padding_mask.defined()) {
    apply(align_key_padding_mask(masks.key_padding_mask, scores.dim()), /*true_masks=*/true);
  }
  if (masks.is_causal) {
    mask_out(causal_masked(scores.size(-2), scores.size(-1), /*offset=*/0, scores.options()));
  }
  if (masked.defined()) {
    scores = scores.masked_fill(masked, -kInf);
  }
  if (masked_any != nullptr) {
    *masked_any = masked.defined() || additive;
  }
  return scores;
}

std::tuple<torch::Tensor, torch::Tensor> softmax_attend(
    torch::Tensor scores, const torch::Tensor& value, const MaskArgs& masks) {
  // scores [..., Lq, Lk], value [..., Lk, Ev] -> out [..., Lq, Ev], weights [..., Lq, Lk]
  bool masked_any = false;
  scores = mask_scores(std::move(scores), masks, &masked_any);
  torch::Tensor weights;
  if (masked_any) {
    // A row with every key masked would be softmax(-inf, ..., -inf) = NaN, and NaN would
    // reach the gradients too. Such rows get finite scores before the softmax (so its
    // backward stays finite) and zero weights after it (so the gradient into them is zero).
    auto dead = scores.eq(-kInf).all(-1, /*keepdim=*/true);
    weights = detail::softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0);
  } else {
    weights = detail::softmax(scores, -1);
  }
  if (masks.dropout_p > 0.0) {
    weights = torch::dropout(weights, masks.dropout_p, /*train=*/true);
  }
  auto out = detail::matmul(weights, value);
  if (!masks.need_weights) {
    weights = torch::Tensor();
  }
  return {out, weights};
}

torch::Tensor math_scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& mask4d, double dropout_p, bool is_causal, double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
  const torch::Tensor no_padding;
  const MaskArgs masks{mask4d, no_padding, is_causal, dropout_p, /*need_weights=*/false};
  // Scaling q (Lq x E) costs less than scaling the scores (Lq x Lk).
  auto scores = detail::matmul(query * scale, key.transpose(-2, -1));
  return std::get<0>(softmax_attend(std::move(scores), value, masks));
}

torch::Tensor temperature_from_log(
    const torch::Tensor& logit_scale, const c10::optional<double>& max_temperature) {
  return max_temperature.has_value() ? logit_scale.clamp_max(std::log(*max_temperature)).exp()
                                     : logit_scale.exp();
}

} // namespace torchattn::detail
