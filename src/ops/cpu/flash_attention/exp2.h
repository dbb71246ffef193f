#pragma once

// exp2 and the exponentials built on it, per vector build: exp(s - m) for the forward and
// backward's probabilities from the saved row statistics.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

template <typename T>
inline Vectorized<T> exp2_vec(const Vectorized<T>& x) {
  return x.map([](T v) { return std::exp2(v); });
}

#if defined(CPU_CAPABILITY_AVX512)
// 2^f on [0, 1): a weighted least-squares fit on Chebyshev nodes with p(0) = 1 exactly,
// relative error 8.2e-8 (1.8e-7 with float32 rounding). exp2(0) = 1 exactly keeps a row
// whose weight is all on one key exact: P = 1 there, and backward's dS = P (dP - delta) = 0.
constexpr float kExp2C0 = 1.0f;
constexpr float kExp2C1 = 0.6931513118102497f;
constexpr float kExp2C2 = 0.24016445011309273f;
constexpr float kExp2C3 = 0.055799913207729396f;
constexpr float kExp2C4 = 0.009017030216799823f;
constexpr float kExp2C5 = 0.001867130107867196f;

template <>
inline Vectorized<float> exp2_vec(const Vectorized<float>& v) {
  // reduce gives f = x - floor(x) in one instruction, and scalef multiplies by 2^floor(x)
  // itself. No clamp is needed: reduce(-inf) is 0 and scalef(p, -inf) exactly 0, large
  // negative x underflows to 0, and NaN propagates through both.
  const __m512 x = v;
  const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kExp2C5), f, _mm512_set1_ps(kExp2C4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C0));
  return _mm512_scalef_ps(p, x);
}
#elif defined(CPU_CAPABILITY_AVX2)
// 2^f on [-0.5, 0.5]: as above with p(0) = 1 exactly, relative error 9.1e-8 (1.9e-7 with
// float32 rounding).
constexpr float kExp2C0 = 1.0f;
constexpr float kExp2C1 = 0.6931469775984711f;
constexpr float kExp2C2 = 0.24022242084919188f;
constexpr float kExp2C3 = 0.055507337442448595f;
constexpr float kExp2C4 = 0.009671512660562782f;
constexpr float kExp2C5 = 0.0013264726898925931f;

template <>
inline Vectorized<float> exp2_vec(const Vectorized<float>& v) {
  // Below -127 the biased exponent is 0 and the result exactly 0; NaN propagates through f.
  const __m256 x = _mm256_max_ps(_mm256_set1_ps(-127.f), v);
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kExp2C5), f, _mm256_set1_ps(kExp2C4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C0));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

/// tanh, for the soft-cap: ATen's (Sleef's) where no faster one is as exact.
template <typename T>
inline Vectorized<T> tanh_vec(const Vectorized<T>& x) {
  return x.tanh();
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
/// tanh for float32 within 2.5 ulp (Sleef's u10: 1 ulp, at about four times the cost, which
/// made the soft-cap 1.5x the time of plain attention): below |x| = 0.55 the Taylor series to
/// x^19 (its next term is under 3e-8 of x); above, (e - 1) / (e + 1) with e = exp(2|x|), whose
/// error in e shrinks by 2e / (e² - 1) < 0.9, and |x| clamped at 9, where tanh rounds to 1.
template <>
inline Vectorized<float> tanh_vec(const Vectorized<float>& x) {
  using Vec = Vectorized<float>;
  const Vec ax = x.abs();
  const Vec e = exp2_vec(at::vec::minimum(ax, Vec(9.f)) * Vec(2.8853900817779268f)); // 2 log2(e)
  const Vec big = (e - Vec(1.f)) / (e + Vec(1.f));
  const Vec x2 = x * x;
  // Taylor coefficients of tanh(x) / x - 1 in x², highest first.
  Vec p(-0.00023912911424354f); // -443861162 / 1856156927625 (x^19)
  for (float c :
       {0.00059002744094559f, -0.00145583438705131f, 0.00359212803657248f, -0.00886323552990220f,
        0.02186948853615520f, -0.05396825396825397f, 0.13333333333333333f, -0.33333333333333333f}) {
    p = at::vec::fmadd(p, x2, Vec(c));
  }
  const Vec small = at::vec::fmadd(p * x2, x, x);
  const Vec signed_big = Vec::blendv(big, Vec(0.f) - big, x < Vec(0.f));
  return Vec::blendv(signed_big, small, ax < Vec(0.55f));
}
#endif

/// exp(s - m): the difference first (exact near the max, finite wherever s and m are), then
/// the log2 domain.
template <typename T>
inline Vectorized<T> exp_minus(const Vectorized<T>& s, const Vectorized<T>& m) {
  return exp2_vec((s - m) * Vectorized<T>(static_cast<T>(kLog2e)));
}

/// Backward's probability exp(s - m - log_sum) from the forward's row statistics, with
/// log2_sum = log_sum * log2(e).
template <typename T>
inline Vectorized<T> probability(
    const Vectorized<T>& s, const Vectorized<T>& m, const Vectorized<T>& log2_sum) {
  return exp2_vec((s - m) * Vectorized<T>(static_cast<T>(kLog2e)) - log2_sum);
}

/// Lane-wise max(a, b) without at::vec::maximum's NaN blend, which sits on the dependency
/// chain of a running max. A NaN score need not reach the max: it reaches the row's sum
/// through exp2 and makes that row NaN there.
template <typename T>
inline Vectorized<T> max_fast(const Vectorized<T>& a, const Vectorized<T>& b) {
  return at::vec::maximum(a, b);
}

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> max_fast(const Vectorized<float>& a, const Vectorized<float>& b) {
  return _mm512_max_ps(a, b);
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline Vectorized<float> max_fast(const Vectorized<float>& a, const Vectorized<float>& b) {
  return _mm256_max_ps(a, b);
}
#endif

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
