// CPU-feature detection for the fused kernels: which vector build runs.

#include "ops/cpu/capability.h"

#include <torchattn/ops/capability.h>

#include "ops/registration.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <array>
#include <atomic>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace torchattn::ops {

namespace {

using cpu::Capability;

const char* name_of(Capability c) {
  switch (c) {
    case Capability::Amx:
      return "amx";
    case Capability::Avx512Bf16:
      return "avx512_bf16";
    case Capability::Avx512:
      return "avx512";
    case Capability::Avx2:
      return "avx2";
    case Capability::Default:
      break;
  }
  return "default";
}

#if defined(__x86_64__)
/// cpuid leaf 7, sub-leaf `sub`: {eax, ebx, ecx, edx}.
std::array<uint32_t, 4> cpuid7(uint32_t sub) {
  std::array<uint32_t, 4> r{};
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, sub, r[0], r[1], r[2], r[3]);
  }
  return r;
}

/// Whether the CPU has AMX-BF16 tiles and Linux lets this process use them: the tile data
/// state is off until arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) grants it (Linux
/// 5.16+); a kernel that refuses, or that predates AMX, leaves the AVX-512 builds.
bool amx_usable() {
  const auto leaf = cpuid7(0);
  const bool tile = (leaf[3] >> 24) & 1u, bf16 = (leaf[3] >> 22) & 1u;
  if (!tile || !bf16) {
    return false;
  }
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

/// Whether TORCHATTN_EMULATE_AMX=1 asks for software tiles (capability.h: TilePath).
bool amx_emulation_requested() {
  const char* value = std::getenv("TORCHATTN_EMULATE_AMX");
  return value != nullptr && std::string(value) == "1";
}

/// Whether the tiles are emulated: asked for, on a CPU with AVX512-BF16 and no usable AMX.
bool amx_emulated() {
#if defined(__x86_64__)
  static const bool emulated =
      amx_emulation_requested() && !amx_usable() && ((cpuid7(1)[0] >> 5) & 1u) != 0;
  return emulated;
#else
  return false;
#endif
}

/// What the CPU has, whether or not a build of it was compiled.
Capability detected() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
#if defined(__x86_64__)
    static const bool amx = amx_usable();
    if (amx || amx_emulated()) {
      return Capability::Amx;
    }
    if ((cpuid7(1)[0] >> 5) & 1u) { // AVX512_BF16
      return Capability::Avx512Bf16;
    }
#endif
    return Capability::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Capability::Avx2;
  }
#endif
  return Capability::Default;
}

/// What the CPU has, at most the highest build compiled.
Capability supported() {
  const Capability cpu = detected();
  if (static_cast<int>(cpu::kMaxBuiltCapability) < static_cast<int>(Capability::Avx512Bf16) &&
      static_cast<int>(cpu) > static_cast<int>(cpu::kMaxBuiltCapability)) {
    return cpu::kMaxBuiltCapability;
  }
  return cpu;
}

Capability parse(const std::string& s, const char* what) {
  if (s == "amx") {
    return Capability::Amx;
  }
  if (s == "avx512_bf16") {
    return Capability::Avx512Bf16;
  }
  if (s == "avx512") {
    return Capability::Avx512;
  }
  if (s == "avx2") {
    return Capability::Avx2;
  }
  TORCH_CHECK(
      s == "default", what, " is '", s,
      "', expected one of amx, avx512_bf16, avx512, avx2, default");
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
      if (s == "amx" || s == "avx512_bf16" || s == "avx512" || s == "avx2" || s == "default") {
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

TilePath tile_path() {
  if (current_capability() != Capability::Amx) {
    return TilePath::none;
  }
  return amx_emulated() ? TilePath::emulated : TilePath::amx;
}
} // namespace cpu

std::string kernel_capability() {
  return name_of(cpu::current_capability());
}

std::string set_kernel_capability(const std::string& capability) {
  const Capability asked = parse(capability, "set_kernel_capability: capability");
  TORCH_CHECK(
      static_cast<int>(asked) <= static_cast<int>(detected()),
      "set_kernel_capability: this CPU does not support ", capability, "; it supports up to ",
      name_of(supported()));
  TORCH_CHECK(
      static_cast<int>(asked) <= static_cast<int>(supported()),
      "set_kernel_capability: torchattn was built without the ", capability,
      " kernels (TORCHATTN_MAX_CPU_CAPABILITY); this build goes up to ", name_of(supported()));
  return name_of(static_cast<Capability>(current().exchange(static_cast<int>(asked))));
}

} // namespace torchattn::ops

// Python and TorchScript: torch.ops.torchattn.kernel_capability() and set_kernel_capability(c).
TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def("kernel_capability() -> str", [] { return torchattn::ops::kernel_capability(); });
  m.def("set_kernel_capability(str capability) -> str", [](std::string capability) {
    return torchattn::ops::set_kernel_capability(capability);
  });
}

TORCHATTN_REGISTRATION_ANCHOR(capability_registered)
