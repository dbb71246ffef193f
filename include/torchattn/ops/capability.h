#pragma once

/// Which vector build of the fused CPU kernels runs (src/ops/cpu/capability.cpp).

#include <string>

namespace torchattn::ops {

/// The vector instruction set the fused kernels run with: "avx512", "avx2" or "default".
/// Chosen at load time as the best the CPU supports, lowered by the environment variable
/// `TORCHATTN_CPU_CAPABILITY` (or ATen's `ATEN_CPU_CAPABILITY`).
std::string kernel_capability();

/// Runs the fused kernels with `capability` ("avx512", "avx2" or "default") from now on, e.g.
/// to compare the builds on one machine; fails if the CPU lacks it. Returns the previous one.
std::string set_kernel_capability(const std::string& capability);

} // namespace torchattn::ops
