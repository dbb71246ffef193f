#pragma once

// at::vec::Vectorized for the CPU capability this file is compiled for, in a .cpp that
// torchattn_add_cpu_capabilities (cmake/TorchattnHelpers.cmake) compiles once per capability.
//
// The instruction set is switched on with `#pragma GCC target` after every shared header, not
// with -m flags for the whole file: inline functions and templates that other files also use
// (std::vector, at::Tensor, c10) are then compiled for the baseline here too, so the linker
// cannot keep an AVX-512 copy of them for the whole library. Only what is defined after this
// header (at::vec in its CPU_CAPABILITY namespace, and the including file's code) uses the
// wider set. The including file ends with
//
//   #include "ops/cpu/vectorized_end.h"
//
// and includes nothing after this header but its kernel family's own headers (e.g.
// ops/cpu/flash_attention/*.h), which include nothing else.

// Everything that ATen/cpu/vec/vec.h includes, before the target switch. The list differs
// between LibTorch versions, hence __has_include.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/intrinsics.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <ATen/native/quantized/AffineQuantizerBase.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>
#include <c10/util/qint32.h>
#include <c10/util/qint8.h>
#include <c10/util/quint8.h>
#if __has_include(<ATen/NumericUtils.h>)
#include <ATen/NumericUtils.h>
#endif
#if __has_include(<c10/util/C++17.h>)
#include <c10/util/C++17.h>
#endif
#if __has_include(<c10/util/math_compat.h>)
#include <c10/util/math_compat.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <bitset>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <type_traits>
#include <vector>

// GCC 12's own _mm512_undefined_* helpers trip -W(maybe-)uninitialized (GCC bug 105593).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// Clang (the sanitizer and fuzzing builds) has no target pragma; its attribute pragma gives
// every function declared from here on the same target, to the matching pop in
// vectorized_end.h.
#if defined(TORCHATTN_CPU_AVX512_BF16)
#if defined(__clang__)
#pragma clang attribute push(                                                             \
    __attribute__((                                                                       \
        target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#endif
#elif defined(CPU_CAPABILITY_AVX512)
#if defined(__clang__)
#pragma clang attribute push(                                                             \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#endif
#elif defined(CPU_CAPABILITY_AVX2)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#endif

// sleef.h declares its vector functions only under the ISA macros (__AVX__, __AVX512F__),
// which GCC's C++ front end does not define for a target pragma: define them for it alone.
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#if !defined(__AVX__)
#define __AVX__ 1
#define TORCHATTN_UNDEF_AVX
#endif
#if !defined(__AVX2__)
#define __AVX2__ 1
#define TORCHATTN_UNDEF_AVX2
#endif
#if defined(CPU_CAPABILITY_AVX512) && !defined(__AVX512F__)
#define __AVX512F__ 1
#define TORCHATTN_UNDEF_AVX512F
#endif
#include <sleef.h>
#ifdef TORCHATTN_UNDEF_AVX
#undef __AVX__
#endif
#ifdef TORCHATTN_UNDEF_AVX2
#undef __AVX2__
#endif
#ifdef TORCHATTN_UNDEF_AVX512F
#undef __AVX512F__
#endif
#endif
#include <ATen/cpu/vec/vec.h>
