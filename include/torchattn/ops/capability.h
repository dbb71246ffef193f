#pragma once

/// Which vector build of the fused CPU kernels runs (src/ops/cpu/capability.cpp).

#include <string>

namespace torchattn::ops {

/// The vector instruction set the fused kernels run with: "amx" (AMX-BF16 tiles for bfloat16's
/// products, Intel Sapphire Rapids and later), "avx512_bf16" (vdpbf16ps: AMD Zen 4, Intel
/// Cooper Lake and later), "avx512", "avx2" or "default". The first two differ from "avx512"
/// only for bfloat16 inputs of the fused attention kernel. Chosen at load time as the best the
/// CPU (and, for AMX, Linux) supports, lowered by the environment variable
/// `TORCHATTN_CPU_CAPABILITY` (or ATen's `ATEN_CPU_CAPABILITY`, whose names stop at avx512).
std::string kernel_capability();

/// Runs the fused kernels with `capability` (one of the names above) from now on, e.g.
/// to compare the builds on one machine; fails if the CPU lacks it. Returns the previous one.
std::string set_kernel_capability(const std::string& capability);

} // namespace torchattn::ops
