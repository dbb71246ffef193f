#pragma once

// One GRU layer in one direction over a whole batch-first sequence, as torch::gru computes it
// (PyTorch's gate order r, z, n; the same parameters), as one autograd function.
//
// torch::gru records about a dozen autograd nodes per time step (the hidden matmul, chunk,
// sigmoid, tanh and the gate arithmetic) and runs each of them again in backward. Here a step
// is one matmul and one vectorised pass over the gates, forward and backward, and the hidden
// weights' gradient is one matmul over all steps at the end.

#include <torch/types.h>

namespace translate {

// gi [B, T, 3H] (the inputs' projections x W_ihᵀ + b_ih of every step, made by one matmul
// outside), h0 [B, H], w_hh [3H, H], b_hh [3H] -> outputs [B, T, H], float32 on the CPU.
torch::Tensor gru_sequence(
    const torch::Tensor& gi, const torch::Tensor& h0, const torch::Tensor& w_hh,
    const torch::Tensor& b_hh);

} // namespace translate
