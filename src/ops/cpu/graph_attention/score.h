#pragma once

// graph_attention's score functions for its forward and backward (forward.cpp, backward.cpp),
// included after ops/cpu/vectorized.h. Each gets the query row of the destination and the key
// row of the source at one head, and computes in acc_t (float32 for bfloat16 and float16).

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace graph {

/// The type each score and sum is computed in: float64 for float64, float32 otherwise.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

/// x widened to acc_t. float16 goes through c10's bit-level conversion: c10::Half's own
/// operator uses F16C intrinsics on LibTorch 2.x, declared before this file's target switch,
/// which the default build cannot inline (as in flash_decoding/rows.h).
template <typename scalar_t>
inline acc_type<scalar_t> widen(scalar_t x) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    return c10::detail::fp16_ieee_to_fp32_value(x.x);
  } else {
    return acc_type<scalar_t>(x);
  }
}

/// x rounded to scalar_t (float16 by c10's bit-level conversion, as widen).
template <typename scalar_t>
inline scalar_t narrow(acc_type<scalar_t> x) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    return c10::Half(c10::detail::fp16_ieee_from_fp32_value(x), c10::Half::from_bits());
  } else {
    return scalar_t(x);
  }
}

/// Edges ahead of the one being read whose source (or destination) rows are prefetched: the
/// rows of a large graph are gathered from memory in random order, and each edge's work is too
/// short to hide the latency of its own loads.
constexpr int64_t kPrefetchEdges = 8;

/// Prefetches n elements from p into the cache, a line at a time.
template <typename scalar_t>
inline void prefetch_row(const scalar_t* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * static_cast<int64_t>(sizeof(scalar_t)); b += 64) {
    __builtin_prefetch(c + b);
  }
}

/// Prefetches the rows of a[idx[pos + kPrefetchEdges]] (na elements) and of b at the same
/// index (nb), where that edge exists: the rows an edge kPrefetchEdges ahead will read.
template <typename A, typename B>
inline void prefetch_ahead(
    const int64_t* idx, int64_t pos, int64_t E, const A* a, int64_t na, const B* b, int64_t nb) {
  if (pos + kPrefetchEdges < E) {
    const int64_t ahead = idx[pos + kPrefetchEdges];
    prefetch_row(a + ahead * na, na);
    prefetch_row(b + ahead * nb, nb);
  }
}

/// x[i] = exp(x[i]) for i < n, every element by the vector exp (Sleef's, 1 ulp, on the vector
/// builds), the tail too: a weight recomputed in another pass, from the same score, is the same
/// bits.
template <typename T>
inline void exp_inplace(T* x, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec::loadu(x + i).exp().store(x + i);
  }
  if (i < n) {
    Vec::loadu(x + i, n - i).exp().store(x + i, n - i);
  }
}

/// A row's softmax numerators in place: p[e, h] = exp(p[e, h] - m[h]) for deg edges of H heads.
template <typename T>
inline void exp_minus_max(T* p, const T* m, int64_t deg, int64_t H) {
  for (int64_t e = 0; e < deg; ++e) {
    for (int64_t h = 0; h < H; ++h) {
      p[e * H + h] -= m[h];
    }
  }
  exp_inplace(p, deg * H);
}

/// Σ_d a_d b_d in acc_t: vectorised where scalar_t computes in its own type.
template <typename scalar_t>
acc_type<scalar_t> dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  using acc_t = acc_type<scalar_t>;
  int64_t d = 0;
  acc_t sum = 0;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using Vec = at::vec::Vectorized<scalar_t>;
    if (n >= Vec::size()) {
      Vec acc(scalar_t(0));
      for (; d + Vec::size() <= n; d += Vec::size()) {
        acc = at::vec::fmadd(Vec::loadu(a + d), Vec::loadu(b + d), acc);
      }
      scalar_t lanes[Vec::size()];
      acc.store(lanes);
      for (const scalar_t lane : lanes) {
        sum += lane;
      }
    }
  }
  for (; d < n; ++d) {
    sum += widen(a[d]) * widen(b[d]);
  }
  return sum;
}

/// y_d += c x_d
template <typename scalar_t, typename acc_t>
void axpy(acc_t c, const scalar_t* x, acc_t* y, int64_t n) {
  for (int64_t d = 0; d < n; ++d) {
    y[d] += c * widen(x[d]);
  }
}

/// "dot": s = scale q·k.
template <typename scalar_t>
struct DotScore {
  using acc_t = acc_type<scalar_t>;
  static constexpr bool kHasWeight = false;
  acc_t scale;
  int64_t D;

  acc_t operator()(const scalar_t* q, const scalar_t* k, int64_t /*h*/) const {
    return scale * dot(q, k, D);
  }
  // gq += ds ∂s/∂q
  void grad_query(acc_t ds, const scalar_t* /*q*/, const scalar_t* k, int64_t, acc_t* gq) const {
    axpy(ds * scale, k, gq, D);
  }
  // gk += ds ∂s/∂k
  void grad_key(acc_t ds, const scalar_t* q, const scalar_t* /*k*/, int64_t, acc_t* gk) const {
    axpy(ds * scale, q, gk, D);
  }
  void grad_weight(acc_t, const scalar_t*, const scalar_t*, int64_t, double*) const {}
};

/// "additive": s = scale Σ_d w[h, d] leaky_relu(q_d + k_d). leaky_relu' is the slope at 0, as
/// in ATen's leaky_relu_backward.
template <typename scalar_t>
struct AdditiveScore {
  using acc_t = acc_type<scalar_t>;
  static constexpr bool kHasWeight = true;
  acc_t scale;
  acc_t slope;
  const scalar_t* weight; // [H, D]
  int64_t D;

  acc_t operator()(const scalar_t* q, const scalar_t* k, int64_t h) const {
    const scalar_t* w = weight + h * D;
    acc_t s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const acc_t u = widen(q[d]) + widen(k[d]);
      s += widen(w[d]) * (u > 0 ? u : slope * u);
    }
    return scale * s;
  }
  // ∂s/∂q_d = ∂s/∂k_d = scale w_d leaky_relu'(q_d + k_d)
  void grad_query(acc_t ds, const scalar_t* q, const scalar_t* k, int64_t h, acc_t* g) const {
    const scalar_t* w = weight + h * D;
    const acc_t c = ds * scale;
    for (int64_t d = 0; d < D; ++d) {
      const acc_t u = widen(q[d]) + widen(k[d]);
      g[d] += c * widen(w[d]) * (u > 0 ? acc_t(1) : slope);
    }
  }
  void grad_key(acc_t ds, const scalar_t* q, const scalar_t* k, int64_t h, acc_t* g) const {
    grad_query(ds, q, k, h, g);
  }
  // ∂s/∂w_d = scale leaky_relu(q_d + k_d), summed in float64: the sum runs over every edge.
  void grad_weight(acc_t ds, const scalar_t* q, const scalar_t* k, int64_t, double* g) const {
    const acc_t c = ds * scale;
    for (int64_t d = 0; d < D; ++d) {
      const acc_t u = widen(q[d]) + widen(k[d]);
      g[d] += c * (u > 0 ? u : slope * u);
    }
  }
};

/// Calls f(score) with the score functor of `args` for scalar_t.
template <typename scalar_t, typename F>
void with_score(const GraphScoreArgs& args, int64_t D, F&& f) {
  using acc_t = acc_type<scalar_t>;
  if (args.additive) {
    f(AdditiveScore<scalar_t>{
        acc_t(args.scale), acc_t(args.negative_slope), args.score_weight.data_ptr<scalar_t>(), D});
  } else {
    f(DotScore<scalar_t>{acc_t(args.scale), D});
  }
}

} // namespace graph
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
