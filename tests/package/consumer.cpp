// The README's minimal example: a forward and backward pass through torchattn modules from a
// project that links the package. Built by tests/package/run.sh against an install and as a
// subdirectory.
#include <torchattn/torchattn.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  // Self-attention over a batch of 2 sequences of 5 tokens, 4 heads of size 16.
  auto x = torch::randn({2, 4, 5, 16}, torch::requires_grad());
  torchattn::nn::ScaledDotProductAttention attn;
  auto [out, weights] = attn->forward(
      x, x, x, /*attn_mask=*/{}, /*key_padding_mask=*/{},
      /*need_weights=*/true, /*is_causal=*/true);

  // Bahdanau attention of one decoder state over 5 encoder outputs.
  torchattn::nn::AdditiveAttention bahdanau(/*query_dim=*/32, /*key_dim=*/16, /*hidden_dim=*/24);
  auto state = torch::randn({2, 1, 32});
  auto memory = x.select(1, 0); // [2, 5, 16]
  auto [context, alignment] =
      bahdanau->forward(state, memory, memory, {}, {}, /*need_weights=*/true);

  // The dispatcher ops, which a static link keeps only through the umbrella header's anchor:
  // the fused kernel's forward and backward, and the fused additive score.
  auto fused = torchattn::ops::scaled_dot_product_attention(x, x, x, {}, 0.0, /*is_causal=*/true);
  auto scores = torchattn::ops::additive_attention_scores(memory, memory, torch::ones({16}));

  (out.sum() + context.sum() + fused.sum() + scores.sum()).backward();
  std::cout << "output " << out.sizes() << ", weights " << weights.sizes() << ", context "
            << context.sizes() << ", grad " << x.grad().sizes() << ", kernels "
            << torchattn::ops::kernel_capability() << "\n";
  return torch::isfinite(x.grad()).all().item<bool>() ? 0 : 1;
}
