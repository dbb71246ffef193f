#pragma once

// The output layer and its loss in one autograd function: logits = h Wᵀ + b, then
// cross-entropy with label smoothing against `target`, mean over the targets that are not
// `ignore_index` (what torch::nn::functional::cross_entropy computes with those options).
//
// PyTorch runs log_softmax, nll_loss, the smoothing sum and their backward as separate passes
// over the [N, V] logits, the largest tensor of a translation model. Here one row-wise pass
// turns the logits into the loss and, in place, into the gradient of the loss with respect to
// the logits, which backward multiplies out: three passes over [N, V] instead of about nine.

#include <torch/types.h>

namespace translate {

// h [N, H], weight [V, H], bias [V], target [N] int64 -> loss (0-dim)
torch::Tensor linear_cross_entropy(
    const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& bias,
    const torch::Tensor& target, double label_smoothing, int64_t ignore_index);

/// Inverted dropout, x * mask with mask 0 or 1 / (1 - p), in training mode only. The mask is
/// drawn in parallel from a counter-based hash seeded by one draw from the default generator
/// (so torch::manual_seed makes it reproducible): ATen's CPU bernoulli_ in LibTorch 1.13 is
/// a serial loop over a locked generator and costs a translation model several percent.
/// float32, bfloat16 and float16 take this path (the mask in x's dtype, its scale rounded to
/// it, as torch::dropout's); other dtypes go to torch::dropout.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training);

} // namespace translate
