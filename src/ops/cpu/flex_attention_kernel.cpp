// CPU kernels of _flex_attention_forward and _backward: checks, then the vector build of the
// fused kernel (ops/cpu/flash_attention/) with the modifiers. Inputs with no elements are
// computed by the math path, where the kernels' data pointers would be null.

#include <torchattn/ops/flex_attention.h>

#include "detail/checks.h"
#include "detail/flex_args.h"
#include "ops/cpu/flash_attention/kernel.h"
#include "ops/flex_attention_params.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <limits>

namespace torchattn::ops {

namespace {

using torchattn::detail::CheckedFlex;
using torchattn::detail::FlexArgs;
using Tensors3 = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>;
using Tensors6 = std::tuple<
    torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>;
constexpr double kInf = std::numeric_limits<double>::infinity();

bool any_empty(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  return q.numel() == 0 || k.numel() == 0 || v.numel() == 0;
}

cpu::FlashArgs flash_args(const FlexArgs& a, const CheckedFlex& c) {
  cpu::FlashArgs f;
  f.scale = c.scale;
  cpu::FlexMods& m = f.mods;
  m.causal = static_cast<cpu::Causal>(c.causal);
  m.window_left = a.window_left;
  m.window_right = a.window_right;
  m.q_doc = c.q_doc;
  m.kv_doc = c.kv_doc;
  m.prefix = c.prefix;
  m.block_kinds = a.block_kinds;
  m.block_index = a.block_index;
  m.block_masks = a.block_masks;
  m.softcap = a.softcap;
  m.bias = c.bias4d;
  if (a.alibi_slopes.defined()) {
    m.alibi = a.alibi_slopes.contiguous();
  }
  if (a.position_bias.defined()) {
    m.table = a.position_bias.contiguous();
    m.buckets = a.position_buckets.contiguous();
  }
  return f;
}

/// The forward by the math path, for inputs with no elements: its lse as the statistics.
Tensors3 empty_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const FlexArgs& a, const CheckedFlex& c) {
  auto [out, lse, weights] = torchattn::detail::math_flex_attention(query, key, value, a, c);
  const auto dtype = torchattn::detail::stats_dtype(query.scalar_type());
  return {out.to(dtype), lse.to(dtype), lse.eq(-kInf).to(dtype) * -kInf};
}

Tensors3 forward_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, double scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  const auto a = TORCHATTN_FLEX_ARGS_VALUE;
  const auto c = torchattn::detail::check_flex_args(
      "torchattn::_flex_attention_forward", query, key, value, a, scale, /*enable_gqa=*/true);
  if (any_empty(query, key, value)) {
    return empty_forward(query, key, value, a, c);
  }
  // bfloat16 and float16 give their output in float32 (see _flex_attention_forward).
  const auto opts = query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type()));
  auto out = torch::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, opts);
  auto row_max = torch::empty({query.size(0), query.size(1), query.size(2)}, opts);
  auto row_log_sum = torch::empty_like(row_max);
  TORCHATTN_BF16_CAPABILITY_KERNEL(flash_attention_forward)
  (query, key, value, c.mask4d, flash_args(a, c), out, row_max, row_log_sum);
  return {out, row_max, row_log_sum};
}

/// The backward by autograd through the math path, for inputs with no elements.
Tensors6 empty_backward(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, FlexArgs a, const CheckedFlex& c) {
  torch::AutoGradMode grad_mode(true);
  auto leaf = [](const torch::Tensor& t) {
    return t.defined() ? t.detach().requires_grad_(true) : t;
  };
  auto q = leaf(query), k = leaf(key), v = leaf(value);
  a.bias = leaf(a.bias);
  a.position_bias = leaf(a.position_bias);
  a.alibi_slopes = leaf(a.alibi_slopes);
  CheckedFlex cc = c;
  if (a.bias.defined()) {
    std::vector<int64_t> shape(4 - a.bias.dim(), 1);
    shape.insert(shape.end(), a.bias.sizes().begin(), a.bias.sizes().end());
    cc.bias4d = a.bias.view(shape).expand(c.bias4d.sizes());
  }
  auto out = std::get<0>(torchattn::detail::math_flex_attention(q, k, v, a, cc));
  std::vector<torch::Tensor> inputs{q, k, v};
  for (const auto& t : {a.bias, a.position_bias, a.alibi_slopes}) {
    if (t.defined()) {
      inputs.push_back(t);
    }
  }
  auto g = torch::autograd::grad(
      {out}, inputs, {grad_out}, /*retain_graph=*/false,
      /*create_graph=*/false, /*allow_unused=*/true);
  auto zero_if_none = [](const torch::Tensor& grad, const torch::Tensor& like) {
    return grad.defined() ? grad : torch::zeros_like(like);
  };
  size_t next = 3;
  auto take = [&](const torch::Tensor& t) {
    return t.defined() ? zero_if_none(g[next++], t) : torch::Tensor();
  };
  auto gb = take(a.bias), gp = take(a.position_bias), ga = take(a.alibi_slopes);
  return {zero_if_none(g[0], q), zero_if_none(g[1], k), zero_if_none(g[2], v), gb, gp, ga};
}

Tensors6 backward_cpu(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, TORCHATTN_FLEX_PARAMS, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
    std::array<bool, 3> modifier_grads) {
  // grad_out [B, H, Lq, Ev] -> grad_query, grad_key, grad_value shaped as query, key, value;
  //   grad_bias shaped as bias, grad_position_bias [H, num_buckets], grad_alibi_slopes [H]
  const auto a = TORCHATTN_FLEX_ARGS_VALUE;
  const auto c = torchattn::detail::check_flex_backward_args(
      "torchattn::_flex_attention_backward", grad_out, query, key, value, a, out, row_max,
      row_log_sum, scale);
  if (any_empty(query, key, value)) {
    return empty_backward(grad_out, query, key, value, a, c);
  }
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), Lk = key.size(2);
  auto gq = torch::empty_like(query, torch::MemoryFormat::Contiguous);
  auto gk = torch::empty_like(key, torch::MemoryFormat::Contiguous);
  auto gv = torch::empty_like(value, torch::MemoryFormat::Contiguous);
  cpu::FlashGrads grads{gq, gk, gv, {}, {}};
  const bool want_bias = modifier_grads[0] && a.bias.defined();
  const bool want_table = modifier_grads[1] && a.position_bias.defined();
  const bool want_alibi = modifier_grads[2] && a.alibi_slopes.defined();
  if (want_bias) {
    grads.grad_bias = torch::zeros(
        {B, H, Lq, Lk}, query.options().dtype(torchattn::detail::stats_dtype(query.scalar_type())));
  }
  if (want_table || want_alibi) {
    grads.grad_diagonal = torch::zeros({B, H, Lq + Lk - 1}, query.options().dtype(torch::kDouble));
  }
  TORCHATTN_BF16_CAPABILITY_KERNEL(flash_attention_backward)
  (grad_out, query, key, value, c.mask4d, out, row_max, row_log_sum, flash_args(a, c), grads);
  torch::Tensor g_bias, g_table, g_alibi;
  if (want_bias) {
    g_bias = grads.grad_bias.sum_to_size(a.bias.sizes()).to(query.scalar_type());
  }
  if (want_table || want_alibi) {
    auto diag = grads.grad_diagonal.sum(0); // [H, Lq + Lk - 1], diagonal j - i = d at d + Lq - 1
    if (want_table) {
      g_table = torch::zeros_like(a.position_bias, torch::kDouble)
                    .index_add_(1, a.position_buckets, diag)
                    .to(query.scalar_type());
    }
    if (want_alibi) {
      auto d = torch::arange(-(Lq - 1), Lk, diag.options());
      g_alibi = (diag * d).sum(1).to(query.scalar_type());
    }
  }
  return {gq, gk, gv, g_bias, g_table, g_alibi};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("_flex_attention_forward", TORCH_FN(torchattn::ops::forward_cpu));
  m.impl("_flex_attention_backward", TORCH_FN(torchattn::ops::backward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(flex_attention_cpu_registered)
