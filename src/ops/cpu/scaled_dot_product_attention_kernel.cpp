// CPU kernels of _scaled_dot_product_attention_forward and _backward: checks, then the vector
// build of the fused kernel (ops/cpu/flash_attention/) that the CPU runs. Inputs with no
// elements are computed by ATen, where the kernels' data pointers would be null.

#include <torchattn/ops/scaled_dot_product_attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"
#include "ops/cpu/flash_attention/kernel.h"
#include "ops/registration.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <limits>

namespace torchattn::ops {

namespace {

using Tensors3 = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>;
using torchattn::detail::stats_dtype;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

bool any_empty(std::initializer_list<torch::Tensor> tensors) {
  for (const auto& t : tensors) {
    if (t.numel() == 0) {
      return true;
    }
  }
  return false;
}

/// The masked, scaled scores [B, H, Lq, Lk] by the math path, for inputs with no elements.
torch::Tensor empty_scores(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& mask, bool is_causal,
    double scale) {
  const torch::Tensor no_padding;
  const torchattn::detail::MaskArgs masks{mask, no_padding, is_causal, 0.0, false};
  return torchattn::detail::mask_scores((query * scale).matmul(key.transpose(-2, -1)), masks);
}

/// The forward where some input has no elements (B, H, Lq, Lk, E or Ev is 0), by ATen, which
/// costs nothing at these sizes.
Tensors3 empty_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& mask, bool is_causal, double scale) {
  auto s = empty_scores(query, key, mask, is_causal, scale);
  auto row_max = s.size(3) == 0 ? torch::full(s.sizes().slice(0, 3), kNegInf, s.options())
                                : std::get<0>(s.max(-1));
  auto dead = row_max.eq(kNegInf);
  auto p = (s - row_max.masked_fill(dead, 0.0).unsqueeze(-1)).exp();
  auto sum = p.sum(-1);
  auto out = (p.matmul(value) / sum.masked_fill(dead, 1.0).unsqueeze(-1))
                 .masked_fill(dead.unsqueeze(-1), 0.0);
  return {out, row_max, sum.log().masked_fill(dead, kNegInf)};
}

/// The backward of empty_forward, from the same statistics.
Tensors3 empty_backward(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& mask, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, bool is_causal, double scale) {
  auto s = empty_scores(query, key, mask, is_causal, scale);
  auto dead = row_max.eq(kNegInf).unsqueeze(-1);
  auto p = (s - row_max.unsqueeze(-1) - row_log_sum.unsqueeze(-1)).exp().masked_fill(dead, 0.0);
  auto delta = (grad_out * out).sum(-1, /*keepdim=*/true);
  auto ds = p * (grad_out.matmul(value.transpose(-2, -1)) - delta);
  return {
      ds.matmul(key) * scale, ds.transpose(-2, -1).matmul(query) * scale,
      p.transpose(-2, -1).matmul(grad_out)};
}

/// Checks the softmax statistics that backward is given: the forward's shapes, and values the
/// forward can produce (a row's log Σ exp(s - max) is at least 0, as the max term alone is 1;
/// a fully masked row has both -inf). Anything else would give silently wrong gradients.
void check_softmax_stats(
    const char* fn, const torch::Tensor& row_max, const torch::Tensor& row_log_sum) {
  // One pass over the rows, no temporaries: this runs on every backward.
  AT_DISPATCH_FLOATING_TYPES(row_max.scalar_type(), "check_softmax_stats", [&] {
    const scalar_t* mx = row_max.data_ptr<scalar_t>();
    const scalar_t* ls = row_log_sum.data_ptr<scalar_t>();
    const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t i = 0; i < row_max.numel(); ++i) {
      const bool dead = mx[i] == ninf;
      if (dead != (ls[i] == ninf) || (!dead && ls[i] < 0)) {
        const int64_t lq = row_max.size(2), h = row_max.size(1);
        const std::vector<int64_t> index{i / (lq * h), i / lq % h, i % lq};
        TORCH_CHECK(
            false, fn, ": row_max ", mx[i], " and row_log_sum ", ls[i], " at ",
            torchattn::detail::shape_str(index),
            " are not softmax statistics of the forward op: expected row_log_sum >= 0, or both "
            "-inf on a row with no key to attend");
      }
    }
  });
}

Tensors3 forward_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, bool is_causal, double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  auto [mask, resolved] = torchattn::detail::check_sdpa_args(
      "torchattn::_scaled_dot_product_attention_forward", query, key, value, attn_mask,
      /*dropout_p=*/0.0, scale);
  if (any_empty({query, key, value})) {
    // In float32 for bfloat16 and float16 (LibTorch 1.x cannot multiply Half on the CPU).
    const auto f = [](const torch::Tensor& t) { return t.to(stats_dtype(t.scalar_type())); };
    auto [out, row_max, row_log_sum] = empty_forward(
        f(query), f(key), f(value), mask.is_floating_point() ? f(mask) : mask, is_causal, resolved);
    return {out, row_max, row_log_sum};
  }
  // bfloat16 and float16 give their output in float32, the kernel's accumulator unrounded
  // (see _scaled_dot_product_attention_forward).
  const auto opts = query.options().dtype(stats_dtype(query.scalar_type()));
  auto out = torch::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, opts);
  auto row_max = torch::empty({query.size(0), query.size(1), query.size(2)}, opts);
  auto row_log_sum = torch::empty_like(row_max);
  TORCHATTN_BF16_CAPABILITY_KERNEL(flash_attention_forward)
  (query, key, value, mask, cpu::plain_args(is_causal, resolved), out, row_max, row_log_sum);
  return {out, row_max, row_log_sum};
}

Tensors3 backward_cpu(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& out, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    bool is_causal, double scale) {
  // grad_out [B, H, Lq, Ev] -> grad_query, grad_key, grad_value shaped as query, key, value
  constexpr const char* fn = "torchattn::_scaled_dot_product_attention_backward";
  auto [mask, resolved] = torchattn::detail::check_sdpa_backward_args(
      fn, grad_out, query, key, value, attn_mask, out, row_max, row_log_sum, scale);
  check_softmax_stats(fn, row_max, row_log_sum);
  if (any_empty({query, key, value})) {
    const auto f = [](const torch::Tensor& t) { return t.to(stats_dtype(t.scalar_type())); };
    auto [gq, gk, gv] = empty_backward(
        f(grad_out), f(query), f(key), f(value), mask.is_floating_point() ? f(mask) : mask, f(out),
        row_max, row_log_sum, is_causal, resolved);
    const auto dtype = query.scalar_type();
    return {gq.to(dtype), gk.to(dtype), gv.to(dtype)};
  }
  auto gq = torch::empty_like(query, torch::MemoryFormat::Contiguous);
  auto gk = torch::empty_like(key, torch::MemoryFormat::Contiguous);
  auto gv = torch::empty_like(value, torch::MemoryFormat::Contiguous);
  cpu::FlashGrads grads{gq, gk, gv, {}, {}};
  TORCHATTN_BF16_CAPABILITY_KERNEL(flash_attention_backward)
  (grad_out, query, key, value, mask, out, row_max, row_log_sum,
   cpu::plain_args(is_causal, resolved), grads);
  return {gq, gk, gv};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("_scaled_dot_product_attention_forward", TORCH_FN(torchattn::ops::forward_cpu));
  m.impl("_scaled_dot_product_attention_backward", TORCH_FN(torchattn::ops::backward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(scaled_dot_product_attention_cpu_registered)
