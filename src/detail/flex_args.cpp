#include "detail/flex_args.h"
#include "detail/compat.h"

#include "detail/checks.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace torchattn::detail {

namespace {

torch::Tensor value_or_undefined(const OptTensor& t) {
  return t.has_value() ? *t : torch::Tensor();
}

bool is_integer(const torch::Tensor& t) {
  return !t.is_floating_point() && !t.is_complex() && t.scalar_type() != torch::kBool;
}

/// An integer tensor of shape [n] or [B, n] as int64 [B', n] (B' = 1 or B).
torch::Tensor per_batch(
    const char* fn, const char* name, const torch::Tensor& t, int64_t B, int64_t n,
    const char* desc) {
  TORCH_CHECK(
      is_integer(t), fn, ": ", name, " has dtype ", t.scalar_type(), ", expected an integer dtype");
  const bool ok = (t.dim() == 1 && t.size(0) == n) ||
                  (t.dim() == 2 && t.size(1) == n && (t.size(0) == B || t.size(0) == 1));
  TORCH_CHECK(
      ok, fn, ": ", name, " has shape ", shape_str(t.sizes()), ", expected [", n, "] or [", B, ", ",
      n, "] ", desc);
  return t.reshape({-1, n}).to(torch::kLong).contiguous();
}

void check_qkv(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, bool enable_gqa) {
  for (const auto& [name, t, layout] :
       {std::tuple<const char*, const torch::Tensor&, const char*>{"query", query, "[B, H, Lq, E]"},
        {"key", key, "[B, H_kv, Lk, E]"},
        {"value", value, "[B, H_kv, Lk, Ev]"}}) {
    TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected a 4-D tensor ", layout);
    TORCH_CHECK(
        t.dim() == 4, fn, ": ", name, " has ", t.dim(), " dims ", shape_str(t.sizes()),
        ", expected 4 ", layout);
    check_fused_dtype(fn, name, t);
    check_like(fn, name, t, query);
  }
  const int64_t B = query.size(0), H = query.size(1), E = query.size(3), Hkv = key.size(1);
  TORCH_CHECK(
      key.size(0) == B && key.size(3) == E, fn, ": key has shape ", shape_str(key.sizes()),
      ", expected [", B, ", H_kv, Lk, ", E, "] for query ", shape_str(query.sizes()));
  TORCH_CHECK(
      value.size(0) == B && value.size(1) == Hkv && value.size(2) == key.size(2), fn,
      ": value has shape ", shape_str(value.sizes()), ", expected [", B, ", ", Hkv, ", ",
      key.size(2), ", Ev] for key ", shape_str(key.sizes()));
  if (Hkv != H) {
    TORCH_CHECK(
        enable_gqa && Hkv > 0 && H % Hkv == 0, fn, ": key has ", Hkv, " heads and query ", H,
        enable_gqa ? ", expected a number of kv heads that divides H"
                   : ", expected the same (pass enable_gqa=true for grouped-query attention)");
  }
}

/// An optional [B, H, Lq, Lk]-broadcastable tensor as a 4-D view, or undefined.
torch::Tensor as_4d(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query,
    const std::vector<int64_t>& scores, bool bool_allowed) {
  if (!t.defined()) {
    return t;
  }
  if (bool_allowed) {
    check_mask(fn, name, t, query, scores, "[B, H, Lq, Lk]");
  } else {
    check_like(fn, name, t, query);
    TORCH_CHECK(
        broadcastable(t.sizes(), scores), fn, ": ", name, " has shape ", shape_str(t.sizes()),
        ", expected a shape broadcastable to ", shape_str(scores), " [B, H, Lq, Lk]");
  }
  std::vector<int64_t> shape(4 - t.dim(), 1);
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  return t.view(shape).expand(scores);
}

void check_block_mask(
    const char* fn, const FlexArgs& a, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
    bool read_values) {
  const int defined = a.block_kinds.defined() + a.block_index.defined() + a.block_masks.defined();
  TORCH_CHECK(
      defined == 0 || defined == 3, fn,
      ": block_kinds, block_index and block_masks come together (a BlockMask), got ", defined,
      " of 3");
  if (defined == 0) {
    return;
  }
  const auto& m = a.block_masks;
  TORCH_CHECK(
      m.scalar_type() == torch::kBool && m.dim() == 3 && m.size(1) == m.size(2) && m.size(1) > 0 &&
          m.is_contiguous(),
      fn, ": block_masks has shape ", shape_str(m.sizes()), " and dtype ", m.scalar_type(),
      ", expected a contiguous Bool [P, S, S] (S the block size)");
  const int64_t S = m.size(1);
  const int64_t nqb = (Lq + S - 1) / S, nkb = (Lk + S - 1) / S;
  const auto& k = a.block_kinds;
  TORCH_CHECK(
      k.scalar_type() == torch::kByte && k.dim() == 4 && (k.size(0) == 1 || k.size(0) == B) &&
          (k.size(1) == 1 || k.size(1) == H) && k.size(2) == nqb && k.size(3) == nkb &&
          k.is_contiguous(),
      fn, ": block_kinds has shape ", shape_str(k.sizes()), " and dtype ", k.scalar_type(),
      ", expected a contiguous Byte [", B, " or 1, ", H, " or 1, ", nqb, ", ", nkb,
      "] for blocks of ", S, " (from block_masks)");
  TORCH_CHECK(
      a.block_index.scalar_type() == torch::kLong && a.block_index.sizes() == k.sizes() &&
          a.block_index.is_contiguous(),
      fn, ": block_index has shape ", shape_str(a.block_index.sizes()), " and dtype ",
      a.block_index.scalar_type(), ", expected a contiguous Long ", shape_str(k.sizes()));
  if (!read_values) {
    return;
  }
  TORCH_CHECK(
      k.le(2).all().item<bool>(), fn,
      ": block_kinds has a value above 2, expected 0 (empty), 1 (partial) or 2 (full)");
  const auto partial = k.eq(1);
  const auto idx = a.block_index.masked_select(partial);
  TORCH_CHECK(
      idx.numel() == 0 || (idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < m.size(0)),
      fn, ": block_index of a partial block is outside [0, ", m.size(0), ") of block_masks");
}

} // namespace

FlexArgs FlexArgs::from(
    const OptTensor& attn_mask, const OptTensor& bias, const std::string& causal,
    int64_t window_left, int64_t window_right, const OptTensor& q_doc_ids,
    const OptTensor& kv_doc_ids, const OptTensor& prefix_lengths, const OptTensor& block_kinds,
    const OptTensor& block_index, const OptTensor& block_masks, double softcap,
    const OptTensor& alibi_slopes, const OptTensor& position_bias,
    const OptTensor& position_buckets) {
  FlexArgs a;
  a.attn_mask = value_or_undefined(attn_mask);
  a.bias = value_or_undefined(bias);
  a.causal = causal;
  a.window_left = window_left;
  a.window_right = window_right;
  a.q_doc_ids = value_or_undefined(q_doc_ids);
  a.kv_doc_ids = value_or_undefined(kv_doc_ids);
  a.prefix_lengths = value_or_undefined(prefix_lengths);
  a.block_kinds = value_or_undefined(block_kinds);
  a.block_index = value_or_undefined(block_index);
  a.block_masks = value_or_undefined(block_masks);
  a.softcap = softcap;
  a.alibi_slopes = value_or_undefined(alibi_slopes);
  a.position_bias = value_or_undefined(position_bias);
  a.position_buckets = value_or_undefined(position_buckets);
  return a;
}

CheckedFlex check_flex_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const FlexArgs& a, c10::optional<double> scale, bool enable_gqa,
    bool read_values) {
  check_qkv(fn, query, key, value, enable_gqa);
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), Lk = key.size(2);
  const std::vector<int64_t> scores{B, H, Lq, Lk};
  CheckedFlex c;
  c.scale = resolve_scale(fn, scale, query);
  c.mask4d = as_4d(fn, "attn_mask", a.attn_mask, query, scores, /*bool_allowed=*/true);
  c.bias4d = as_4d(fn, "bias", a.bias, query, scores, /*bool_allowed=*/false);
  TORCH_CHECK(
      a.causal == "none" || a.causal == "top_left" || a.causal == "bottom_right", fn,
      ": causal is \"", a.causal, "\", expected \"none\", \"top_left\" or \"bottom_right\"");
  c.causal = a.causal == "none" ? 0 : a.causal == "top_left" ? 1 : 2;
  for (const auto& [name, w] :
       {std::pair<const char*, int64_t>{"window_left", a.window_left},
        {"window_right", a.window_right}}) {
    TORCH_CHECK(w >= -1, fn, ": ", name, " is ", w, ", expected -1 (unbounded) or a count >= 0");
  }
  TORCH_CHECK(
      a.q_doc_ids.defined() == a.kv_doc_ids.defined(), fn,
      ": q_doc_ids and kv_doc_ids come together, got only ",
      a.q_doc_ids.defined() ? "q_doc_ids" : "kv_doc_ids");
  if (a.q_doc_ids.defined()) {
    c.q_doc = per_batch(fn, "q_doc_ids", a.q_doc_ids, B, Lq, "[Lq] or [B, Lq]");
    c.kv_doc = per_batch(fn, "kv_doc_ids", a.kv_doc_ids, B, Lk, "[Lk] or [B, Lk]");
    TORCH_CHECK(
        c.q_doc.size(0) == c.kv_doc.size(0) || c.q_doc.size(0) == 1 || c.kv_doc.size(0) == 1, fn,
        ": q_doc_ids and kv_doc_ids have batch sizes ", c.q_doc.size(0), " and ", c.kv_doc.size(0),
        ", expected equal or 1");
  }
  if (a.prefix_lengths.defined()) {
    TORCH_CHECK(
        c.causal != 0, fn,
        ": prefix_lengths is given with causal \"none\", expected a causal mask for the keys "
        "after the prefix (prefix-LM)");
    const auto& p = a.prefix_lengths;
    TORCH_CHECK(
        is_integer(p) && p.dim() == 1 && (p.size(0) == B || p.size(0) == 1), fn,
        ": prefix_lengths has shape ", shape_str(p.sizes()), " and dtype ", p.scalar_type(),
        ", expected an integer [", B, "] or [1] [B]");
    c.prefix = p.to(torch::kLong).contiguous();
  }
  check_block_mask(fn, a, B, H, Lq, Lk, read_values);
  TORCH_CHECK(
      std::isfinite(a.softcap) && a.softcap >= 0, fn, ": softcap is ", a.softcap,
      ", expected 0 (none) or a finite cap > 0");
  if (a.alibi_slopes.defined()) {
    check_param(fn, "alibi_slopes", a.alibi_slopes, query, {H}, "[H]");
  }
  TORCH_CHECK(
      a.position_bias.defined() == a.position_buckets.defined(), fn,
      ": position_bias and position_buckets come together, got only ",
      a.position_bias.defined() ? "position_bias" : "position_buckets");
  if (a.position_bias.defined()) {
    const auto& t = a.position_bias;
    TORCH_CHECK(
        t.dim() == 2 && t.size(0) == H && t.size(1) > 0, fn, ": position_bias has shape ",
        shape_str(t.sizes()), ", expected [", H, ", num_buckets] [H, num_buckets]");
    check_like(fn, "position_bias", t, query);
    const auto& bk = a.position_buckets;
    TORCH_CHECK(
        bk.scalar_type() == torch::kLong && bk.dim() == 1 && bk.size(0) == Lq + Lk - 1, fn,
        ": position_buckets has shape ", shape_str(bk.sizes()), " and dtype ", bk.scalar_type(),
        ", expected Long [", Lq + Lk - 1,
        "] [Lq + Lk - 1] (the bucket of j - i at j - i + Lq - 1)");
    TORCH_CHECK(
        !read_values || bk.numel() == 0 ||
            (bk.min().item<int64_t>() >= 0 && bk.max().item<int64_t>() < t.size(1)),
        fn, ": position_buckets has a bucket outside [0, ", t.size(1), ") of position_bias");
  }
  return c;
}

CheckedFlex check_flex_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value, const FlexArgs& args,
    const torch::Tensor& output, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    double scale) {
  auto c = check_flex_args(fn, query, key, value, args, scale, /*enable_gqa=*/true);
  const std::vector<int64_t> out_shape{query.size(0), query.size(1), query.size(2), value.size(3)};
  check_output_like(fn, "grad_output", grad_output, query, out_shape);
  check_output_like(fn, "output", output, query, out_shape);
  check_softmax_stats_shape(fn, row_max, row_log_sum, query);
  return c;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Whether query rows `rows` may see each key: bool, broadcastable to [B, H, R, Lk].
torch::Tensor flex_allowed(
    const torch::Tensor& rows, int64_t Lq, int64_t Lk, const FlexArgs& a, const CheckedFlex& c) {
  const auto opts = rows.options();
  auto i = rows.view({-1, 1});                    // [R, 1]
  auto j = torch::arange(Lk, opts).view({1, -1}); // [1, Lk]
  auto diag = c.causal == 2 ? i + (Lk - Lq) : i;
  auto allowed = torch::ones({1, 1, rows.size(0), Lk}, opts.dtype(torch::kBool));
  if (c.causal != 0) {
    auto causal = j.le(diag).view({1, 1, rows.size(0), Lk});
    if (c.prefix.defined()) {
      causal = causal.logical_or(j.view({1, 1, 1, Lk}).lt(c.prefix.view({-1, 1, 1, 1})));
    }
    allowed = allowed.logical_and(causal);
  }
  if (a.window_left >= 0) {
    allowed = allowed.logical_and(j.ge(diag - a.window_left));
  }
  if (a.window_right >= 0) {
    allowed = allowed.logical_and(j.le(diag + a.window_right));
  }
  if (c.q_doc.defined()) {
    auto qd = c.q_doc.index_select(1, rows); // [B', R]
    allowed = allowed.logical_and(qd.unsqueeze(-1).eq(c.kv_doc.unsqueeze(1)).unsqueeze(1));
  }
  if (a.block_kinds.defined()) {
    const int64_t S = a.block_masks.size(1);
    auto qb = torch::div(rows, S, "floor"), kb = torch::div(torch::arange(Lk, opts), S, "floor");
    auto kinds = a.block_kinds.index_select(2, qb).index_select(3, kb); // [B', H', R, Lk]
    auto index = a.block_index.index_select(2, qb).index_select(3, kb);
    auto within = a.block_masks.size(0) == 0
                      ? torch::zeros_like(kinds, kinds.options().dtype(torch::kBool))
                      : a.block_masks.index(
                            {index.clamp_min(0), torch::remainder(rows, S).view({-1, 1}),
                             torch::remainder(torch::arange(Lk, opts), S).view({1, -1})});
    allowed = allowed.logical_and(kinds.eq(2).logical_or(kinds.eq(1).logical_and(within)));
  }
  return allowed;
}

} // namespace

torch::Tensor flex_scores(
    const torch::Tensor& query_rows, const torch::Tensor& rows, const torch::Tensor& key,
    int64_t Lq, const FlexArgs& a, const CheckedFlex& c) {
  // query_rows [B, H, R, E], key [B, H_kv, Lk, E] -> scores [B, H, R, Lk]
  const int64_t H = query_rows.size(1), Lk = key.size(2);
  auto k = key.size(1) == H ? key : key.repeat_interleave(H / key.size(1), 1);
  auto s = detail::matmul(query_rows * c.scale, k.transpose(-2, -1));
  if (a.softcap > 0) {
    s = detail::tanh(s / a.softcap) * a.softcap;
  }
  auto d = torch::arange(Lk, rows.options()).view({1, -1}) - rows.view({-1, 1}); // j - i
  if (a.alibi_slopes.defined()) {
    s = s + a.alibi_slopes.view({1, H, 1, 1}) * d.to(s.scalar_type());
  }
  if (a.position_bias.defined()) {
    auto bucket = a.position_buckets.index({d + (Lq - 1)}); // [R, Lk]
    s = s + a.position_bias.index({torch::indexing::Slice(), bucket}).unsqueeze(0);
  }
  if (c.bias4d.defined()) {
    s = s + c.bias4d.index_select(2, rows);
  }
  if (c.mask4d.defined()) {
    auto m = c.mask4d.index_select(2, rows);
    s = m.scalar_type() == torch::kBool ? s.masked_fill(m.logical_not(), -kInf) : s + m;
  }
  return s.masked_fill(flex_allowed(rows, Lq, Lk, a, c).logical_not(), -kInf);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> math_flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const FlexArgs& args, const CheckedFlex& checked) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> out [B, H, Lq, Ev], lse [B, H, Lq]
  const int64_t H = query.size(1), Lq = query.size(2);
  auto rows = torch::arange(Lq, query.options().dtype(torch::kLong));
  auto s = flex_scores(query, rows, key, Lq, args, checked);
  auto v = value.size(1) == H ? value : value.repeat_interleave(H / value.size(1), 1);
  // A row with every key masked would be softmax(-inf, ...) = NaN: it gets finite scores
  // before the softmax (its backward stays finite) and zero weights after.
  auto dead = s.eq(-kInf).all(-1, /*keepdim=*/true);
  auto safe = s.masked_fill(dead, 0.0);
  auto weights = detail::softmax(safe, -1).masked_fill(dead, 0.0);
  auto lse = detail::logsumexp(safe, -1, /*keepdim=*/true).masked_fill(dead, -kInf).squeeze(-1);
  return {detail::matmul(weights, v), lse, weights};
}

} // namespace torchattn::detail
