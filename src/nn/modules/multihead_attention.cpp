#include <torchattn/nn/modules/multihead_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

namespace {

constexpr const char* kName = "torchattn::nn::MultiheadAttention";
constexpr double kInf = std::numeric_limits<double>::infinity();
// Swin Transformer V2's clamp on learned cosine temperatures.
constexpr double kMaxCosineTemperature = 100.0;

const char* score_name(AttentionScore s) {
  switch (s) {
    case AttentionScore::ScaledDotProduct:
      return "ScaledDotProduct";
    case AttentionScore::DotProduct:
      return "DotProduct";
    case AttentionScore::Cosine:
      return "Cosine";
  }
  return "?";
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

} // namespace

MultiheadAttentionImpl::MultiheadAttentionImpl(const MultiheadAttentionOptions& options_)
    : options(options_) {
  reset();
}

void MultiheadAttentionImpl::reset() {
  const int64_t e = options.embed_dim(), h = options.num_heads();
  TORCH_CHECK(e > 0, kName, ": embed_dim is ", e, ", expected > 0");
  TORCH_CHECK(h > 0, kName, ": num_heads is ", h, ", expected > 0");
  TORCH_CHECK(
      e % h == 0, kName, ": embed_dim (", e, ") must be divisible by num_heads (", h, ")");
  TORCH_CHECK(options.kdim() > 0, kName, ": kdim is ", options.kdim(), ", expected > 0");
  TORCH_CHECK(options.vdim() > 0, kName, ": vdim is ", options.vdim(), ", expected > 0");
  detail::check_dropout_option("MultiheadAttention", options.dropout());
  head_dim_ = e / h;
  same_embed_dim_ = options.kdim() == e && options.vdim() == e;

  if (same_embed_dim_) {
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * e, e}));
    q_proj_weight = k_proj_weight = v_proj_weight = torch::Tensor();
  } else {
    q_proj_weight = register_parameter("q_proj_weight", torch::empty({e, e}));
    k_proj_weight = register_parameter("k_proj_weight", torch::empty({e, options.kdim()}));
    v_proj_weight = register_parameter("v_proj_weight", torch::empty({e, options.vdim()}));
    in_proj_weight = torch::Tensor();
  }
  in_proj_bias = options.bias() ? register_parameter("in_proj_bias", torch::empty({3 * e}))
                                : torch::Tensor();
  out_proj = register_module(
      "out_proj", torch::nn::Linear(torch::nn::LinearOptions(e, e).bias(options.bias())));
  if (options.add_bias_kv()) {
    bias_k = register_parameter("bias_k", torch::empty({1, 1, e}));
    bias_v = register_parameter("bias_v", torch::empty({1, 1, e}));
  } else {
    bias_k = bias_v = torch::Tensor();
  }
  logit_scale = options.score() == AttentionScore::Cosine
      ? register_parameter("logit_scale", torch::empty({h, 1, 1}))
      : torch::Tensor();
  reset_parameters();
}

void MultiheadAttentionImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  if (same_embed_dim_) {
    torch::nn::init::xavier_uniform_(in_proj_weight);
  } else {
    torch::nn::init::xavier_uniform_(q_proj_weight);
    torch::nn::init::xavier_uniform_(k_proj_weight);
    torch::nn::init::xavier_uniform_(v_proj_weight);
  }
  if (in_proj_bias.defined()) {
    in_proj_bias.zero_();
    out_proj->bias.zero_();
  }
  if (bias_k.defined()) {
    torch::nn::init::xavier_normal_(bias_k);
    torch::nn::init::xavier_normal_(bias_v);
  }
  if (logit_scale.defined()) {
    logit_scale.fill_(std::log(10.0));
  }
}

void MultiheadAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchattn::nn::MultiheadAttention(embed_dim=" << options.embed_dim()
         << ", num_heads=" << options.num_heads() << ", dropout=" << options.dropout()
         << ", bias=" << options.bias() << ", add_bias_kv=" << options.add_bias_kv()
         << ", add_zero_attn=" << options.add_zero_attn() << ", kdim=" << options.kdim()
         << ", vdim=" << options.vdim() << ", batch_first=" << options.batch_first()
         << ", score=" << score_name(options.score()) << ")";
}

std::tuple<torch::Tensor, torch::Tensor> MultiheadAttentionImpl::forward(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& key_padding_mask,
    bool need_weights,
    const torch::Tensor& attn_mask,
    bool average_attn_weights,
    bool is_causal) {
  // batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
  constexpr const char* fn = "MultiheadAttention";
  using detail::shape_str;
  const int64_t e = options.embed_dim(), h = options.num_heads();
  TORCH_CHECK(query.defined() && key.defined() && value.defined(), fn, ": query, key and value must be defined");
  TORCH_CHECK(
      query.dim() == 2 || query.dim() == 3, fn, ": query has ", query.dim(), " dims ",
      shape_str(query.sizes()), ", expected 3 ", options.batch_first() ? "[B, L, E]" : "[L, B, E]",
      " or 2 [L, E] (unbatched)");
  const bool batched = query.dim() == 3;
  TORCH_CHECK(
      key.dim() == query.dim() && value.dim() == query.dim(), fn, ": key ", shape_str(key.sizes()),
      " and value ", shape_str(value.sizes()), " must have as many dims as query ",
      shape_str(query.sizes()));
  TORCH_CHECK(
      query.size(-1) == e, fn, ": query has ", query.size(-1), " features (shape ",
      shape_str(query.sizes()), "), expected embed_dim ", e);
  TORCH_CHECK(
      key.size(-1) == options.kdim(), fn, ": key has ", key.size(-1), " features (shape ",
      shape_str(key.sizes()), "), expected kdim ", options.kdim());
  TORCH_CHECK(
      value.size(-1) == options.vdim(), fn, ": value has ", value.size(-1), " features (shape ",
      shape_str(value.sizes()), "), expected vdim ", options.vdim());

  // Everything below is batch-first: [B, L, E].
  auto to_bf = [&](const torch::Tensor& t) {
    if (!batched) return t.unsqueeze(0);
    return options.batch_first() ? t : t.transpose(0, 1);
  };
  auto q_in = to_bf(query), k_in = to_bf(key), v_in = to_bf(value);
  const int64_t b = q_in.size(0), l = q_in.size(1), s = k_in.size(1);
  TORCH_CHECK(
      k_in.sizes().slice(0, 2) == v_in.sizes().slice(0, 2), fn, ": key ", shape_str(key.sizes()),
      " and value ", shape_str(value.sizes()), " must agree in batch and sequence length");
  TORCH_CHECK(
      k_in.size(0) == b, fn, ": key has batch ", k_in.size(0), " (shape ", shape_str(key.sizes()),
      "), expected ", b, " like query ", shape_str(query.sizes()));
  for (const auto* t : {&key, &value}) {
    TORCH_CHECK(
        t->scalar_type() == query.scalar_type() && t->device() == query.device(), fn,
        ": key and value must have the dtype and device of query (", query.scalar_type(), ", ",
        query.device(), ")");
  }
  detail::check_like_parameters(fn, "query", query, out_proj->weight);

  // Masks in MultiheadAttention's convention (bool true = masked), shaped for [B, H, L, S].
  torch::Tensor mask = attn_mask;
  if (mask.defined()) {
    detail::check_mask_dtype(fn, "attn_mask", mask, query);
    const bool ok2 = mask.dim() == 2 && mask.size(0) == l && mask.size(1) == s;
    const bool ok3 = mask.dim() == 3 && mask.size(0) == b * h && mask.size(1) == l && mask.size(2) == s;
    TORCH_CHECK(
        ok2 || ok3, fn, ": attn_mask has shape ", shape_str(mask.sizes()), ", expected [", l, ", ",
        s, "] [L, S] or [", b * h, ", ", l, ", ", s, "] [", batched ? "B*num_heads" : "num_heads",
        ", L, S]");
    if (ok3) {
      mask = mask.view({b, h, l, s});
    }
  }
  torch::Tensor kpm = key_padding_mask;
  if (kpm.defined()) {
    detail::check_mask_dtype(fn, "key_padding_mask", kpm, query);
    const bool ok = batched ? (kpm.dim() == 2 && kpm.size(0) == b && kpm.size(1) == s)
                            : (kpm.dim() == 1 && kpm.size(0) == s);
    TORCH_CHECK(
        ok, fn, ": key_padding_mask has shape ", shape_str(kpm.sizes()), ", expected ",
        batched ? shape_str({b, s}) + " [B, S]" : shape_str({s}) + " [S]");
    if (!batched) kpm = kpm.unsqueeze(0);
  }
  if (is_causal) {
    auto causal = detail::causal_masked(l, s, /*offset=*/0, query.options());
    if (!mask.defined()) {
      mask = causal;
    } else if (mask.scalar_type() == torch::kBool) {
      mask = mask.logical_or(causal);
    } else {
      mask = mask.masked_fill(causal, -kInf);
    }
  }

  torch::Tensor q, k, v;
  if (same_embed_dim_ && query.is_same(key) && key.is_same(value)) {
    // Self-attention: one [3E, E] matmul instead of three, as PyTorch does.
    auto qkv = torch::linear(q_in, in_proj_weight, in_proj_bias)
                   .view({b, l, 3, h, head_dim_})
                   .permute({2, 0, 3, 1, 4});
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = project(q_in, 0), k = project(k_in, 1), v = project(v_in, 2);
  }
  auto [out, weights] = attend(q, k, v, mask, kpm, need_weights, average_attn_weights);
  if (!batched) {
    out = out.squeeze(0);
    if (weights.defined()) weights = weights.squeeze(0);
  } else if (!options.batch_first()) {
    out = out.transpose(0, 1);
  }
  return {out, weights};
}

torch::Tensor MultiheadAttentionImpl::project(const torch::Tensor& x, int i) const {
  // x [B, L, E_i] -> [B, H, L, head_dim]
  torch::Tensor w, b;
  if (same_embed_dim_) {
    w = in_proj_weight.chunk(3)[i];
  } else {
    w = i == 0 ? q_proj_weight : i == 1 ? k_proj_weight : v_proj_weight;
  }
  if (in_proj_bias.defined()) {
    b = in_proj_bias.chunk(3)[i];
  }
  return torch::linear(x, w, b)
      .view({x.size(0), x.size(1), options.num_heads(), head_dim_})
      .transpose(1, 2);
}

std::tuple<torch::Tensor, torch::Tensor> MultiheadAttentionImpl::attend(
    const torch::Tensor& q,
    torch::Tensor k,
    torch::Tensor v,
    torch::Tensor mask,
    torch::Tensor kpm,
    bool need_weights,
    bool average_attn_weights) {
  // q [B, H, L, hd], k/v [B, H, S, hd] -> out [B, L, E], weights [B, (H,) L, S']
  const int64_t b = q.size(0), h = options.num_heads(), l = q.size(2), e = options.embed_dim();
  int64_t extra = 0;
  if (bias_k.defined()) {
    // bias_k [1, 1, E] is one more key, seen per head.
    auto per_head = [&](const torch::Tensor& t) {
      return t.view({1, 1, h, head_dim_}).transpose(1, 2).expand({b, h, 1, head_dim_});
    };
    k = torch::cat({k, per_head(bias_k)}, 2);
    v = torch::cat({v, per_head(bias_v)}, 2);
    ++extra;
  }
  if (options.add_zero_attn()) {
    k = torch::cat({k, torch::zeros({b, h, 1, head_dim_}, k.options())}, 2);
    v = torch::cat({v, torch::zeros({b, h, 1, head_dim_}, v.options())}, 2);
    ++extra;
  }
  mask = pad_columns(mask, extra);
  kpm = pad_columns(kpm, extra);
  // To the functional's convention: bool true = may attend.
  if (mask.defined() && mask.scalar_type() == torch::kBool) {
    mask = mask.logical_not();
  }

  const double p = is_training() ? options.dropout() : 0.0;
  torch::Tensor out, weights;
  auto masked = [&](auto func_options) {
    return detail::with_masks(func_options, mask, kpm, /*is_causal=*/false, p, need_weights);
  };
  switch (options.score()) {
    case AttentionScore::ScaledDotProduct:
      std::tie(out, weights) =
          F::scaled_dot_product_attention(q, k, v, masked(F::ScaledDotProductAttentionFuncOptions()));
      break;
    case AttentionScore::DotProduct:
      std::tie(out, weights) = F::dot_product_attention(q, k, v, masked(F::DotProductAttentionFuncOptions()));
      break;
    case AttentionScore::Cosine:
      std::tie(out, weights) = F::cosine_attention(
          q, k, v,
          masked(F::CosineAttentionFuncOptions().temperature(
              detail::temperature_from_log(logit_scale, kMaxCosineTemperature))));
      break;
  }
  out = out_proj(out.transpose(1, 2).reshape({b, l, e}));
  if (weights.defined() && average_attn_weights) {
    weights = weights.mean(1);
  }
  return {out, weights};
}

MultiheadAttentionCache MultiheadAttentionImpl::project_memory(
    const torch::Tensor& key, const torch::Tensor& value) {
  constexpr const char* fn = "MultiheadAttention::project_memory";
  TORCH_CHECK(
      key.defined() && value.defined() && key.dim() == 3 && value.dim() == 3 &&
          key.size(-1) == options.kdim() && value.size(-1) == options.vdim() &&
          key.sizes().slice(0, 2) == value.sizes().slice(0, 2),
      fn, ": expected key [", options.batch_first() ? "B, S" : "S, B", ", ", options.kdim(),
      "] and value [", options.batch_first() ? "B, S" : "S, B", ", ", options.vdim(), "], got ",
      key.defined() ? detail::shape_str(key.sizes()) : "undefined", " and ",
      value.defined() ? detail::shape_str(value.sizes()) : "undefined");
  detail::check_like_parameters(fn, "key", key, out_proj->weight);
  detail::check_like_parameters(fn, "value", value, out_proj->weight);
  auto bf = [&](const torch::Tensor& t) { return options.batch_first() ? t : t.transpose(0, 1); };
  return {project(bf(key), 1), project(bf(value), 2), /*is_static=*/true};
}

void MultiheadAttentionImpl::check_cache(
    const char* fn, const MultiheadAttentionCache& cache, const torch::Tensor& query) const {
  // key [B, num_heads, S, head_dim], value [B, num_heads, S, head_dim], as project_memory and
  // earlier steps of this module make them.
  using detail::shape_str;
  const auto& k = cache.key;
  const auto& v = cache.value;
  TORCH_CHECK(
      k.defined() == v.defined(), fn, ": the cache has ", k.defined() ? "a key" : "a value",
      " but no ", k.defined() ? "value" : "key", "; expected both (from project_memory or an "
      "earlier step) or neither (an empty cache)");
  TORCH_CHECK(
      k.defined() || !cache.is_static, fn,
      ": the static cache is empty; make it with project_memory");
  if (!k.defined()) {
    return;
  }
  const int64_t h = options.num_heads();
  const auto b = options.batch_first() ? query.size(0) : query.size(1);
  for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor&>{"cache.key", k},
                                {"cache.value", v}}) {
    TORCH_CHECK(
        t.dim() == 4 && t.size(1) == h && t.size(3) == head_dim_, fn, ": ", name, " has shape ",
        shape_str(t.sizes()), ", expected [B, ", h, ", S, ", head_dim_,
        "] [B, num_heads, S, head_dim] as this module's project_memory or forward_step makes it");
    TORCH_CHECK(
        t.size(0) == b, fn, ": ", name, " holds batch ", t.size(0), " (shape ",
        shape_str(t.sizes()), "), the query has batch ", b);
    detail::check_like_parameters(fn, name, t, out_proj->weight);
  }
  TORCH_CHECK(
      k.size(2) == v.size(2), fn, ": cache.key holds ", k.size(2), " positions and cache.value ",
      v.size(2), "; expected the same");
}

std::tuple<torch::Tensor, torch::Tensor> MultiheadAttentionImpl::forward_step(
    const torch::Tensor& query,
    MultiheadAttentionCache& cache,
    const torch::Tensor& key_padding_mask,
    bool need_weights,
    bool average_attn_weights) {
  // query [B, T, E] (batch_first) or [T, B, E] -> out in the same layout
  constexpr const char* fn = "MultiheadAttention::forward_step";
  TORCH_CHECK(
      query.defined() && query.dim() == 3 && query.size(-1) == options.embed_dim(), fn,
      ": query has shape ", query.defined() ? detail::shape_str(query.sizes()) : "undefined",
      ", expected ", options.batch_first() ? "[B, T, " : "[T, B, ", options.embed_dim(), "]");
  TORCH_CHECK(
      cache.is_static || (options.kdim() == options.embed_dim() && options.vdim() == options.embed_dim()),
      fn, ": self-attention steps need kdim == vdim == embed_dim; for cross-attention pass a "
      "cache from project_memory");
  detail::check_like_parameters(fn, "query", query, out_proj->weight);
  check_cache(fn, cache, query);
  auto x = options.batch_first() ? query : query.transpose(0, 1);
  const int64_t b = x.size(0), t = x.size(1);
  torch::Tensor mask;
  if (!cache.is_static) {
    auto k = project(x, 1), v = project(x, 2);
    const int64_t past = cache.size();
    cache.key = past == 0 ? k : torch::cat({cache.key, k}, 2);
    cache.value = past == 0 ? v : torch::cat({cache.value, v}, 2);
    // Step query i sits at position past + i and may not see later positions.
    mask = detail::causal_masked(t, past + t, /*offset=*/past, x.options());
  }
  TORCH_CHECK(cache.size() > 0, fn, ": the cache is empty; use project_memory for cross-attention");
  torch::Tensor kpm = key_padding_mask;
  if (kpm.defined()) {
    TORCH_CHECK(
        kpm.dim() == 2 && kpm.size(0) == b && kpm.size(1) == cache.size(), fn,
        ": key_padding_mask has shape ", detail::shape_str(kpm.sizes()), ", expected [", b, ", ",
        cache.size(), "] [B, cached positions]");
  }
  auto [out, weights] =
      attend(project(x, 0), cache.key, cache.value, mask, kpm, need_weights, average_attn_weights);
  return {options.batch_first() ? out : out.transpose(0, 1), weights};
}

} // namespace torchattn::nn
