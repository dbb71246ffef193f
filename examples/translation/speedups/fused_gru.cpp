#include "fused_gru.h"

#include <torchattn/autocast.h>

#include "autograd_apply.h"
#include "fast_math.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <cstdint>

namespace translate {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// One batch row of one step. gi, gh [3H] (r, z, n parts), h [H] -> out [H]; gates [4H] keeps
// r, z, n and the hidden part of n's pre-activation for backward.
__attribute__((target_clones("avx512f", "avx2", "default"))) void step_forward(
    const float* gi, const float* gh, const float* h, float* out, float* gates, int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const float r = sigmoid(gi[j] + gh[j]);
    const float z = sigmoid(gi[H + j] + gh[H + j]);
    const float ghn = gh[2 * H + j];
    const float n = tanh(gi[2 * H + j] + r * ghn);
    out[j] = n + z * (h[j] - n);
    gates[j] = r;
    gates[H + j] = z;
    gates[2 * H + j] = n;
    gates[3 * H + j] = ghn;
  }
}

// One batch row of one step backward. dout [H] (from the outputs), dh [H] (from the next step,
// becomes the part that flows straight through z), h [H] the previous state, gates [4H]
// -> dgi [3H], dgh [3H] (the pre-activations' gradients on the input and hidden sides).
__attribute__((target_clones("avx512f", "avx2", "default"))) void step_backward(
    const float* dout, float* dh, const float* h, const float* gates, float* dgi, float* dgh,
    int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const float r = gates[j], z = gates[H + j], n = gates[2 * H + j], ghn = gates[3 * H + j];
    const float d = dout[j] + dh[j];
    const float dan = d * (1.0f - z) * (1.0f - n * n);
    const float dar = dan * ghn * r * (1.0f - r);
    const float daz = d * (h[j] - n) * z * (1.0f - z);
    dgi[j] = dar;
    dgi[H + j] = daz;
    dgi[2 * H + j] = dan;
    dgh[j] = dar;
    dgh[H + j] = daz;
    dgh[2 * H + j] = dan * r;
    dh[j] = d * z;
  }
}

/// Rows per parallel chunk: about 4096 elements each, so short steps stay on one thread.
int64_t grain(int64_t H) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1));
}

class GruSequence : public torch::autograd::Function<GruSequence> {
 public:
  static Tensor forward(
      AutogradContext* ctx, const Tensor& gi_in, const Tensor& h0_in, const Tensor& w_hh,
      const Tensor& b_hh) {
    // gi [B, T, 3H], h0 [B, H] -> out [B, T, H]; gates [T, B, 4H] saved
    const Tensor gi = gi_in.contiguous(), h0 = h0_in.contiguous();
    const int64_t B = gi.size(0), T = gi.size(1), H = h0.size(1);
    Tensor out = torch::empty({B, T, H}, gi.options());
    Tensor gates = torch::empty({T, B, 4 * H}, gi.options());
    const Tensor w_t = w_hh.t();
    Tensor h = h0;
    for (int64_t t = 0; t < T; ++t) {
      const Tensor gh = at::addmm(b_hh, h, w_t).contiguous(); // [B, 3H]
      const float* gi_p = gi.data_ptr<float>() + t * 3 * H;
      const float* gh_p = gh.data_ptr<float>();
      const float* h_p = h.data_ptr<float>();
      const int64_t h_stride = h.stride(0);
      float* out_p = out.data_ptr<float>() + t * H;
      float* gates_p = gates.data_ptr<float>() + t * B * 4 * H;
      at::parallel_for(0, B, grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          step_forward(
              gi_p + b * T * 3 * H, gh_p + b * 3 * H, h_p + b * h_stride, out_p + b * T * H,
              gates_p + b * 4 * H, H);
        }
      });
      h = out.select(1, t); // [B, H], rows T * H apart
    }
    ctx->save_for_backward({h0, w_hh, out, gates});
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& h0 = saved[0];
    const Tensor& w_hh = saved[1];
    const Tensor& out = saved[2];
    const Tensor& gates = saved[3];
    const int64_t B = out.size(0), T = out.size(1), H = out.size(2);
    const Tensor dout =
        grad_outputs[0].defined() ? grad_outputs[0].contiguous() : torch::zeros_like(out);
    Tensor dgi = torch::empty({B, T, 3 * H}, out.options());
    Tensor dgh = torch::empty({T, B, 3 * H}, out.options());
    Tensor dh = torch::zeros({B, H}, out.options());
    if (T == 0) {
      return {dgi, dh, torch::zeros_like(w_hh), torch::zeros({3 * H}, w_hh.options())};
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* dout_p = dout.data_ptr<float>() + t * H;
      const float* h_p = t == 0 ? h0.data_ptr<float>() : out.data_ptr<float>() + (t - 1) * H;
      const int64_t h_stride = t == 0 ? H : T * H;
      const float* gates_p = gates.data_ptr<float>() + t * B * 4 * H;
      float* dh_p = dh.data_ptr<float>();
      float* dgi_p = dgi.data_ptr<float>() + t * 3 * H;
      float* dgh_p = dgh.data_ptr<float>() + t * B * 3 * H;
      at::parallel_for(0, B, grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          step_backward(
              dout_p + b * T * H, dh_p + b * H, h_p + b * h_stride, gates_p + b * 4 * H,
              dgi_p + b * T * 3 * H, dgh_p + b * 3 * H, H);
        }
      });
      dh.addmm_(dgh.select(0, t), w_hh); // the part through W_hh: [B, 3H] x [3H, H]
    }
    // The previous states of all steps, [T * B, H], against their gradients in one matmul.
    const Tensor h_prev = torch::cat({h0.unsqueeze(0), out.transpose(0, 1).slice(0, 0, T - 1)}, 0)
                              .reshape({T * B, H});
    const Tensor dgh_2d = dgh.view({T * B, 3 * H});
    return {dgi, dh, dgh_2d.t().mm(h_prev), dgh_2d.sum(0)};
  }
};

} // namespace

Tensor gru_sequence(
    const Tensor& gi_in, const Tensor& h0_in, const Tensor& w_hh, const Tensor& b_hh) {
  // The recurrence is a float32 op under CPU autocast (as torch::gru is): the projections of
  // the inputs may come in its lower-precision dtype, and its matmuls stay float32.
  const bool autocast = torchattn::AutocastCpu::is_enabled();
  const Tensor gi = autocast ? gi_in.to(torch::kFloat) : gi_in;
  const Tensor h0 = autocast ? h0_in.to(torch::kFloat) : h0_in;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  TORCH_CHECK(
      gi.dim() == 3 && h0.dim() == 2 && w_hh.dim() == 2 && b_hh.dim() == 1,
      "gru_sequence: expected gi [B, T, 3H], h0 [B, H], w_hh [3H, H], b_hh [3H]; got gi ",
      gi.sizes(), ", h0 ", h0.sizes(), ", w_hh ", w_hh.sizes(), ", b_hh ", b_hh.sizes());
  const int64_t H = h0.size(1);
  TORCH_CHECK(
      gi.size(0) == h0.size(0) && gi.size(2) == 3 * H && w_hh.size(0) == 3 * H &&
          w_hh.size(1) == H && b_hh.size(0) == 3 * H,
      "gru_sequence: shapes disagree: gi ", gi.sizes(), ", h0 ", h0.sizes(), ", w_hh ",
      w_hh.sizes(), ", b_hh ", b_hh.sizes());
  for (const Tensor* t : {&gi, &h0, &w_hh, &b_hh}) {
    TORCH_CHECK(
        t->scalar_type() == torch::kFloat && t->device().is_cpu(),
        "gru_sequence: float32 CPU tensors expected, got ", t->scalar_type(), " on ", t->device());
  }
  return apply_function<GruSequence>(gi, h0, w_hh, b_hh);
}

} // namespace translate
