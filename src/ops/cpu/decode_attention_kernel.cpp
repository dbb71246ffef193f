// CPU kernel of _decode_attention_forward: checks, then the vector build of the decoding
// kernel (ops/cpu/flash_decoding/) that the CPU runs.

#include <torchattn/ops/decode_attention.h>

#include "detail/decode_args.h"
#include "ops/cpu/flash_decoding/kernel.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <limits>

namespace torchattn::ops {

namespace {

/// t itself when its last dim is contiguous (the kernel reads any other strides), else a copy.
torch::Tensor unit_last_stride(const torch::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

/// The forward where query, key or value has no elements (E, Ev or Lk is 0), by ATen, which
/// costs nothing at these sizes: scores are 0 where E = 0; rows with no key get zeros and
/// lse -inf.
std::tuple<torch::Tensor, torch::Tensor> empty_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale) {
  const int64_t G = query.size(1) / key.size(1);
  const auto k = key.repeat_interleave(G, 1), v = value.repeat_interleave(G, 1);
  const auto mask =
      torchattn::detail::decode_mask(query, key, kv_lengths, q_start, is_causal, window_left);
  const double inf = std::numeric_limits<double>::infinity();
  auto s = (query * scale).matmul(k.transpose(-2, -1)).masked_fill(mask.logical_not(), -inf);
  auto lse = s.logsumexp(-1);
  auto dead = lse.eq(-inf).unsqueeze(-1);
  auto p = (s - lse.unsqueeze(-1).masked_fill(dead, 0.0)).exp().masked_fill(dead, 0.0);
  return {p.matmul(v), lse};
}

std::tuple<torch::Tensor, torch::Tensor> forward_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> output [B, H, Lq, Ev], lse [B, H, Lq]
  torchattn::detail::check_decode_args(
      "torchattn::_decode_attention_forward", query, key, value, kv_lengths, q_start, window_left,
      scale);
  const auto dtype = query.scalar_type();
  // bfloat16 and float16: the kernel reads them as they are and computes in float32; the
  // output comes back in float32 and is rounded here, once; the lse stays float32.
  const bool low = dtype == torch::kBFloat16 || dtype == torch::kHalf;
  const auto stats = query.options().dtype(low ? torch::kFloat : dtype);
  auto out = torch::empty({query.size(0), query.size(1), query.size(2), value.size(3)}, stats);
  auto lse = torch::empty({query.size(0), query.size(1), query.size(2)}, stats);
  if (out.numel() == 0 || query.numel() == 0 || key.numel() == 0) {
    if (low) {
      auto [o, l] = empty_forward(
          query.to(torch::kFloat), key.to(torch::kFloat), value.to(torch::kFloat), kv_lengths,
          q_start, is_causal, window_left, scale);
      return {o.to(dtype), l};
    }
    return empty_forward(query, key, value, kv_lengths, q_start, is_causal, window_left, scale);
  }
  cpu::DecodeArgs args;
  args.scale = scale;
  args.causal = is_causal;
  args.window_left = window_left;
  if (kv_lengths.has_value() && kv_lengths->defined()) {
    args.kv_len = kv_lengths->contiguous();
  }
  if (q_start.has_value() && q_start->defined()) {
    args.q_start = q_start->contiguous();
  }
  const auto k = unit_last_stride(key), v = unit_last_stride(value);
  TORCHATTN_CAPABILITY_KERNEL(flash_decode)(query, k, v, args, out, lse);
  return {low ? out.to(dtype) : out, lse};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("_decode_attention_forward", TORCH_FN(torchattn::ops::forward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(decode_attention_cpu_registered)
