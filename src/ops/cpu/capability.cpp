// CPU-feature detection for the fused kernels: which vector build runs.

#include "ops/cpu/capability.h"

#include <torchattn/ops/capability.h>

#include <c10/util/Exception.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

namespace torchattn::ops {

namespace {

using cpu::Capability;

const char* name_of(Capability c) {
  switch (c) {
    case Capability::Avx512:
      return "avx512";
    case Capability::Avx2:
      return "avx2";
    case Capability::Default:
      break;
  }
  return "default";
}

Capability supported() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return Capability::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Capability::Avx2;
  }
#endif
  return Capability::Default;
}

Capability parse(const std::string& s, const char* what) {
  if (s == "avx512") {
    return Capability::Avx512;
  }
  if (s == "avx2") {
    return Capability::Avx2;
  }
  TORCH_CHECK(s == "default", what, " is '", s, "', expected one of avx512, avx2, default");
  return Capability::Default;
}

Capability initial() {
  Capability best = supported();
  for (const char* var : {"TORCHATTN_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && *value != '\0') {
      std::string s(value);
      for (auto& ch : s) {
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      }
      // An unknown or unsupported request never raises the level beyond what the CPU has.
      if (s == "avx512" || s == "avx2" || s == "default") {
        const Capability asked = parse(s, var);
        best = static_cast<int>(asked) < static_cast<int>(best) ? asked : best;
      }
      break;
    }
  }
  return best;
}

std::atomic<int>& current() {
  static std::atomic<int> capability{static_cast<int>(initial())};
  return capability;
}

} // namespace

namespace cpu {
Capability current_capability() {
  return static_cast<Capability>(current().load(std::memory_order_relaxed));
}
} // namespace cpu

std::string kernel_capability() {
  return name_of(cpu::current_capability());
}

std::string set_kernel_capability(const std::string& capability) {
  const Capability asked = parse(capability, "set_kernel_capability: capability");
  TORCH_CHECK(
      static_cast<int>(asked) <= static_cast<int>(supported()),
      "set_kernel_capability: this CPU does not support ", capability, "; it supports up to ",
      name_of(supported()));
  return name_of(static_cast<Capability>(current().exchange(static_cast<int>(asked))));
}

} // namespace torchattn::ops
