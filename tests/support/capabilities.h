#pragma once

// The vector builds of the fused kernels that this CPU can run, for tests that run each.

#include <torchattn/ops/attention.h>

#include <torch/types.h>

#include <string>
#include <vector>

namespace torchattn::testing {

/// The vector builds this CPU can run, best first.
inline std::vector<std::string> capabilities() {
  std::vector<std::string> caps;
  const auto best = torchattn::ops::kernel_capability();
  for (const char* c : {"avx512", "avx2", "default"}) {
    if (caps.empty() && best != c) {
      continue;
    }
    caps.emplace_back(c);
  }
  return caps;
}

/// Restores the kernel capability on scope exit.
struct CapabilityGuard {
  std::string saved = torchattn::ops::kernel_capability();
  ~CapabilityGuard() { torchattn::ops::set_kernel_capability(saved); }
};

/// Runs fn(dtype) for float32 and float64 on every vector build this CPU runs, then restores
/// the build that was set.
template <typename Fn>
void for_each_build_and_dtype(Fn&& fn) {
  CapabilityGuard guard;
  for (const auto& cap : capabilities()) {
    torchattn::ops::set_kernel_capability(cap);
    for (auto dtype : {torch::kFloat, torch::kDouble}) {
      fn(dtype);
    }
  }
}

} // namespace torchattn::testing
