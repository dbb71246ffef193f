#pragma once

#include <torchattn/nn/functional/rotary_embedding.h>
#include <torchattn/nn/options/rotary_embedding.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace torchattn::nn {

/// Rotary position embeddings with a cos/sin cache built once (and doubled when a position
/// runs past it). No parameters and no state-dict entries, as Hugging Face's
/// LlamaRotaryEmbedding keeps its buffers out of the state dict.
///
/// forward(x [B, H, L, D], positions int64 [L] or [B, L]) -> x rotated, [B, H, L, D]; no
/// positions: 0 .. L-1. Differentiable in x.
///
/// Example:
/// ```
/// torchattn::nn::RotaryEmbedding rope(torchattn::nn::RotaryEmbeddingOptions(64));
/// auto q_rot = rope(q, torch::arange(start, start + L));
/// ```
class RotaryEmbeddingImpl : public torch::nn::Cloneable<RotaryEmbeddingImpl> {
 public:
  explicit RotaryEmbeddingImpl(const RotaryEmbeddingOptions& options_);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions = {});

  /// cos and sin [..., rotary_dim / 2] of int64 positions [...], from the cache, float64.
  std::pair<torch::Tensor, torch::Tensor> cos_sin(const torch::Tensor& positions);

  RotaryEmbeddingOptions options;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})

 private:
  void grow(int64_t positions);
  torch::Tensor inv_freq_, cos_, sin_; // float64, CPU: [d/2], [P, d/2], [P, d/2]
};

TORCH_MODULE(RotaryEmbedding);

} // namespace torchattn::nn
