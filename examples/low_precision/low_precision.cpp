// bfloat16 attention on the CPU: the fused kernel forward and backward in bf16, which kernel
// build runs it, and a bf16 MultiheadAttention. The blocks between the readme markers are the
// README's, as they run here.

#include <torchattn/torchattn.h>

#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  // [readme: bfloat16]
  auto q = torch::randn({1, 8, 4096, 64}).to(torch::kBFloat16).requires_grad_();
  auto k = torch::randn_like(q).requires_grad_(), v = torch::randn_like(q).requires_grad_();
  auto out = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  out.sum().backward(); // out, q.grad, k.grad, v.grad: bfloat16
  // [readme: end]
  std::printf(
      "kernel build: %s, output %s, grad %s\n", torchattn::ops::kernel_capability().c_str(),
      c10::toString(out.scalar_type()), c10::toString(q.grad().scalar_type()));

  // [readme: bfloat16 module]
  torchattn::nn::MultiheadAttention mha(
      torchattn::nn::MultiheadAttentionOptions(256, 8).batch_first(true));
  mha->to(torch::kBFloat16); // its Linear layers too
  auto x = torch::randn({4, 512, 256}).to(torch::kBFloat16);
  auto [y, weights] = mha->forward(x, x, x, {}, /*need_weights=*/false); // the fused path
  // [readme: end]
  std::printf(
      "MultiheadAttention in %s: output %s\n", c10::toString(x.scalar_type()),
      c10::toString(y.scalar_type()));
  const bool ok = out.scalar_type() == torch::kBFloat16 && y.scalar_type() == torch::kBFloat16 &&
                  q.grad().isfinite().all().item<bool>() && y.isfinite().all().item<bool>();
  return ok ? 0 : 1;
}
