#pragma once

// Which path a call took, seen from outside: the fused kernel refuses double backward with
// its own message; the math path (ATen ops) differentiates twice.

#include <torch/torch.h>

#include <string>

namespace torchattn::testing {

/// Whether `out`, a function of `x` (which requires grad), came through the fused kernel.
inline bool through_fused_kernel(const torch::Tensor& out, const torch::Tensor& x) {
  auto g = torch::autograd::grad(
      {out.pow(2).sum()}, {x}, {}, /*retain_graph=*/true,
      /*create_graph=*/true);
  try {
    g[0].pow(2).sum().backward();
  } catch (const c10::Error& e) {
    if (std::string(e.what()).find("double backward is not supported by the fused kernel") !=
        std::string::npos) {
      return true;
    }
    throw;
  }
  return false;
}

} // namespace torchattn::testing
