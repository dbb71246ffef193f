#pragma once

// The decoding kernel's inner steps on a block of keys: the scores of a group's query rows
// against them, and those rows' P V. Each key and value row is read from memory once per block
// and then serves every query row of the group (the query heads that share a kv head, times
// Lq): grouped-query attention costs the reads of its kv heads only.
//
// The cache is read in its own dtype: float32 and float64 as they are, bfloat16 and float16
// (C) widened to float32 (T) as each vector is loaded, so that a bfloat16 cache costs the reads
// of its own bytes, half of float32's.
//
// Part of the decoding kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/exp2.h"
#include "ops/cpu/flash_attention/rounding.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

// Keys per block. A block's keys are read as one stream, then its values as another: 1024 rows
// of 512 bytes each before switching. Blocks of 32 or 64 keys, alternating between the two
// streams every 16-32 KiB, read the cache about 25% slower (a loop that only loads showed the
// same). Scores of a block: 4 KiB per query row.
constexpr int64_t kDecodeKeys = 1024;
// Query rows scored together: their accumulators and one key vector stay in registers.
constexpr int64_t kDecodeRows = 4;

/// The sum of a vector's lanes.
template <typename T>
inline T lane_sum(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = 0;
  for (int64_t i = 0; i < Vectorized<T>::size(); ++i) {
    s += lanes[i];
  }
  return s;
}

/// The largest of a vector's lanes.
template <typename T>
inline T lane_max(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T m = lanes[0];
  for (int64_t i = 1; i < Vectorized<T>::size(); ++i) {
    m = std::max(m, lanes[i]);
  }
  return m;
}

/// x in T: itself, or a bfloat16/float16 widened to float32 by c10's bit-level conversions
/// (c10::Half's own operator uses F16C intrinsics on LibTorch 2.x, declared before this file's
/// target switch, which the default build cannot inline).
template <typename T, typename C>
inline T widen(C x) {
  if constexpr (std::is_same_v<T, C>) {
    return x;
  } else if constexpr (std::is_same_v<C, c10::Half>) {
    return c10::detail::fp16_ieee_to_fp32_value(x.x);
  } else {
    return c10::detail::f32_from_bits(x.x);
  }
}

/// n (<= W) elements of a cache row from p as a Vectorized<T>, zero beyond n; C is T itself or
/// bfloat16/float16 widened to T = float32.
template <typename T, typename C>
inline Vectorized<T> load_row(const C* p, int64_t n) {
  if constexpr (std::is_same_v<T, C>) {
    return Vectorized<T>::loadu(p, n);
  } else {
    T lanes[Vectorized<T>::size()] = {};
    for (int64_t i = 0; i < n; ++i) {
      lanes[i] = widen<T>(p[i]);
    }
    return Vectorized<T>::loadu(lanes);
  }
}

#if defined(CPU_CAPABILITY_AVX512)
/// The lanes `lanes` of 16 elements from p in float32 (float, bfloat16 or float16), zero in
/// the others.
template <typename C>
inline __m512 load16(const C* p, __mmask16 lanes) {
  if constexpr (std::is_same_v<C, float>) {
    return _mm512_maskz_loadu_ps(lanes, p);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(lanes, p);
    if constexpr (std::is_same_v<C, c10::BFloat16>) {
      // bfloat16 is float32's high half.
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(h);
    }
  }
}
#endif

/// W elements of a cache row from p as a Vectorized<T> (see load_row above).
template <typename T, typename C>
inline Vectorized<T> load_row(const C* p) {
  if constexpr (std::is_same_v<T, C>) {
    return Vectorized<T>::loadu(p);
  } else {
#if defined(CPU_CAPABILITY_AVX512)
    return load16(p, 0xFFFF);
#elif defined(CPU_CAPABILITY_AVX2)
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<C, c10::BFloat16>) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(h);
    }
#else
    return load_row<T>(p, Vectorized<T>::size());
#endif
  }
}

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline float lane_sum(const Vectorized<float>& v) {
  return _mm512_reduce_add_ps(v);
}

template <>
inline float lane_max(const Vectorized<float>& v) {
  return _mm512_reduce_max_ps(v);
}

/// The lane sums of 16 vectors in one: lane 4 r + c holds the sum of a[4 c + r]. A tree of
/// 15 shuffle-add steps (45 instructions) where 16 separate reductions take about 130.
inline __m512 lane_sums16(const __m512* a) {
  __m512 l1[8], l2[4], l3[2];
  for (int i = 0; i < 8; ++i) { // lanes 0-7 fold a[2i]'s halves, 8-15 a[2i + 1]'s
    l1[i] = _mm512_add_ps(
        _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) { // each 128-bit block: one input, 4 partial sums
    l2[i] = _mm512_add_ps(
        _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
        _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int i = 0; i < 2; ++i) { // each pair of lanes: one input, 2 partial sums
    l3[i] = _mm512_add_ps(
        _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm512_add_ps(
      _mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(2, 0, 2, 0)),
      _mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/// score_rows for 4 keys at once (float32, AVX-512): 16 accumulators (4 keys x up to 4 rows)
/// share each key vector and each query vector, and one lane_sums16 reduces them all.
template <typename C, int Rows>
inline void score_rows4(const float* q, int64_t Ep, const C* k, int64_t ks, int64_t E, float* s) {
  __m512 acc[16];
  for (auto& a : acc) {
    a = _mm512_setzero_ps();
  }
  const auto step = [&](int64_t e, __mmask16 lanes) {
    __m512 kv[4];
    for (int c = 0; c < 4; ++c) {
      kv[c] = load16(k + c * ks + e, lanes);
    }
    for (int r = 0; r < Rows; ++r) {
      const __m512 qv = _mm512_loadu_ps(q + r * Ep + e);
      for (int c = 0; c < 4; ++c) {
        acc[4 * c + r] = _mm512_fmadd_ps(qv, kv[c], acc[4 * c + r]);
      }
    }
  };
  int64_t e = 0;
  for (; e + 16 <= E; e += 16) {
    step(e, 0xFFFF);
  }
  if (e < E) {
    step(e, static_cast<__mmask16>((1u << (E - e)) - 1));
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, lane_sums16(acc));
  for (int r = 0; r < Rows; ++r) {
    std::memcpy(s + r * kDecodeKeys, sums + 4 * r, 4 * sizeof(float));
  }
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline float lane_sum(const Vectorized<float>& v) {
  const __m256 x = v;
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

/// Asks for n rows of `bytes` bytes each (row stride `stride` elements) to be brought into
/// cache ahead of their use: the loads of a block then find their lines on the way, and the
/// compute of one block overlaps the memory traffic of the next.
// Always inlined: GCC finds a separate function whose only effect is __builtin_prefetch
// "const" and deletes the calls to it (GCC 12).
template <typename T>
__attribute__((always_inline)) inline void prefetch_rows(
    const T* p, int64_t stride, int64_t n, int64_t bytes) {
  for (int64_t j = 0; j < n; ++j) {
    const char* row = reinterpret_cast<const char*>(p + j * stride);
    for (int64_t b = 0; b < bytes; b += 64) {
      __builtin_prefetch(row + b, /*rw=*/0, /*locality=*/2);
    }
  }
}

/// Rows of a later block to prefetch while this one is computed: n rows of `bytes` bytes at
/// stride `stride` from `rows` (none when rows is null).
template <typename T>
struct Prefetch {
  const T* rows = nullptr;
  int64_t stride = 0, n = 0, bytes = 0;
  __attribute__((always_inline)) void row(int64_t j) const {
    if (j < n) {
      prefetch_rows(rows + j * stride, stride, 1, bytes);
    }
  }
};

/// s[r * kDecodeKeys + j] = q_r · k_j for `rows` (<= kDecodeRows) query rows of q (row stride
/// Ep, E rounded up to whole vectors, zero beyond E) and nb keys of k (row stride ks).
template <typename T, typename C, int Rows>
inline void score_rows(
    const T* q, int64_t Ep, const C* k, int64_t ks, int64_t nb, int64_t E, T* s,
    const Prefetch<C>& pf) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t full = E / W * W;
  int64_t j = 0;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 4 <= nb; j += 4) {
      for (int64_t c = 0; c < 4; ++c) {
        pf.row(j + c);
      }
      score_rows4<C, Rows>(q, Ep, k + j * ks, ks, E, s + j);
    }
  }
#endif
  for (; j < nb; ++j) {
    pf.row(j);
    const C* kj = k + j * ks;
    Vec acc[Rows];
    for (int r = 0; r < Rows; ++r) {
      acc[r] = Vec(T(0));
    }
    for (int64_t e = 0; e < full; e += W) {
      const Vec kv = load_row<T>(kj + e);
      for (int r = 0; r < Rows; ++r) {
        acc[r] = at::vec::fmadd(Vec::loadu(q + r * Ep + e), kv, acc[r]);
      }
    }
    if (full < E) {
      const Vec kv = load_row<T>(kj + full, E - full);
      for (int r = 0; r < Rows; ++r) {
        acc[r] = at::vec::fmadd(Vec::loadu(q + r * Ep + full), kv, acc[r]);
      }
    }
    for (int r = 0; r < Rows; ++r) {
      s[r * kDecodeKeys + j] = lane_sum(acc[r]);
    }
  }
}

/// acc_r[e0, e0 + S W) += Σ_j p[r * kDecodeKeys + j] v_j[...] for Rows rows and S whole
/// vectors (n lanes of the last when n < W): rows x S independent FMA chains.
template <typename T, typename C, int Rows, int S>
inline void accumulate_slices(
    const T* p, const C* v, int64_t vs, int64_t nb, T* acc, int64_t Evp, int64_t n,
    const Prefetch<C>& pf) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec a[Rows][S];
  for (int r = 0; r < Rows; ++r) {
    for (int c = 0; c < S; ++c) {
      a[r][c] = Vec::loadu(acc + r * Evp + c * W);
    }
  }
  for (int64_t j = 0; j < nb; ++j) {
    pf.row(j);
    Vec vv[S];
    for (int c = 0; c < S; ++c) {
      vv[c] = n == W ? load_row<T>(v + j * vs + c * W) : load_row<T>(v + j * vs + c * W, n);
    }
    for (int r = 0; r < Rows; ++r) {
      const Vec pj(p[r * kDecodeKeys + j]);
      for (int c = 0; c < S; ++c) {
        a[r][c] = at::vec::fmadd(pj, vv[c], a[r][c]);
      }
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int c = 0; c < S; ++c) {
      a[r][c].store(acc + r * Evp + c * W);
    }
  }
}

/// acc_r += Σ_j p[r * kDecodeKeys + j] v_j for `rows` (<= kDecodeRows) rows of acc (row stride
/// Evp, Ev rounded up to whole vectors) and nb value rows of v (row stride vs). S vectors of
/// each row are accumulated together, so that rows x S independent FMA chains hide the FMA's
/// latency even for one row.
template <typename T, typename C, int Rows>
inline void accumulate_rows(
    const T* p, const C* v, int64_t vs, int64_t nb, int64_t Ev, T* acc, int64_t Evp,
    const Prefetch<C>& pf) {
  constexpr int64_t W = Vectorized<T>::size();
#if defined(CPU_CAPABILITY_AVX512)
  // 32 vector registers: 4 rows x 4 vectors of accumulators, 4 value vectors and a weight.
  constexpr int S = Rows >= 4 ? 4 : 8 / Rows;
#else
  constexpr int S = Rows >= 4 ? 2 : 8 / Rows;
#endif
  const Prefetch<C> none;
  int64_t e = 0;
  for (; e + S * W <= Ev; e += S * W) {
    accumulate_slices<T, C, Rows, S>(p, v + e, vs, nb, acc + e, Evp, W, e == 0 ? pf : none);
  }
  for (; e < Ev; e += W) {
    accumulate_slices<T, C, Rows, 1>(
        p, v + e, vs, nb, acc + e, Evp, std::min<int64_t>(W, Ev - e), e == 0 ? pf : none);
  }
}

/// Calls fn.template operator()<Rows>(r0) for each run of up to kDecodeRows rows in [0, rows).
template <typename Fn>
inline void for_row_runs(int64_t rows, Fn&& fn) {
  int64_t r = 0;
  for (; r + kDecodeRows <= rows; r += kDecodeRows) {
    fn(r, std::integral_constant<int, kDecodeRows>{});
  }
  switch (rows - r) {
    case 3:
      fn(r, std::integral_constant<int, 3>{});
      break;
    case 2:
      fn(r, std::integral_constant<int, 2>{});
      break;
    case 1:
      fn(r, std::integral_constant<int, 1>{});
      break;
    default:
      break;
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
