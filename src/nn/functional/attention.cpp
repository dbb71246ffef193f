#include <torchattn/nn/functional/attention.h>
#include <torchattn/ops/attention.h>

#include "detail/checks.h"
#include "detail/compat.h"
#include "detail/math_attention.h"
#include "detail/optional_tensor.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>

namespace torchattn::nn::functional {

using detail::MaskArgs;

namespace {

/// Whether the fused ops compute `dtype`: float32, float64, bfloat16 and float16.
bool fused_dtype(torch::ScalarType dtype) {
  return dtype == torch::kFloat || dtype == torch::kDouble || dtype == torch::kBFloat16 ||
         dtype == torch::kHalf;
}

std::atomic<int64_t> g_math_path_max_scores{48 * 48};

/// softmax(q kᵀ · scale) v by the fused op, or undefined where the op does not apply: weights
/// requested, dropout, a mask that requires grad, more than two leading dims, a dtype the
/// fused ops do not compute (see fused_dtype). On other devices, without masks, LibTorch 2.1+'s own
/// at::scaled_dot_product_attention.
torch::Tensor fused_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const MaskArgs& masks, const std::vector<int64_t>& scores_shape, double scale) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  const auto lead_dims = static_cast<int64_t>(scores_shape.size()) - 2;
  const auto dtype = query.scalar_type();
  const bool mask_grad =
      (masks.attn_mask.defined() && masks.attn_mask.requires_grad()) ||
      (masks.key_padding_mask.defined() && masks.key_padding_mask.requires_grad());
  if (masks.need_weights || masks.dropout_p > 0.0 || mask_grad || lead_dims > 2) {
    return {};
  }
  // To [B, H, L, E]: leading dims broadcast (a copy only where they differ), then padded.
  const std::vector<int64_t> lead(scores_shape.begin(), scores_shape.end() - 2);
  auto to4d = [&](const torch::Tensor& t) {
    std::vector<int64_t> shape = lead;
    shape.push_back(t.size(-2));
    shape.push_back(t.size(-1));
    auto x = t.expand(shape);
    while (x.dim() < 4) {
      x = x.unsqueeze(0);
    }
    return x;
  };
  std::vector<int64_t> out_shape = lead;
  out_shape.push_back(query.size(-2));
  out_shape.push_back(value.size(-1));
  if (!query.device().is_cpu()) {
    // Other devices: PyTorch's own fused attention where LibTorch has it (2.1+). Only without
    // masks, where no row can be fully masked (PyTorch would give NaN there, we give zeros).
    const bool masked = masks.attn_mask.defined() || masks.key_padding_mask.defined();
    if (!TORCHATTN_HAS_ATEN_SDPA || masked) {
      return {};
    }
    return detail::aten_sdpa(to4d(query), to4d(key), to4d(value), masks.is_causal, scale)
        .reshape(out_shape);
  }
  if (!fused_dtype(dtype)) {
    return {};
  }
  // Small score matrices cost little memory, and there the math path's few large batched
  // matmuls beat the tiled kernel's per-head setup (forward+backward, causal, 512 heads of
  // 64 dims: math 11.1 ms and fused 13.4 ms at L = 20, fused ahead from L = 64 on).
  if (query.size(-2) * key.size(-2) <= g_math_path_max_scores.load(std::memory_order_relaxed)) {
    return {};
  }
  auto mask = detail::combined_mask(masks, static_cast<int64_t>(scores_shape.size()));
  // Padded in front like q, k and v: scores [B, Lq, Lk] become [1, B, Lq, Lk], so a mask
  // [B, 1, Lk] becomes [1, B, 1, Lk].
  while (mask.defined() && mask.dim() < 4) {
    mask = mask.unsqueeze(0);
  }
  auto out = ops::scaled_dot_product_attention(
      to4d(query), to4d(key), to4d(value), detail::optional_tensor(mask), /*dropout_p=*/0.0,
      masks.is_causal, scale);
  return out.view(out_shape);
}

/// Under CPU autocast every attention functional is a lower-precision op, as PyTorch's
/// scaled_dot_product_attention and Linear are: each casts its floating tensors (inputs, masks,
/// weights) to the autocast dtype and runs with autocast off inside, all in that dtype. A module
/// whose projections autocast made bfloat16 may then pass float32 masks or memories.
/// `options` with its floating masks cast.
template <typename Options>
Options autocast_masks(Options options) {
  options.attn_mask(detail::autocast_cpu(options.attn_mask()));
  options.key_padding_mask(detail::autocast_cpu(options.key_padding_mask()));
  return options;
}

/// Turns CPU autocast off for its scope (excluding its dispatch key, as its own kernels do).
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;
constexpr auto kAutocastKey = c10::DispatchKey::AutocastCPU;

} // namespace

void set_math_path_max_scores(int64_t n) {
  TORCH_CHECK(n >= 0, "set_math_path_max_scores: n must be non-negative, got ", n);
  g_math_path_max_scores.store(n, std::memory_order_relaxed);
}

int64_t math_path_max_scores() {
  return g_math_path_max_scores.load(std::memory_order_relaxed);
}

std::tuple<torch::Tensor, torch::Tensor> dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const DotProductAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  if (AutocastCpu::is_enabled()) {
    NoAutocast no_autocast(kAutocastKey);
    using detail::autocast_cpu;
    return dot_product_attention(
        autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), autocast_masks(options));
  }
  const auto masks = MaskArgs::from(options);
  const auto scores_shape =
      detail::check_inputs("dot_product_attention", query, key, value, masks, /*same_qk_dim=*/true);
  if (auto out = fused_attention(query, key, value, masks, scores_shape, /*scale=*/1.0);
      out.defined()) {
    return {out, torch::Tensor()};
  }
  return detail::softmax_attend(detail::matmul(query, key.transpose(-2, -1)), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const ScaledDotProductAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  if (AutocastCpu::is_enabled()) {
    NoAutocast no_autocast(kAutocastKey);
    using detail::autocast_cpu;
    return scaled_dot_product_attention(
        autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), autocast_masks(options));
  }
  constexpr const char* fn = "scaled_dot_product_attention";
  const auto masks = MaskArgs::from(options);
  const auto scores_shape =
      detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/true);
  const double scale = detail::resolve_scale(fn, options.scale(), query);
  if (auto out = fused_attention(query, key, value, masks, scores_shape, scale); out.defined()) {
    return {out, torch::Tensor()};
  }
  // Scaling q (Lq x E) costs less than scaling the scores (Lq x Lk).
  return detail::softmax_attend(detail::matmul(query * scale, key.transpose(-2, -1)), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> cosine_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const CosineAttentionFuncOptions& options) {
  // query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]
  if (AutocastCpu::is_enabled()) {
    NoAutocast no_autocast(kAutocastKey);
    using detail::autocast_cpu;
    auto cast = autocast_masks(options);
    cast.temperature(autocast_cpu(options.temperature()));
    return cosine_attention(autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), cast);
  }
  constexpr const char* fn = "cosine_attention";
  const auto masks = MaskArgs::from(options);
  const auto scores_shape =
      detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/true);
  TORCH_CHECK(options.eps() > 0.0, fn, ": eps is ", options.eps(), ", expected a positive number");
  const auto& tau = options.temperature();
  if (tau.defined()) {
    TORCH_CHECK(
        tau.scalar_type() == query.scalar_type(), fn, ": temperature has dtype ", tau.scalar_type(),
        ", expected ", query.scalar_type(), " like query");
    TORCH_CHECK(
        tau.device() == query.device(), fn, ": temperature is on ", tau.device(), ", expected ",
        query.device(), " like query");
    TORCH_CHECK(
        detail::broadcastable(tau.sizes(), scores_shape), fn, ": temperature has shape ",
        detail::shape_str(tau.sizes()), ", expected a shape broadcastable to the scores ",
        detail::shape_str(scores_shape), " (e.g. [H, 1, 1] for heads at dim -3)");
  }
  namespace tnf = torch::nn::functional;
  const auto norm = tnf::NormalizeFuncOptions().p(2).dim(-1).eps(options.eps());
  auto q = tnf::normalize(query, norm);
  auto k = tnf::normalize(key, norm);
  // The fused kernel takes a scalar scale: a temperature constant along the keys folds into
  // the queries ([..., Lq or 1, 1]), one constant along the queries into the keys.
  if (!tau.defined() || tau.dim() == 0 || tau.size(-1) == 1) {
    auto q_tau = tau.defined() ? q * tau : q;
    if (auto out = fused_attention(q_tau, k, value, masks, scores_shape, 1.0); out.defined()) {
      return {out, torch::Tensor()};
    }
  } else if (tau.dim() >= 2 && tau.size(-2) == 1) {
    if (auto out = fused_attention(q, k * tau.transpose(-2, -1), value, masks, scores_shape, 1.0);
        out.defined()) {
      return {out, torch::Tensor()};
    }
  }
  auto scores = detail::matmul(q, k.transpose(-2, -1));
  if (tau.defined()) {
    scores = scores * tau;
  }
  return detail::softmax_attend(std::move(scores), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> additive_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& query_weight, const torch::Tensor& key_weight,
    const torch::Tensor& score_weight, const AdditiveAttentionFuncOptions& options) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  if (AutocastCpu::is_enabled()) {
    NoAutocast no_autocast(kAutocastKey);
    using detail::autocast_cpu;
    auto cast = autocast_masks(options);
    cast.query_bias(autocast_cpu(options.query_bias()));
    cast.key_bias(autocast_cpu(options.key_bias()));
    cast.score_bias(autocast_cpu(options.score_bias()));
    return additive_attention(
        autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), autocast_cpu(query_weight),
        autocast_cpu(key_weight), autocast_cpu(score_weight), cast);
  }
  constexpr const char* fn = "additive_attention";
  const auto masks = MaskArgs::from(options);
  detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/false);
  detail::check_features(fn, "query", query, "query_weight", query_weight, 1, "[D, Eq]");
  detail::check_features(fn, "key", key, "key_weight", key_weight, 1, "[D, Ek]");
  const int64_t d = query_weight.size(0);
  detail::check_param(fn, "query_weight", query_weight, query, {d, query.size(-1)}, "[D, Eq]");
  detail::check_param(fn, "key_weight", key_weight, query, {d, key.size(-1)}, "[D, Ek]");
  detail::check_param(fn, "score_weight", score_weight, query, {1, d}, "[1, D]");
  if (options.query_bias().defined()) {
    detail::check_param(fn, "query_bias", options.query_bias(), query, {d}, "[D]");
  }
  if (options.key_bias().defined()) {
    detail::check_param(fn, "key_bias", options.key_bias(), query, {d}, "[D]");
  }
  if (options.score_bias().defined()) {
    detail::check_param(fn, "score_bias", options.score_bias(), query, {1}, "[1]");
  }
  auto q = detail::linear(query, query_weight, options.query_bias()); // [..., Lq, D]
  auto k = detail::linear(key, key_weight, options.key_bias());       // [..., Lk, D]
  torch::Tensor scores;                                               // [..., Lq, Lk]
  // The fused score never forms the [..., Lq, Lk, D] energies; like the fused SDPA path it is
  // taken when the weights are not returned, so need_weights(true) keeps double backward.
  if (!masks.need_weights && q.device().is_cpu() && fused_dtype(q.scalar_type()) &&
      q.dim() == k.dim() && q.sizes().slice(0, q.dim() - 2) == k.sizes().slice(0, k.dim() - 2)) {
    scores = ops::additive_attention_scores(q, k, score_weight.view({d}));
    if (options.score_bias().defined()) {
      scores = scores + options.score_bias();
    }
  } else {
    auto energy = detail::tanh(q.unsqueeze(-2) + k.unsqueeze(-3)); // [..., Lq, Lk, D]
    scores = detail::linear(energy, score_weight, options.score_bias()).squeeze(-1);
  }
  return detail::softmax_attend(std::move(scores), value, masks);
}

std::tuple<torch::Tensor, torch::Tensor> general_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& weight, const GeneralAttentionFuncOptions& options) {
  // query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev] -> out [..., Lq, Ev]
  if (AutocastCpu::is_enabled()) {
    NoAutocast no_autocast(kAutocastKey);
    using detail::autocast_cpu;
    return general_attention(
        autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), autocast_cpu(weight),
        autocast_masks(options));
  }
  constexpr const char* fn = "general_attention";
  const auto masks = MaskArgs::from(options);
  detail::check_inputs(fn, query, key, value, masks, /*same_qk_dim=*/false);
  detail::check_features(fn, "query", query, "weight", weight, 0, "[Eq, Ek]");
  detail::check_features(fn, "key", key, "weight", weight, 1, "[Eq, Ek]");
  detail::check_param(fn, "weight", weight, query, {query.size(-1), key.size(-1)}, "[Eq, Ek]");
  // (q W) kᵀ: projecting the Lq queries is cheaper than the Lk keys in decoding (Lq = 1).
  return detail::softmax_attend(
      detail::matmul(detail::matmul(query, weight), key.transpose(-2, -1)), value, masks);
}

} // namespace torchattn::nn::functional
