#pragma once

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace torchattn::nn {

/// Options for `RotaryEmbedding` and `functional::rotary_inv_freq`: rotary position embeddings
/// (RoPE, Su et al. 2021) as Hugging Face's Llama (`rotate_half`) and GPT-J / Meta's reference
/// Llama (interleaved pairs) apply them.
///
/// Frequencies: inv_freq[i] = base^(-2i / rotary_dim), i < rotary_dim / 2, then scaled:
/// - "linear": positions divided by `factor` (inv_freq / factor);
/// - "ntk": base * factor^(rotary_dim / (rotary_dim - 2)) (NTK-aware scaling);
/// - "llama3": Llama 3.1's band-wise scaling (Hugging Face's `_compute_llama3_parameters`):
///   wavelengths above original_max_positions / low_freq_factor are divided by `factor`,
///   those below original_max_positions / high_freq_factor kept, and the band between
///   interpolated.
///
/// Example:
/// ```
/// torchattn::nn::RotaryEmbedding rope(
///     torchattn::nn::RotaryEmbeddingOptions(128).base(500000).scaling("llama3").factor(8));
/// ```
struct RotaryEmbeddingOptions {
  /* implicit */ RotaryEmbeddingOptions(int64_t head_dim = 0) : head_dim_(head_dim) {}

  /// Features per head; 0 lets GroupedQueryAttention fill in its head_dim. Default: 0.
  TORCH_ARG(int64_t, head_dim);
  /// The leading features that rotate (even, <= head_dim); 0: all of them (GPT-NeoX's
  /// rotary_pct < 1 rotates fewer; the rest pass through). Default: 0.
  TORCH_ARG(int64_t, rotary_dim) = 0;
  /// θ, the base of the frequencies (Llama 2: 10000, Llama 3: 500000). Default: 10000.
  TORCH_ARG(double, base) = 10000.0;
  /// Pairs (x[2i], x[2i+1]) rotate together (GPT-J, Meta's Llama); false: (x[i], x[i + d/2])
  /// (Hugging Face's rotate_half). Default: false.
  TORCH_ARG(bool, interleaved) = false;
  /// "none", "linear", "ntk" or "llama3". Default: "none".
  TORCH_ARG(std::string, scaling) = "none";
  /// The scaling factor. Default: 1.
  TORCH_ARG(double, factor) = 1.0;
  /// llama3: Default: 1 and 4, and 8192 positions of the original context.
  TORCH_ARG(double, low_freq_factor) = 1.0;
  TORCH_ARG(double, high_freq_factor) = 4.0;
  TORCH_ARG(int64_t, original_max_positions) = 8192;
  /// Positions the cos/sin cache holds at first; it doubles when a later position needs it.
  /// Default: 2048.
  TORCH_ARG(int64_t, max_positions) = 2048;
};

} // namespace torchattn::nn
