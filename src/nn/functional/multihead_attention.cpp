#include <torchattn/nn/functional/attention.h>
#include <torchattn/nn/functional/multihead_attention.h>

#include <torchattn/nn/functional/flex_attention.h>

#include "detail/checks.h"
#include "detail/compat.h"
#include "detail/mask_args.h"
#include "detail/math_attention.h"

#include <torch/torch.h>

#include <limits>

namespace torchattn::nn::functional {

namespace {

using Options = MultiheadAttentionForwardFuncOptions;
using detail::shape_str;

constexpr const char* fn = "MultiheadAttention";
constexpr double kInf = std::numeric_limits<double>::infinity();
// Swin Transformer V2's clamp on learned cosine temperatures.
constexpr double kMaxCosineTemperature = 100.0;

/// The three projection weights (query, key, value) and biases.
struct Projections {
  torch::Tensor weight[3];
  torch::Tensor bias[3];
};

Projections projections_of(const Options& o) {
  Projections p;
  const bool separate = o.use_separate_proj_weight();
  const auto packed = separate ? std::vector<torch::Tensor>{} : o.in_proj_weight().chunk(3);
  const torch::Tensor* own[3] = {&o.q_proj_weight(), &o.k_proj_weight(), &o.v_proj_weight()};
  const auto biases =
      o.in_proj_bias().defined() ? o.in_proj_bias().chunk(3) : std::vector<torch::Tensor>{};
  for (int i = 0; i < 3; ++i) {
    p.weight[i] = separate ? *own[i] : packed[i];
    p.bias[i] = biases.empty() ? torch::Tensor() : biases[i];
  }
  return p;
}

/// Checks the parameters of `o` for embedding size E; returns the projections.
Projections check_parameters(
    const Options& o, int64_t e, int64_t kdim, int64_t vdim, bool static_kv) {
  const int64_t h = o.num_heads();
  TORCH_CHECK(
      h > 0 && e % h == 0, fn, ": embed_dim (", e, ") must be divisible by num_heads (", h, ")");
  TORCH_CHECK(
      o.out_proj_weight().defined(), fn, ": out_proj_weight is undefined, expected [", e, ", ", e,
      "]");
  const auto& like = o.out_proj_weight();
  detail::check_param(fn, "out_proj_weight", like, like, {e, e}, "[E, E]");
  if (o.out_proj_bias().defined()) {
    detail::check_param(fn, "out_proj_bias", o.out_proj_bias(), like, {e}, "[E]");
  }
  if (o.use_separate_proj_weight()) {
    detail::check_param(fn, "q_proj_weight", o.q_proj_weight(), like, {e, e}, "[E, E]");
    if (!static_kv) {
      detail::check_param(fn, "k_proj_weight", o.k_proj_weight(), like, {e, kdim}, "[E, kdim]");
      detail::check_param(fn, "v_proj_weight", o.v_proj_weight(), like, {e, vdim}, "[E, vdim]");
    }
  } else {
    detail::check_param(fn, "in_proj_weight", o.in_proj_weight(), like, {3 * e, e}, "[3E, E]");
  }
  if (o.in_proj_bias().defined()) {
    detail::check_param(fn, "in_proj_bias", o.in_proj_bias(), like, {3 * e}, "[3E]");
  }
  TORCH_CHECK(
      o.bias_k().defined() == o.bias_v().defined(), fn, ": bias_k and bias_v come together");
  if (o.bias_k().defined()) {
    detail::check_param(fn, "bias_k", o.bias_k(), like, {1, 1, e}, "[1, 1, E]");
    detail::check_param(fn, "bias_v", o.bias_v(), like, {1, 1, e}, "[1, 1, E]");
  }
  detail::check_dropout(fn, "dropout_p", o.dropout_p());
  return projections_of(o);
}

/// Checks query, key and value; the query's layout is [L, E] unbatched, else 3-D.
void check_mha_inputs(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const Options& o, bool static_kv) {
  const int64_t e = o.embed_dim_to_check();
  TORCH_CHECK(
      query.defined() && key.defined() && value.defined(), fn,
      ": query, key and value must be defined");
  TORCH_CHECK(
      query.dim() == 2 || query.dim() == 3, fn, ": query has ", query.dim(), " dims ",
      shape_str(query.sizes()), ", expected 3 ", o.batch_first() ? "[B, L, E]" : "[L, B, E]",
      " or 2 [L, E] (unbatched)");
  TORCH_CHECK(
      query.size(-1) == e, fn, ": query has ", query.size(-1), " features (shape ",
      shape_str(query.sizes()), "), expected embed_dim ", e);
  detail::check_like_parameters(fn, "query", query, o.out_proj_weight());
  if (static_kv) {
    return;
  }
  TORCH_CHECK(
      key.dim() == query.dim() && value.dim() == query.dim(), fn, ": key ", shape_str(key.sizes()),
      " and value ", shape_str(value.sizes()), " must have as many dims as query ",
      shape_str(query.sizes()));
  const int64_t kdim = o.use_separate_proj_weight() ? o.k_proj_weight().size(-1) : e;
  const int64_t vdim = o.use_separate_proj_weight() ? o.v_proj_weight().size(-1) : e;
  TORCH_CHECK(
      key.size(-1) == kdim, fn, ": key has ", key.size(-1), " features (shape ",
      shape_str(key.sizes()), "), expected kdim ", kdim);
  TORCH_CHECK(
      value.size(-1) == vdim, fn, ": value has ", value.size(-1), " features (shape ",
      shape_str(value.sizes()), "), expected vdim ", vdim);
  for (const auto* t : {&key, &value}) {
    TORCH_CHECK(
        t->scalar_type() == query.scalar_type() && t->device() == query.device(), fn,
        ": key and value must have the dtype and device of query (", query.scalar_type(), ", ",
        query.device(), ")");
  }
}

/// The masks in MultiheadAttention's convention (bool true = masked) for scores [B, H, L, S]:
/// attn_mask [L, S] or [B, H, L, S] (with is_causal folded in), key_padding_mask [B, S].
std::pair<torch::Tensor, torch::Tensor> prepare_masks(
    const Options& o, const torch::Tensor& query, int64_t b, int64_t l, int64_t s, bool batched) {
  const int64_t h = o.num_heads();
  torch::Tensor mask = o.attn_mask();
  if (mask.defined()) {
    detail::check_mask_dtype(fn, "attn_mask", mask, query);
    const bool ok2 = mask.dim() == 2 && mask.size(0) == l && mask.size(1) == s;
    const bool ok3 =
        mask.dim() == 3 && mask.size(0) == b * h && mask.size(1) == l && mask.size(2) == s;
    TORCH_CHECK(
        ok2 || ok3, fn, ": attn_mask has shape ", shape_str(mask.sizes()), ", expected [", l, ", ",
        s, "] [L, S] or [", b * h, ", ", l, ", ", s, "] [", batched ? "B*num_heads" : "num_heads",
        ", L, S]");
    if (ok3) {
      mask = mask.view({b, h, l, s});
    }
  }
  torch::Tensor kpm = o.key_padding_mask();
  if (kpm.defined()) {
    detail::check_mask_dtype(fn, "key_padding_mask", kpm, query);
    const bool ok = batched ? (kpm.dim() == 2 && kpm.size(0) == b && kpm.size(1) == s)
                            : (kpm.dim() == 1 && kpm.size(0) == s);
    TORCH_CHECK(
        ok, fn, ": key_padding_mask has shape ", shape_str(kpm.sizes()), ", expected ",
        batched ? shape_str({b, s}) + " [B, S]" : shape_str({s}) + " [S]");
    if (!batched)
      kpm = kpm.unsqueeze(0);
  }
  if (o.is_causal()) {
    auto causal = detail::causal_masked(l, s, /*offset=*/0, query.options());
    if (!mask.defined()) {
      mask = causal;
    } else if (mask.scalar_type() == torch::kBool) {
      mask = mask.logical_or(causal);
    } else {
      mask = mask.masked_fill(causal, -kInf);
    }
  }
  return {mask, kpm};
}

/// Checks the already projected keys and values [B, H, S, E / H].
void check_static(const Options& o, int64_t b, int64_t e) {
  const int64_t h = o.num_heads();
  for (const auto& [name, t] :
       {std::pair<const char*, const torch::Tensor&>{"static_k", o.static_k()},
        {"static_v", o.static_v()}}) {
    TORCH_CHECK(t.defined(), fn, ": static_k and static_v come together; ", name, " is undefined");
    TORCH_CHECK(
        t.dim() == 4 && t.size(0) == b && t.size(1) == h && t.size(3) == e / h, fn, ": ", name,
        " has shape ", shape_str(t.sizes()), ", expected [", b, ", ", h, ", S, ", e / h,
        "] [B, num_heads, S, head_dim]");
    detail::check_like_parameters(fn, name, t, o.out_proj_weight());
  }
  TORCH_CHECK(
      o.static_k().size(2) == o.static_v().size(2), fn, ": static_k holds ", o.static_k().size(2),
      " positions and static_v ", o.static_v().size(2), "; expected the same");
}

// Appends `n` columns to the last dim of a mask: allowed (false / 0) in MultiheadAttention's
// convention, for the keys that add_bias_kv and add_zero_attn append.
torch::Tensor pad_columns(const torch::Tensor& mask, int64_t n) {
  if (!mask.defined() || n == 0) {
    return mask;
  }
  auto shape = mask.sizes().vec();
  shape.back() = n;
  return torch::cat({mask, torch::zeros(shape, mask.options())}, -1);
}

/// The score of every head: q [B, H, L, hd], k and v [B, H, S', hd] -> (out [B, H, L, hd], weights)
std::tuple<torch::Tensor, torch::Tensor> score_heads(
    const Options& o, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, const torch::Tensor& kpm) {
  const double p = o.training() ? o.dropout_p() : 0.0;
  auto masked = [&](auto func_options) {
    return detail::with_masks(func_options, mask, kpm, /*is_causal=*/false, p, o.need_weights());
  };
  if (o.flex().has_value()) {
    TORCH_CHECK(
        o.score() == AttentionScore::ScaledDotProduct, fn,
        ": flex modifiers need the scaled dot-product score");
    TORCH_CHECK(
        p == 0.0, fn, ": dropout ", p,
        " with flex modifiers, expected 0 (flex_attention does not fuse dropout; train with "
        "dropout 0 or call eval())");
    auto f = *o.flex();
    TORCH_CHECK(
        !f.attn_mask().defined() && !f.enable_gqa(), fn,
        ": flex holds an attn_mask or enable_gqa, expected neither (give masks to forward)");
    const detail::MaskArgs masks{mask, kpm, false, 0.0, false};
    auto r = flex_attention(
        q, k, v, f.attn_mask(detail::combined_mask(masks, 4)).need_weights(o.need_weights()));
    return {r.output, r.weights};
  }
  switch (o.score()) {
    case AttentionScore::DotProduct:
      return dot_product_attention(q, k, v, masked(DotProductAttentionFuncOptions()));
    case AttentionScore::Cosine:
      TORCH_CHECK(
          o.logit_scale().defined(), fn, ": the Cosine score needs logit_scale [", o.num_heads(),
          ", 1, 1]");
      return cosine_attention(
          q, k, v,
          masked(CosineAttentionFuncOptions().temperature(
              detail::temperature_from_log(o.logit_scale(), kMaxCosineTemperature))));
    case AttentionScore::ScaledDotProduct:
      break;
  }
  return scaled_dot_product_attention(q, k, v, masked(ScaledDotProductAttentionFuncOptions()));
}

/// Appends bias_k/bias_v and the zero key, converts the masks to the functionals' convention,
/// attends per head and projects out: q [B, H, L, hd], k/v [B, H, S, hd] -> (out [B, L, E],
/// weights)
std::tuple<torch::Tensor, torch::Tensor> attend_heads(
    const Options& o, const torch::Tensor& q, torch::Tensor k, torch::Tensor v, torch::Tensor mask,
    torch::Tensor kpm) {
  const int64_t b = q.size(0), h = o.num_heads(), l = q.size(2), hd = q.size(3);
  int64_t extra = 0;
  if (o.bias_k().defined()) {
    // bias_k [1, 1, E] is one more key, seen per head.
    auto per_head = [&](const torch::Tensor& t) {
      return t.view({1, 1, h, hd}).transpose(1, 2).expand({b, h, 1, hd});
    };
    k = torch::cat({k, per_head(o.bias_k())}, 2);
    v = torch::cat({v, per_head(o.bias_v())}, 2);
    ++extra;
  }
  if (o.add_zero_attn()) {
    k = torch::cat({k, torch::zeros({b, h, 1, hd}, k.options())}, 2);
    v = torch::cat({v, torch::zeros({b, h, 1, hd}, v.options())}, 2);
    ++extra;
  }
  mask = pad_columns(mask, extra);
  kpm = pad_columns(kpm, extra);
  // To the functionals' convention: bool true = may attend.
  if (mask.defined() && mask.scalar_type() == torch::kBool) {
    mask = mask.logical_not();
  }
  auto [out, weights] = score_heads(o, q, k, v, mask, kpm);
  out = detail::linear(
      out.transpose(1, 2).reshape({b, l, h * hd}), o.out_proj_weight(), o.out_proj_bias());
  if (weights.defined() && o.average_attn_weights()) {
    weights = weights.mean(1);
  }
  return {out, weights};
}

} // namespace

torch::Tensor project_heads(
    const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
    int64_t num_heads) {
  // x [B, L, E_in] -> [B, H, L, E / H]
  return detail::linear(x, weight, bias)
      .view({x.size(0), x.size(1), num_heads, weight.size(0) / num_heads})
      .transpose(1, 2);
}

std::tuple<torch::Tensor, torch::Tensor> multi_head_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const MultiheadAttentionForwardFuncOptions& options) {
  // batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
  const auto& o = options;
  const bool static_kv = o.static_k().defined() || o.static_v().defined();
  check_mha_inputs(query, key, value, o, static_kv);
  const int64_t e = o.embed_dim_to_check(), h = o.num_heads();
  const auto proj = check_parameters(o, e, key.size(-1), value.size(-1), static_kv);
  const bool batched = query.dim() == 3;
  // Everything below is batch-first: [B, L, E].
  auto to_bf = [&](const torch::Tensor& t) {
    if (!batched)
      return t.unsqueeze(0);
    return o.batch_first() ? t : t.transpose(0, 1);
  };
  auto q_in = to_bf(query);
  const int64_t b = q_in.size(0), l = q_in.size(1);
  torch::Tensor q, k, v;
  if (static_kv) {
    check_static(o, b, e);
    q = project_heads(q_in, proj.weight[0], proj.bias[0], h);
    k = o.static_k(), v = o.static_v();
  } else {
    auto k_in = to_bf(key), v_in = to_bf(value);
    TORCH_CHECK(
        k_in.sizes().slice(0, 2) == v_in.sizes().slice(0, 2), fn, ": key ", shape_str(key.sizes()),
        " and value ", shape_str(value.sizes()), " must agree in batch and sequence length");
    TORCH_CHECK(
        k_in.size(0) == b, fn, ": key has batch ", k_in.size(0), " (shape ", shape_str(key.sizes()),
        "), expected ", b, " like query ", shape_str(query.sizes()));
    if (!o.use_separate_proj_weight() && query.is_same(key) && key.is_same(value)) {
      // Self-attention: one [3E, E] matmul instead of three, as PyTorch does.
      auto qkv = detail::linear(q_in, o.in_proj_weight(), o.in_proj_bias())
                     .view({b, l, 3, h, e / h})
                     .permute({2, 0, 3, 1, 4});
      q = qkv[0], k = qkv[1], v = qkv[2];
    } else {
      q = project_heads(q_in, proj.weight[0], proj.bias[0], h);
      k = project_heads(k_in, proj.weight[1], proj.bias[1], h);
      v = project_heads(v_in, proj.weight[2], proj.bias[2], h);
    }
  }
  auto [mask, kpm] = prepare_masks(o, query, b, l, k.size(2), batched);
  auto [out, weights] = attend_heads(o, q, k, v, mask, kpm);
  if (!batched) {
    out = out.squeeze(0);
    if (weights.defined())
      weights = weights.squeeze(0);
  } else if (!o.batch_first()) {
    out = out.transpose(0, 1);
  }
  return {out, weights};
}

} // namespace torchattn::nn::functional
