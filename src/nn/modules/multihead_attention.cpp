#include <torchattn/nn/modules/multihead_attention.h>

#include <torchattn/nn/functional/multihead_attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

namespace {

constexpr const char* kName = "torchattn::nn::MultiheadAttention";

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

} // namespace

MultiheadAttentionImpl::MultiheadAttentionImpl(const MultiheadAttentionOptions& options_)
    : options(options_) {
  reset();
}

void MultiheadAttentionImpl::reset() {
  const int64_t e = options.embed_dim(), h = options.num_heads();
  TORCH_CHECK(e > 0, kName, ": embed_dim is ", e, ", expected > 0");
  TORCH_CHECK(h > 0, kName, ": num_heads is ", h, ", expected > 0");
  TORCH_CHECK(e % h == 0, kName, ": embed_dim (", e, ") must be divisible by num_heads (", h, ")");
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
  in_proj_bias =
      options.bias() ? register_parameter("in_proj_bias", torch::empty({3 * e})) : torch::Tensor();
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

functional::MultiheadAttentionForwardFuncOptions MultiheadAttentionImpl::func_options() const {
  auto o = F::MultiheadAttentionForwardFuncOptions(
               options.embed_dim(), options.num_heads(), in_proj_weight, in_proj_bias, bias_k,
               bias_v, options.add_zero_attn(), options.dropout(), out_proj->weight, out_proj->bias)
               .training(is_training())
               .batch_first(options.batch_first())
               .score(options.score())
               .logit_scale(logit_scale)
               .flex(options.flex());
  if (!same_embed_dim_) {
    o.use_separate_proj_weight(true)
        .q_proj_weight(q_proj_weight)
        .k_proj_weight(k_proj_weight)
        .v_proj_weight(v_proj_weight);
  }
  return o;
}

std::tuple<torch::Tensor, torch::Tensor> MultiheadAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& key_padding_mask, bool need_weights, const torch::Tensor& attn_mask,
    bool average_attn_weights, bool is_causal) {
  // batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
  return F::multi_head_attention_forward(
      query, key, value,
      func_options()
          .key_padding_mask(key_padding_mask)
          .need_weights(need_weights)
          .attn_mask(attn_mask)
          .average_attn_weights(average_attn_weights)
          .is_causal(is_causal));
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
  return F::project_heads(x, w, b, options.num_heads());
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
      " but no ", k.defined() ? "value" : "key",
      "; expected both (from project_memory or an "
      "earlier step) or neither (an empty cache)");
  TORCH_CHECK(
      k.defined() || !cache.is_static, fn,
      ": the static cache is empty; make it with project_memory");
  if (!k.defined()) {
    return;
  }
  const int64_t h = options.num_heads();
  const auto b = options.batch_first() ? query.size(0) : query.size(1);
  for (const auto& [name, t] :
       {std::pair<const char*, const torch::Tensor&>{"cache.key", k}, {"cache.value", v}}) {
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

bool MultiheadAttentionCache::views_buffer() const {
  return key.defined() && !buffer.empty() && buffer.max_length() == key.size(2) &&
         buffer.key().data_ptr() == key.data_ptr() && buffer.value().data_ptr() == value.data_ptr();
}

void MultiheadAttentionCache::reorder(const torch::Tensor& rows) {
  if (!key.defined()) {
    return;
  }
  if (is_static || !views_buffer()) {
    key = key.index_select(0, rows.to(key.device()));
    value = value.index_select(0, rows.to(value.device()));
    return;
  }
  buffer.reorder(rows);
  key = buffer.key();
  value = buffer.value();
}

std::tuple<torch::Tensor, torch::Tensor> MultiheadAttentionImpl::forward_step(
    const torch::Tensor& query, MultiheadAttentionCache& cache,
    const torch::Tensor& key_padding_mask, bool need_weights, bool average_attn_weights) {
  // query [B, T, E] (batch_first) or [T, B, E] -> out in the same layout
  constexpr const char* fn = "MultiheadAttention::forward_step";
  TORCH_CHECK(
      query.defined() && query.dim() == 3 && query.size(-1) == options.embed_dim(), fn,
      ": query has shape ", query.defined() ? detail::shape_str(query.sizes()) : "undefined",
      ", expected ", options.batch_first() ? "[B, T, " : "[T, B, ", options.embed_dim(), "]");
  TORCH_CHECK(
      cache.is_static ||
          (options.kdim() == options.embed_dim() && options.vdim() == options.embed_dim()),
      fn,
      ": self-attention steps need kdim == vdim == embed_dim; for cross-attention pass a "
      "cache from project_memory");
  detail::check_like_parameters(fn, "query", query, out_proj->weight);
  check_cache(fn, cache, query);
  auto x = options.batch_first() ? query : query.transpose(0, 1);
  const int64_t b = x.size(0), t = x.size(1);
  torch::Tensor mask;
  if (!cache.is_static) {
    auto k = project(x, 1), v = project(x, 2);
    const int64_t past = cache.size();
    auto& buffer = cache.buffer;
    if (torch::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad())) {
      // Differentiable steps: concatenate, so that gradients reach every earlier step.
      buffer.clear();
      cache.key = past == 0 ? k : torch::cat({cache.key, k}, 2);
      cache.value = past == 0 ? v : torch::cat({cache.value, v}, 2);
    } else {
      if (!cache.views_buffer()) { // a new cache, or key and value set by hand
        buffer.clear();
        if (past > 0) {
          buffer.append(cache.key, cache.value);
        }
      }
      buffer.append(k, v);
      cache.key = buffer.key();
      cache.value = buffer.value();
    }
    // Step query i sits at position past + i and may not see later positions. One query sees
    // them all: without a mask it goes to the decoding kernel.
    if (t > 1) {
      mask = detail::causal_masked(t, past + t, /*offset=*/past, x.options());
    }
  }
  TORCH_CHECK(cache.size() > 0, fn, ": the cache is empty; use project_memory for cross-attention");
  torch::Tensor kpm = key_padding_mask;
  if (kpm.defined()) {
    TORCH_CHECK(
        kpm.dim() == 2 && kpm.size(0) == b && kpm.size(1) == cache.size(), fn,
        ": key_padding_mask has shape ", detail::shape_str(kpm.sizes()), ", expected [", b, ", ",
        cache.size(), "] [B, cached positions]");
  }
  auto [out, weights] = F::multi_head_attention_forward(
      query, query, query,
      func_options()
          .static_k(cache.key)
          .static_v(cache.value)
          .attn_mask(mask)
          .key_padding_mask(kpm)
          .need_weights(need_weights)
          .average_attn_weights(average_attn_weights));
  return {out, weights};
}

} // namespace torchattn::nn
