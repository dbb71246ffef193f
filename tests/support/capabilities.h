#pragma once

// The vector builds of the fused kernels that this CPU can run, for tests that run each.

#include <torchattn/ops/attention.h>

#include <torch/types.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace torchattn::testing {

/// The build the library chose when it loaded (the best the CPU has, or the one the
/// environment lowered it to), read before any test sets another.
inline const std::string kStartCapability = torchattn::ops::kernel_capability();

/// The vector builds this CPU can run, best first, from `names` (best first): from the build
/// chosen at load time, whichever build a test has set since (a sweep that sets each build in
/// turn asks again for every configuration).
inline std::vector<std::string> supported_of(std::initializer_list<const char*> names) {
  std::vector<std::string> caps;
  const auto& best = kStartCapability;
  for (const char* c : names) {
    if (caps.empty() && best != c) {
      continue;
    }
    caps.emplace_back(c);
  }
  return caps;
}

/// The builds whose float32 and float64 kernels differ that this CPU can run, best first:
/// avx512_bf16 and amx run avx512's float code.
inline std::vector<std::string> capabilities() {
  auto caps = supported_of({"amx", "avx512_bf16", "avx512", "avx2", "default"});
  caps.erase(
      std::remove_if(
          caps.begin(), caps.end(), [](const auto& c) { return c == "amx" || c == "avx512_bf16"; }),
      caps.end());
  return caps;
}

/// Every build this CPU can run, best first, the bfloat16 ones included. Under
/// TORCHATTN_EMULATE_AMX=1 (the low_precision_amx_emulated test), amx alone: that run is for
/// the tile driver on software tiles, and the other builds run in the main suite.
inline std::vector<std::string> low_precision_capabilities() {
  auto caps = supported_of({"amx", "avx512_bf16", "avx512", "avx2", "default"});
  const char* emulate = std::getenv("TORCHATTN_EMULATE_AMX");
  if (emulate != nullptr && std::string(emulate) == "1" && !caps.empty() && caps[0] == "amx") {
    caps.resize(1);
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
