#include "fused_loss.h"

#include "autograd_apply.h"
#include "fast_math.h"

#include <torchattn/autocast.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>
#include <mutex>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace translate {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// One row: logits x[V] -> loss; x becomes (softmax(x) - q) * grad_scale, q the smoothed target.
__attribute__((target_clones("avx512f", "avx2", "default"))) float row_loss_and_grad(
    float* x, int64_t V, int64_t t, float smoothing, float grad_scale) {
  float m = -INFINITY, sum_x = 0;
#pragma omp simd reduction(max : m) reduction(+ : sum_x)
  for (int64_t j = 0; j < V; ++j) {
    m = x[j] > m ? x[j] : m;
    sum_x += x[j];
  }
  const float x_t = x[t];
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < V; ++j) {
    const float e = exp_nonpositive(x[j] - m);
    x[j] = e;
    s += e;
  }
  const float lse = m + std::log(s);
  const float a = grad_scale / s, b = grad_scale * smoothing / static_cast<float>(V);
#pragma omp simd
  for (int64_t j = 0; j < V; ++j)
    x[j] = x[j] * a - b;
  x[t] -= grad_scale * (1.0f - smoothing);
  return lse - (1.0f - smoothing) * x_t - smoothing / static_cast<float>(V) * sum_x;
}

inline uint32_t hash32(uint32_t x) { // a 32-bit integer finaliser (lowbias32)
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// m[i - begin] = scale where element i is kept, else 0; Bits is float's or a 16-bit
// dtype's bit pattern (bfloat16 and float16 keep their activations' dtype under autocast).
// Inlined into each clone below (clang's target_clones takes no function templates).
template <typename Bits>
__attribute__((always_inline)) inline void fill_mask(
    Bits* m, int64_t begin, int64_t end, uint32_t seed_lo, uint32_t seed_hi, uint32_t threshold,
    Bits scale) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t x = hash32(hash32(static_cast<uint32_t>(i) + seed_lo) ^ seed_hi);
    m[i - begin] = x >= threshold ? scale : Bits{0};
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void fill_dropout_mask(
    float* m, int64_t begin, int64_t end, uint32_t seed_lo, uint32_t seed_hi, uint32_t threshold,
    float scale) {
  fill_mask(m, begin, end, seed_lo, seed_hi, threshold, scale);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void fill_dropout_mask(
    uint16_t* m, int64_t begin, int64_t end, uint32_t seed_lo, uint32_t seed_hi, uint32_t threshold,
    uint16_t scale) {
  fill_mask(m, begin, end, seed_lo, seed_hi, threshold, scale);
}

class LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
 public:
  static Tensor forward(
      AutogradContext* ctx, const Tensor& h_all, const Tensor& weight, const Tensor& bias,
      const Tensor& target_all, double smoothing, int64_t ignore_index, int64_t matmul_dtype) {
    // h [N, H], weight [V, H], bias [V], target [N] -> loss []
    // Rows whose target is ignored (padding) contribute nothing: they skip the matmuls.
    // The two matmuls of forward and the two of backward run in `matmul_dtype` (float32, or
    // bfloat16 under autocast); the logits, the loss and its gradient are float32.
    const auto mm = static_cast<c10::ScalarType>(matmul_dtype);
    const Tensor keep = target_all.ne(ignore_index).nonzero().squeeze(1);
    const bool all_kept = keep.size(0) == target_all.size(0);
    const Tensor h = (all_kept ? h_all : h_all.index_select(0, keep)).to(mm);
    const Tensor w = weight.to(mm);
    const Tensor tgt = (all_kept ? target_all : target_all.index_select(0, keep)).contiguous();
    // logits, then their gradient
    Tensor grad = at::addmm(bias.to(mm), h, w.t()).to(torch::kFloat).contiguous();
    const int64_t N = grad.size(0), V = grad.size(1);
    const int64_t* t = tgt.data_ptr<int64_t>();
    const float scale = N > 0 ? 1.0f / static_cast<float>(N) : 0.0f;
    std::vector<double> losses(static_cast<size_t>(N), 0.0);
    float* g = grad.data_ptr<float>();
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        TORCH_CHECK(
            t[i] >= 0 && t[i] < V, "linear_cross_entropy: target ", t[i], " is out of range [0, ",
            V, ")");
        losses[static_cast<size_t>(i)] =
            row_loss_and_grad(g + i * V, V, t[i], static_cast<float>(smoothing), scale);
      }
    });
    double total = 0;
    for (double l : losses)
      total += l;
    ctx->save_for_backward({h, w, grad, keep});
    ctx->saved_data["rows"] = h_all.size(0);
    ctx->saved_data["h_dtype"] = static_cast<int64_t>(h_all.scalar_type());
    return torch::scalar_tensor(
        N > 0 ? total / static_cast<double>(N) : 0.0, h_all.options().dtype(torch::kFloat));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& h = saved[0]; // the kept rows, in the matmul dtype
    const Tensor& w = saved[1]; // the weight, in the matmul dtype
    const Tensor& g = saved[2]; // d loss / d logits of the kept rows, [kept, V], float32
    const Tensor& keep = saved[3];
    const Tensor g_mm = g.to(h.scalar_type());
    // The scalar grad_output scales the three small results, not the [kept, V] gradient.
    const Tensor scale = grad_outputs[0];
    const auto h_dtype = static_cast<c10::ScalarType>(ctx->saved_data["h_dtype"].toInt());
    Tensor dh = g_mm.mm(w).to(torch::kFloat).mul_(scale).to(h_dtype);
    const int64_t rows = ctx->saved_data["rows"].toInt();
    if (keep.size(0) != rows) {
      dh = torch::zeros({rows, h.size(1)}, dh.options()).index_copy_(0, keep, dh);
    }
    return {
        dh,
        g_mm.t().mm(h).to(torch::kFloat).mul_(scale),
        g.sum(0).mul_(scale),
        Tensor(),
        Tensor(),
        Tensor(),
        Tensor()};
  }
};

} // namespace

Tensor linear_cross_entropy(
    const Tensor& h, const Tensor& weight, const Tensor& bias, const Tensor& target,
    double label_smoothing, int64_t ignore_index) {
  TORCH_CHECK(
      h.dim() == 2 && weight.dim() == 2 && bias.dim() == 1 && target.dim() == 1 &&
          h.size(0) == target.size(0) && h.size(1) == weight.size(1) &&
          bias.size(0) == weight.size(0),
      "linear_cross_entropy: expected h [N, H], weight [V, H], bias [V], target [N]; got h ",
      h.sizes(), ", weight ", weight.sizes(), ", bias ", bias.sizes(), ", target ", target.sizes());
  // Under CPU autocast the output layer is a lower-precision op (as Linear is) and the loss a
  // float32 one (as cross_entropy is): h may come in the autocast dtype.
  const auto mm =
      torchattn::AutocastCpu::is_enabled() ? torchattn::AutocastCpu::get_dtype() : torch::kFloat;
  TORCH_CHECK(
      (h.scalar_type() == torch::kFloat || h.scalar_type() == mm) &&
          weight.scalar_type() == torch::kFloat && bias.scalar_type() == torch::kFloat &&
          target.scalar_type() == torch::kLong && h.device().is_cpu(),
      "linear_cross_entropy: float32 CPU inputs (h also in the autocast dtype under autocast) "
      "and an int64 target expected");
  return apply_function<LinearCrossEntropy>(
      h, weight, bias, target, label_smoothing, ignore_index, static_cast<int64_t>(mm));
}

Tensor dropout(const Tensor& x, double p, bool training) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0)
    return x;
  const auto dtype = x.scalar_type();
  const bool supported =
      dtype == torch::kFloat || dtype == torch::kBFloat16 || dtype == torch::kHalf;
  if (!supported || !x.device().is_cpu() || x.numel() >= (int64_t{1} << 32))
    return torch::dropout(x, p, /*train=*/true);
  uint64_t seed;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    seed = gen.get<at::CPUGeneratorImpl>()->random64();
  }
  Tensor mask = torch::empty(x.sizes(), x.options().requires_grad(false));
  const auto threshold = static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
  const auto lo = static_cast<uint32_t>(seed), hi = static_cast<uint32_t>(seed >> 32);
  // The scale rounded to x's dtype, as torch::dropout's mask holds it.
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  auto fill = [&](auto* m, auto scale_bits) {
    at::parallel_for(0, x.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      fill_dropout_mask(m + begin, begin, end, lo, hi, threshold, scale_bits);
    });
  };
  if (dtype == torch::kFloat)
    fill(mask.data_ptr<float>(), scale);
  else if (dtype == torch::kBFloat16)
    fill(reinterpret_cast<uint16_t*>(mask.data_ptr<at::BFloat16>()), c10::BFloat16(scale).x);
  else
    fill(reinterpret_cast<uint16_t*>(mask.data_ptr<at::Half>()), c10::Half(scale).x);
  return x * mask;
}

} // namespace translate
