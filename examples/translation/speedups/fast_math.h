#pragma once

// Elementwise functions written in plain arithmetic, so that loops over them vectorise under
// `#pragma omp simd` (and target_clones) without libm's vector variants.

#include <cmath>
#include <cstdint>
#include <cstring>

namespace translate {

/// e^x for x <= 0 within 2 ulp: x = n ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor
/// polynomial, 2^n put into the exponent. Below -87 it returns e^-87 (about 1.6e-38).
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/// 1 / (1 + e^-x) from e^-|x|, which never overflows.
inline float sigmoid(float x) {
  const float e = exp_nonpositive(-std::fabs(x));
  const float s = 1.0f / (1.0f + e);
  return x >= 0.0f ? s : e * s;
}

/// tanh x = (1 - e^-2|x|) / (1 + e^-2|x|) with the sign of x; absolute error about 1e-7.
inline float tanh(float x) {
  const float e = exp_nonpositive(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return x >= 0.0f ? t : -t;
}

} // namespace translate
