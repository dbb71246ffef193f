#pragma once

// Which vector build of the fused kernels runs, decided once (and lowered on request), and the
// one macro pair through which every kernel family declares its builds and picks one.
//
// A kernel family declares its function once per build, from its function type:
//
//   using FlashForwardFn = void(const at::Tensor& query, ...);
//   TORCHATTN_DECLARE_CAPABILITY_KERNEL(flash_attention_forward, FlashForwardFn)
//
// defines it in `namespace torchattn::ops::cpu::CPU_CAPABILITY` of a file that
// torchattn_add_cpu_capabilities compiles per build, and calls the one that runs with
//
//   TORCHATTN_CAPABILITY_KERNEL(flash_attention_forward)(query, ...);

namespace torchattn::ops::cpu {

/// The builds, in order: each runs where the CPU has its instructions and those of the ones
/// below. avx512_bf16 (vdpbf16ps) differs from avx512 only in the fused attention kernel's
/// bfloat16 products; every other kernel runs its avx512 build there. amx is the avx512_bf16
/// build with those products on AMX-BF16 tiles (tile_path()).
enum class Capability : int { Default = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4 };

#ifndef TORCHATTN_MAX_CPU_CAPABILITY
#error "TORCHATTN_MAX_CPU_CAPABILITY comes from torchattn_add_cpu_capabilities (CMake)"
#endif
/// The highest build compiled (CMake's TORCHATTN_MAX_CPU_CAPABILITY); a CPU that supports more
/// runs this one.
inline constexpr Capability kMaxBuiltCapability =
    static_cast<Capability>(TORCHATTN_MAX_CPU_CAPABILITY);

/// The build that runs now: the best the CPU supports, at most kMaxBuiltCapability (amx runs
/// the avx512_bf16 build), lowered by TORCHATTN_CPU_CAPABILITY (or ATEN_CPU_CAPABILITY) at load
/// time and by set_kernel_capability.
Capability current_capability();

/// Where the avx512_bf16 build's bfloat16 products run: on AMX tiles when the amx capability
/// runs; on software tiles with AMX's arithmetic when TORCHATTN_EMULATE_AMX=1 was set at load
/// time on a CPU with AVX512-BF16 and no AMX (it then reports amx), so that the tile driver is
/// tested there; otherwise by vdpbf16ps (none). Emulation is for tests: it is ~100x slower.
enum class TilePath { none, amx, emulated };
TilePath tile_path();

/// The build of one kernel for the current capability; a build that was not compiled is
/// nullptr and never chosen (current_capability() stays at or below kMaxBuiltCapability).
template <typename Fn>
Fn* for_capability(Fn* avx512, Fn* avx2, Fn* fallback) {
  switch (current_capability()) {
    case Capability::Amx:
    case Capability::Avx512Bf16:
    case Capability::Avx512:
      return avx512;
    case Capability::Avx2:
      return avx2;
    case Capability::Default:
      break;
  }
  return fallback;
}

/// The build of one fused attention kernel, which also has an avx512_bf16 build.
template <typename Fn>
Fn* for_bf16_capability(Fn* avx512_bf16, Fn* avx512, Fn* avx2, Fn* fallback) {
  switch (current_capability()) {
    case Capability::Amx:
    case Capability::Avx512Bf16:
      return avx512_bf16;
    default:
      return for_capability(avx512, avx2, fallback);
  }
}

} // namespace torchattn::ops::cpu

// The address of build `ns`'s `name`, or a null pointer of its type where `ns` was not compiled.
#define TORCHATTN_KERNEL_IN_(ns, name) &::torchattn::ops::cpu::ns::name
#define TORCHATTN_KERNEL_NONE_(ns, name) \
  static_cast<decltype(&::torchattn::ops::cpu::DEFAULT::name)>(nullptr)
#if TORCHATTN_MAX_CPU_CAPABILITY >= 1
#define TORCHATTN_KERNEL_AVX2_ TORCHATTN_KERNEL_IN_
#else
#define TORCHATTN_KERNEL_AVX2_ TORCHATTN_KERNEL_NONE_
#endif
#if TORCHATTN_MAX_CPU_CAPABILITY >= 2
#define TORCHATTN_KERNEL_AVX512_ TORCHATTN_KERNEL_IN_
#else
#define TORCHATTN_KERNEL_AVX512_ TORCHATTN_KERNEL_NONE_
#endif
#if TORCHATTN_MAX_CPU_CAPABILITY >= 3
#define TORCHATTN_KERNEL_AVX512_BF16_ TORCHATTN_KERNEL_IN_
#else
#define TORCHATTN_KERNEL_AVX512_BF16_ TORCHATTN_KERNEL_NONE_
#endif

/// Declares `name` of function type `type` in each build's namespace; use inside
/// `namespace torchattn::ops::cpu`.
#define TORCHATTN_DECLARE_CAPABILITY_KERNEL(name, type) \
  namespace DEFAULT {                                   \
  type name;                                            \
  }                                                     \
  namespace AVX2 {                                      \
  type name;                                            \
  }                                                     \
  namespace AVX512 {                                    \
  type name;                                            \
  }

/// TORCHATTN_DECLARE_CAPABILITY_KERNEL, and the avx512_bf16 build (torchattn_add_cpu_capabilities'
/// BF16_FILES).
#define TORCHATTN_DECLARE_BF16_CAPABILITY_KERNEL(name, type) \
  TORCHATTN_DECLARE_CAPABILITY_KERNEL(name, type)            \
  namespace AVX512_BF16 {                                    \
  type name;                                                 \
  }

/// The build of a TORCHATTN_DECLARE_BF16_CAPABILITY_KERNEL kernel `name` that runs now.
#define TORCHATTN_BF16_CAPABILITY_KERNEL(name)                                                  \
  ::torchattn::ops::cpu::for_bf16_capability(                                                   \
      TORCHATTN_KERNEL_AVX512_BF16_(AVX512_BF16, name), TORCHATTN_KERNEL_AVX512_(AVX512, name), \
      TORCHATTN_KERNEL_AVX2_(AVX2, name), &::torchattn::ops::cpu::DEFAULT::name)

/// The build of kernel `name` that runs now.
#define TORCHATTN_CAPABILITY_KERNEL(name)                                         \
  ::torchattn::ops::cpu::for_capability(                                          \
      TORCHATTN_KERNEL_AVX512_(AVX512, name), TORCHATTN_KERNEL_AVX2_(AVX2, name), \
      &::torchattn::ops::cpu::DEFAULT::name)
