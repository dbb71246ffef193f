// The fused attention kernel: tiles of queries x keys, an online softmax and each row's softmax
// statistics saved for a backward pass that recomputes the scores per tile. No buffer grows with Lq x Lk. The
// forward computes its score tiles transposed (keys x queries, see forward_impl); backward
// packs each head's operands once and works on queries x keys tiles.
//
// This file is compiled once per CPU capability: CMake defines CPU_CAPABILITY (DEFAULT, AVX2,
// AVX512) and CPU_CAPABILITY_<name>, as ATen does for its own kernels, so at::vec::Vectorized
// is 16 floats wide in the AVX512 build and 8 in the others.
//
// ops/cpu/vectorized.h switches the instruction set on for this file's code only.
//
// Scores are those of the math path, (q * scale) kᵀ + mask, rounded as it rounds them: every
// finite score counts, however large (a -1e30 mask row is a uniform row, not a masked one).
// Each exponential takes the difference from the row's max first and converts it to the log2
// domain after, exp2((s - m) * log2(e)), which cannot overflow where s and m are finite and
// loses nothing where |s| is huge. exp2 is computed from the fractional part, a degree-5
// polynomial and an exponent scaling.
//
// The forward saves each row's max m and log(sum of exp(s - m)) apart: their sum, the
// logsumexp, would round away the sum where |m| is large (|m| = 1e30 keeps no digit of
// log 7), and backward's P = exp(s - m - log_sum) needs both exactly.

#include "ops/cpu/flash_attention_kernel.h"

#include "ops/cpu/vectorized.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Register blocking of the micro-kernel: kMaxRows rows x kMaxVecs vectors of C live in
// registers while the K loop streams one row of B and broadcasts one element of A per row.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kMaxRows = 6; // 24 accumulators + 4 B vectors + 1 broadcast of 32 zmm
constexpr int kMaxVecs = 4;
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int kMaxRows = 4; // 12 accumulators + 3 B vectors + 1 broadcast of 16 ymm
constexpr int kMaxVecs = 3;
#else
constexpr int kMaxRows = 4;
constexpr int kMaxVecs = 2;
#endif

// Query rows and keys per tile. Measured at B=1, H=8, E=64, N=4096 (AVX-512, 2 threads):
// 48..144 rows x 128..256 keys are within 3% of each other (noise); 512 keys is 4% slower
// (the score tile leaves L2's sweet spot). 96 rows is a multiple of the 6-row micro-kernel.
// Backward uses 96 rows; the forward's transposed tile has its queries as columns, and 128
// is two 64-float panels there. Forward tiles of 96, 128 and 192 queries x 252 and 256 keys
// measured again with the epilogue softmax: within 3% (noise); the forward takes its keys in
// whole micro-kernel row blocks (252 on AVX-512), so no block is a short tail.
constexpr int64_t kBlockQBackward = 96;
constexpr int64_t kBlockQForward = 128; // columns of the transposed score tile: two panels
constexpr int64_t kBlockKTarget = 256; // rounded down to a multiple of the panel width

// Backward splits the key tiles of each head into chunks until there are this many work items
// (heads x chunks): enough for 16 threads.
constexpr int64_t kSplitWorkers = 16;

// The micro-kernel sums K in chunks of this many terms, each from zero (see micro_kernel).
constexpr int64_t kChunkK = 256;

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;
// How far new scores may exceed the forward's running max before it is raised: weights up to
// 2^8.
constexpr double kLazyRescale = 8 * kLn2;

int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// ---- exp2 -----------------------------------------------------------------------------------

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
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
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
inline Vectorized<T> probability(const Vectorized<T>& s, const Vectorized<T>& m,
                                 const Vectorized<T>& log2_sum) {
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

// ---- small GEMM -----------------------------------------------------------------------------

/// What a micro-kernel does with its finished block of C: here, store it. Other epilogues
/// (below) also work on the block while it is still in registers; row0 and col0 place it in C.
struct StoreC {
  template <typename V, int MR, int NV>
  void operator()(V (&acc)[MR][NV], typename V::value_type* c, int64_t ldc, int64_t /*row0*/,
                  int64_t /*col0*/) const {
    constexpr int W = V::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        acc[i][n].store(c + i * ldc + n * W);
      }
    }
  }
};

/// Stores acc into C and zeroes it: the running total of micro_kernel's earlier K chunks.
template <int MR, int NV, typename V>
inline void store_block(V (&acc)[MR][NV], typename V::value_type* c, int64_t ldc) {
  constexpr int W = V::size();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[i][n].store(c + i * ldc + n * W);
      acc[i][n] = V(typename V::value_type(0));
    }
  }
}

// C[MR, NV*W] (+)= A[MR, K] B[K, NV*W], with A(i, k) = a[i * a_rs + k * a_ks] (so A may be a
// transposed view) and row k of B at b + k * ldb; `epi` then writes the block.
template <typename T, int MR, int NV, typename Epi>
inline void micro_kernel(
    int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb, T* c,
    int64_t ldc, bool accumulate, const Epi& epi, int64_t row0, int64_t col0) {
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  Vec acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[i][n] = accumulate ? Vec::loadu(c + i * ldc + n * W) : Vec(T(0));
    }
  }
  for (int64_t k0 = 0; k0 < K; k0 += kChunkK) {
    const int64_t k_end = std::min(K, k0 + kChunkK);
    if (k0 > 0) {
      // The running total waits in C while this chunk sums from zero (two-level summation,
      // as BLAS kernels sum per K block): a long dot product (E = 4096) then errs as a
      // 256-term sum plus a short one, not as one 4096-term chain.
      store_block<MR, NV>(acc, c, ldc);
    }
    for (int64_t k = k0; k < k_end; ++k) {
      const T* bk = b + k * ldb;
      const T* ak = a + k * a_ks;
      Vec bv[NV];
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        bv[n] = Vec::loadu(bk + n * W);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const Vec ai(ak[i * a_rs]);
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) {
          acc[i][n] = at::vec::fmadd(ai, bv[n], acc[i][n]);
        }
      }
    }
    if (k0 > 0) {
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) {
          acc[i][n] = acc[i][n] + Vec::loadu(c + i * ldc + n * W);
        }
      }
    }
  }
  epi(acc, c, ldc, row0, col0);
}

template <typename T, int NV, typename Epi, int MR = kMaxRows - 1>
inline void tail_rows(
    int64_t rows, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
    T* c, int64_t ldc, bool accumulate, const Epi& epi, int64_t row0, int64_t col0) {
  if constexpr (MR >= 1) {
    if (rows == MR) {
      micro_kernel<T, MR, NV>(K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, row0, col0);
    } else {
      tail_rows<T, NV, Epi, MR - 1>(rows, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi,
                                    row0, col0);
    }
  }
}

template <typename T, int NV, typename Epi>
void column_panel(
    int64_t M, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
    T* c, int64_t ldc, bool accumulate, const Epi& epi, int64_t col0) {
  int64_t i = 0;
  for (; i + kMaxRows <= M; i += kMaxRows) {
    micro_kernel<T, kMaxRows, NV>(K, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc,
                                  accumulate, epi, i, col0);
  }
  if (i < M) {
    tail_rows<T, NV>(M - i, K, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc, accumulate,
                     epi, i, col0);
  }
}

template <typename T, typename Epi, int NV = kMaxVecs>
inline void dispatch_panel(
    int nv, int64_t M, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
    int64_t ldb, T* c, int64_t ldc, bool accumulate, const Epi& epi, int64_t col0) {
  if constexpr (NV >= 1) {
    if (nv == NV) {
      column_panel<T, NV>(M, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, col0);
    } else {
      dispatch_panel<T, Epi, NV - 1>(nv, M, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi,
                                     col0);
    }
  }
}

/// Columns per B panel: the width of one micro-kernel call.
template <typename T>
constexpr int64_t panel_width() {
  return kMaxVecs * Vectorized<T>::size();
}

/// Keys per forward tile: the rows of S^T, a whole number of micro-kernel row blocks.
constexpr int64_t forward_block_k() {
  return kBlockKTarget / kMaxRows * kMaxRows;
}

/// Keys per tile: a whole number of panels, since tiles index the panel-packed keys.
template <typename T>
constexpr int64_t block_k() {
  return kBlockKTarget / panel_width<T>() * panel_width<T>();
}

// C[M, N] (+)= A[M, K] B[K, N]; N is a multiple of the vector width (callers pad). B is read
// in panels of panel_width() columns: element (k, n) at
// b + (n / panel_width) * b_panel + k * ldb + n % panel_width. A row-major B has
// b_panel = panel_width; a panel-packed one (each panel's K rows contiguous) has
// b_panel = K * panel_width and ldb = panel_width, so a panel streams through L1 whatever
// the length of the rows it came from.
template <typename T, typename Epi = StoreC>
void gemm(
    int64_t M, int64_t N, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
    int64_t ldb, int64_t b_panel, T* c, int64_t ldc, bool accumulate, const Epi& epi = {}) {
  constexpr int W = Vectorized<T>::size();
  TORCH_INTERNAL_ASSERT(N % W == 0, "gemm: N=", N, " is not a multiple of ", W);
  const int64_t vecs = N / W;
  for (int64_t v0 = 0; v0 < vecs; v0 += kMaxVecs) {
    const int nv = static_cast<int>(std::min<int64_t>(kMaxVecs, vecs - v0));
    dispatch_panel<T>(nv, M, K, a, a_rs, a_ks, b + (v0 / kMaxVecs) * b_panel, ldb, c + v0 * W,
                      ldc, accumulate, epi, v0 * W);
  }
}

/// Stores the block and folds its column maxima into colmax[col]: the forward's S^T tile and
/// its per-query maxima in one pass, while the block is in registers.
template <typename T>
struct StoreAndColumnMax {
  T* colmax;

  template <int MR, int NV>
  void operator()(Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0,
                  int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
    StoreC{}(acc, c, ldc, row0, col0);
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      Vec m = acc[0][n];
#pragma GCC unroll 8
      for (int i = 1; i < MR; ++i) {
        m = max_fast(m, acc[i][n]);
      }
      T* p = colmax + col0 + n * W;
      max_fast(Vec::loadu(p), m).store(p);
    }
  }
};

/// Stores exp(C - m_ref[col]) and folds the block's column maxima (of C) into colmax and its
/// column sums (of the stored values) into colsum: the forward's lazily rescaled softmax.
template <typename T>
struct StoreExp2Columns {
  const T* m_ref;
  T* colmax;
  T* colsum;

  template <int MR, int NV>
  void operator()(Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t /*row0*/,
                  int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      const int64_t col = col0 + n * W;
      const Vec ref = Vec::loadu(m_ref + col);
      Vec mx = acc[0][n];
      Vec sum(T(0));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        mx = max_fast(mx, acc[i][n]);
        const Vec e = exp_minus(acc[i][n], ref);
        e.store(c + i * ldc + n * W);
        sum = sum + e;
      }
      max_fast(Vec::loadu(colmax + col), mx).store(colmax + col);
      (Vec::loadu(colsum + col) + sum).store(colsum + col);
    }
  }
};

/// Stores exp2((C - max[row]) * log2(e) - log2_sum[row]): the backward's probabilities from
/// the forward's row statistics (log2_sum = log_sum * log2(e)).
template <typename T>
struct StoreExp2 {
  const T* max;
  const T* log2_sum;

  template <int MR, int NV>
  void operator()(Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0,
                  int64_t /*col0*/) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec m(max[row0 + i]), ls(log2_sum[row0 + i]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        probability(acc[i][n], m, ls).store(c + i * ldc + n * W);
      }
    }
  }
};

/// Stores P * (C - delta[row]) with P laid out as C (same ld): the softmax gradient dS from
/// dP = dO Vᵀ while dP is in registers.
template <typename T>
struct StoreSoftmaxGrad {
  const T* probs;
  const T* delta;

  template <int MR, int NV>
  void operator()(Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0,
                  int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec dl(delta[row0 + i]);
      const T* pr = probs + (row0 + i) * ldc + col0;
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        (Vec::loadu(pr + n * W) * (acc[i][n] - dl)).store(c + i * ldc + n * W);
      }
    }
  }
};

// ---- row operations -------------------------------------------------------------------------

/// The 4-D mask view [B, H, Lq, Lk] with its strides, or none.
struct MaskView {
  const void* data = nullptr;
  bool is_bool = false;
  int64_t stride[4] = {0, 0, 0, 0};

  explicit MaskView(const at::Tensor& mask) {
    if (!mask.defined()) {
      return;
    }
    data = mask.data_ptr();
    is_bool = mask.scalar_type() == at::kBool;
    for (int d = 0; d < 4; ++d) {
      stride[d] = mask.stride(d);
    }
  }
};

/// Masks one row of scores s[0, width): adds the additive mask as the forward adds it, and
/// sets -inf where the bool mask forbids, where causal forbids (keys after `last_key`) and on
/// the padding columns [valid, width).
template <typename T>
void prepare_row(
    T* s, int64_t valid, int64_t width, const MaskView& mask, int64_t b, int64_t h, int64_t i,
    int64_t j0, int64_t last_key) {
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  int64_t end = std::min(valid, last_key - j0 + 1);
  end = std::max<int64_t>(end, 0);
  if (mask.data != nullptr) {
    const int64_t off = b * mask.stride[0] + h * mask.stride[1] + i * mask.stride[2] + j0 * mask.stride[3];
    const int64_t sk = mask.stride[3];
    if (mask.is_bool) {
      const bool* row = static_cast<const bool*>(mask.data) + off;
      for (int64_t j = 0; j < end; ++j) {
        if (!row[j * sk]) {
          s[j] = neg_inf<T>();
        }
      }
    } else {
      const T* row = static_cast<const T*>(mask.data) + off;
      if (sk == 1) {
        int64_t j = 0;
        for (; j + W <= end; j += W) {
          (Vec::loadu(s + j) + Vec::loadu(row + j)).store(s + j);
        }
        for (; j < end; ++j) {
          s[j] += row[j];
        }
      } else {
        for (int64_t j = 0; j < end; ++j) {
          s[j] += row[j * sk];
        }
      }
    }
  }
  std::fill(s + end, s + width, neg_inf<T>());
}

// ---- packing --------------------------------------------------------------------------------

/// dst[r, c] = src[r * rs + c * cs] for r < rows, c < cols, in a [rows, ld] buffer whose
/// columns [cols, ld) are zero.
template <typename T>
void pack(const T* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, T* dst, int64_t ld, T mul = T(1)) {
  for (int64_t r = 0; r < rows; ++r) {
    T* d = dst + r * ld;
    const T* s = src + r * rs;
    if (cs == 1 && mul == T(1)) {
      std::copy(s, s + cols, d);
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        d[c] = s[c * cs] * mul;
      }
    }
    std::fill(d + cols, d + ld, T(0));
  }
}

/// The transpose of src [rows, cols] (element (r, c) at src[r * rs + c * cs]) in panels of
/// `pw` rows: dst[(r / pw) * cols * pw + c * pw + r % pw], zero for rows up to a multiple of pw.
template <typename T>
void pack_transposed_panels(const T* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, T* dst, int64_t pw) {
  const int64_t panels = (rows + pw - 1) / pw;
  for (int64_t p = 0; p < panels; ++p) {
    T* panel = dst + p * cols * pw;
    const int64_t r0 = p * pw;
    const int64_t n = std::min(pw, rows - r0);
    for (int64_t c = 0; c < cols; ++c) {
      T* d = panel + c * pw;
      const T* s = src + r0 * rs + c * cs;
      for (int64_t r = 0; r < n; ++r) {
        d[r] = s[r * rs];
      }
      std::fill(d + n, d + pw, T(0));
    }
  }
}

/// Rows of a 2-D view (element (r, c) at src[r * rs + c * cs]) for a B operand: the view
/// itself when its rows are contiguous and a whole number of vectors long, else a zero-padded
/// copy in `buf`. Returns the rows and sets `ld` to their stride.
template <typename T>
const T* rows_of(const T* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                 std::unique_ptr<T[]>& buf, int64_t& ld) {
  constexpr int W = Vectorized<T>::size();
  if (cs == 1 && cols % W == 0) {
    ld = rs;
    return src;
  }
  ld = round_up(cols, W);
  buf.reset(new T[static_cast<size_t>(rows * ld)]);
  pack(src, rows, cols, rs, cs, buf.get(), ld);
  return buf.get();
}

struct Dims {
  int64_t B, H, Lq, Lk, E, Ev;
  int64_t BH() const { return B * H; }
};

Dims dims_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
}

/// Element offset of [b, h, 0, 0] in a 4-D tensor.
int64_t head_offset(const at::Tensor& t, int64_t bh, int64_t H) {
  return (bh / H) * t.stride(0) + (bh % H) * t.stride(1);
}

/// Runs fn(item, scratch) for item in [0, count) on every thread, taking items in order from a
/// shared counter so that uneven items (causal tiles) balance.
template <typename Fn>
void parallel_items(int64_t count, Fn&& fn) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), count);
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      for (int64_t item = next++; item < count; item = next++) {
        fn(item);
      }
    }
  });
}

// ---- forward --------------------------------------------------------------------------------

// Scores are computed transposed, keys x queries: S^T = K Q^T takes the keys as they are (one
// broadcast element of a key row per step) and only the query tile is transposed, so the
// forward copies nothing of size Lk. The softmax then runs down the columns, one vector of
// queries at a time, with no horizontal reduction.

/// S^T[j, i] for keys j0 + j and queries i0 + i: the bool mask's false and the causal mask's
/// forbidden entries become -inf, the additive mask is added.
template <typename T>
void mask_transposed(
    T* st, int64_t ld, int64_t nk, int64_t nq, const MaskView& mask, int64_t b, int64_t h,
    int64_t i0, int64_t j0, bool causal) {
  for (int64_t j = 0; j < nk; ++j) {
    T* row = st + j * ld;
    if (mask.data != nullptr) {
      const int64_t off = b * mask.stride[0] + h * mask.stride[1] + i0 * mask.stride[2] +
          (j0 + j) * mask.stride[3];
      const int64_t si = mask.stride[2];
      if (mask.is_bool) {
        const bool* m = static_cast<const bool*>(mask.data) + off;
        for (int64_t i = 0; i < nq; ++i) {
          if (!m[i * si]) {
            row[i] = neg_inf<T>();
          }
        }
      } else {
        const T* m = static_cast<const T*>(mask.data) + off;
        for (int64_t i = 0; i < nq; ++i) {
          row[i] += m[i * si];
        }
      }
    }
    if (causal) {
      // Query i0 + i sees key j0 + j only when j0 + j <= i0 + i.
      const int64_t first_allowed = std::min(std::max<int64_t>(j0 + j - i0, 0), nq);
      std::fill(row, row + first_allowed, neg_inf<T>());
    }
  }
}

template <typename T>
void forward_impl(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& mask_tensor, const FlashArgs& args, at::Tensor& out, at::Tensor& row_max,
    at::Tensor& row_log_sum) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  const Dims d = dims_of(query, key, value);
  constexpr int64_t PW = panel_width<T>();
  constexpr int64_t BK = forward_block_k();
  constexpr int64_t BQ = (kBlockQForward + W - 1) / W * W; // columns of S^T
  const int64_t Ev_pad = round_up(d.Ev, W);
  const MaskView mask(mask_tensor);
  const T* q = query.data_ptr<T>();
  const T* k = key.data_ptr<T>();
  const T* v = value.data_ptr<T>();
  T* o = out.data_ptr<T>();
  T* max_data = row_max.data_ptr<T>();
  T* log_sum_data = row_log_sum.data_ptr<T>();

  const int64_t q_tiles = (d.Lq + kBlockQForward - 1) / kBlockQForward;
  // Values as rows: the tensor itself when its rows are contiguous whole vectors, else a copy
  // per head, made by the head's first tile and freed by its last (tiles are taken head by
  // head, so about one head per thread is copied at a time).
  struct Head {
    std::once_flag packed;
    std::atomic<int64_t> tiles_left{0};
    std::unique_ptr<T[]> value_p;
    const T* value_rows = nullptr; // value_p or value itself
    int64_t ld_v = 0;
  };
  std::unique_ptr<Head[]> heads(new Head[static_cast<size_t>(d.BH())]);
  for (int64_t bh = 0; bh < d.BH(); ++bh) {
    heads[bh].tiles_left = q_tiles;
  }
  auto pack_head = [&](Head& head, int64_t bh) {
    head.value_rows = rows_of(v + head_offset(value, bh, d.H), d.Lk, d.Ev, value.stride(2),
                              value.stride(3), head.value_p, head.ld_v);
  };

  const T q_mul = static_cast<T>(args.scale);
  parallel_items(d.BH() * q_tiles, [&](int64_t item) {
    // Largest causal tiles (last queries) first.
    const int64_t bh = item / q_tiles;
    const int64_t qt = q_tiles - 1 - item % q_tiles;
    const int64_t b = bh / d.H, h = bh % d.H;
    const int64_t i0 = qt * kBlockQForward;
    const int64_t nq = std::min(kBlockQForward, d.Lq - i0);
    const int64_t nq_pad = round_up(nq, W);
    // A local copy: the vector stores may alias anything, so a captured reference would be
    // reloaded after each of them.
    const int64_t ev_pad = Ev_pad;

    thread_local std::vector<T> q_t, scores, acc, m_run, l_run, col_max, col_sum;
    q_t.resize(static_cast<size_t>(d.E * BQ));
    scores.resize(static_cast<size_t>(BK * BQ));
    col_max.resize(static_cast<size_t>(BQ));
    col_sum.resize(static_cast<size_t>(BQ));
    acc.assign(static_cast<size_t>(BQ * ev_pad), T(0));
    m_run.assign(static_cast<size_t>(BQ), neg_inf<T>());
    l_run.assign(static_cast<size_t>(BQ), T(0));

    // The query tile transposed [E, nq_pad], times the scale as the math path scales it, zero
    // padded.
    const T* q_tile = q + head_offset(query, bh, d.H) + i0 * query.stride(2);
    pack(q_tile, d.E, nq, query.stride(3), query.stride(2), q_t.data(), nq_pad, q_mul);
    Head& head = heads[bh];
    std::call_once(head.packed, pack_head, head, bh);
    const T* k_head = k + head_offset(key, bh, d.H);
    const T* vp = head.value_rows;
    const int64_t ld_v = head.ld_v;

    // Whether every query has a finite running max, so that unmasked tiles may take exp2
    // against it (lazy rescaling, below).
    bool m_ready = false;
    const int64_t j_end = args.is_causal ? std::min(d.Lk, i0 + nq) : d.Lk;
    for (int64_t j0 = 0; j0 < j_end; j0 += BK) {
      const int64_t nk = std::min(BK, j_end - j0);
      T* st = scores.data();
      T* cm = col_max.data();
      T* cs = col_sum.data();
      const Vec ninf(neg_inf<T>());
      const T* k_tile = k_head + j0 * key.stride(2);
      // S^T for the W queries from column c on, raw.
      auto scores_strip = [&](int64_t c) {
        gemm<T>(nk, W, d.E, k_tile, key.stride(2), key.stride(3), q_t.data() + c, nq_pad, PW,
                st + c, BQ, /*accumulate=*/false);
      };
      // Column maxima of strip c, on independent chains: bound by throughput, not by the
      // latency of max.
      auto max_strip = [&](int64_t c) {
        Vec mx0 = ninf, mx1 = ninf, mx2 = ninf, mx3 = ninf;
        int64_t j = 0;
        for (; j + 4 <= nk; j += 4) {
          const T* p = st + j * BQ + c;
          mx0 = max_fast(mx0, Vec::loadu(p));
          mx1 = max_fast(mx1, Vec::loadu(p + BQ));
          mx2 = max_fast(mx2, Vec::loadu(p + 2 * BQ));
          mx3 = max_fast(mx3, Vec::loadu(p + 3 * BQ));
        }
        for (; j < nk; ++j) {
          mx0 = max_fast(mx0, Vec::loadu(st + j * BQ + c));
        }
        max_fast(max_fast(mx0, mx1), max_fast(mx2, mx3)).store(cm + c);
      };
      // The online-softmax step of strip c from its column maxima: a new running max, exp2
      // against it, the sums, and the accumulator rows rescaled.
      auto softmax_strip = [&](int64_t c) {
        const Vec m_old = Vec::loadu(m_run.data() + c);
        const Vec m_new = at::vec::maximum(Vec::loadu(cm + c), m_old);
        // Queries with no key allowed yet subtract 0 instead of -inf: their weights stay 0
        // and their alpha is exp2(-inf) = 0 on an accumulator that is still 0.
        const Vec m_use = Vec::blendv(m_new, Vec(T(0)), m_new == ninf);
        const Vec alpha = exp_minus(m_old, m_use);
        // Two sums: two chains hide the add latency.
        Vec sum0(T(0)), sum1(T(0));
        int64_t j = 0;
        for (; j + 2 <= nk; j += 2) {
          T* p = st + j * BQ + c;
          const Vec e0 = exp_minus(Vec::loadu(p), m_use);
          const Vec e1 = exp_minus(Vec::loadu(p + BQ), m_use);
          e0.store(p);
          e1.store(p + BQ);
          sum0 = sum0 + e0;
          sum1 = sum1 + e1;
        }
        if (j < nk) {
          T* p = st + j * BQ + c;
          const Vec e = exp_minus(Vec::loadu(p), m_use);
          e.store(p);
          sum0 = sum0 + e;
        }
        at::vec::fmadd(Vec::loadu(l_run.data() + c), alpha, sum0 + sum1).store(l_run.data() + c);
        m_new.store(m_run.data() + c);
        T alphas[Vec::size()];
        alpha.store(alphas);
        for (int64_t r = 0; r < W && c + r < nq; ++r) {
          if (alphas[r] != T(1)) {
            T* a = acc.data() + (c + r) * ev_pad;
            const Vec va(alphas[r]);
            for (int64_t e = 0; e < ev_pad; e += W) {
              (Vec::loadu(a + e) * va).store(a + e);
            }
          }
        }
      };

      if (mask.data != nullptr || (args.is_causal && j0 + nk - 1 > i0)) {
        // A mask touches the tile: maxima after masking, in a pass of their own.
        gemm<T>(nk, nq_pad, d.E, k_tile, key.stride(2), key.stride(3), q_t.data(), nq_pad, PW,
                st, BQ, /*accumulate=*/false);
        mask_transposed(st, BQ, nk, nq, mask, b, h, i0, j0, args.is_causal);
        for (int64_t c = 0; c < nq_pad; c += W) {
          max_strip(c);
          softmax_strip(c);
        }
      } else if (!m_ready) {
        // The maxima come from the micro-kernel's registers.
        std::fill(cm, cm + nq_pad, neg_inf<T>());
        gemm<T>(nk, nq_pad, d.E, k_tile, key.stride(2), key.stride(3), q_t.data(), nq_pad, PW,
                st, BQ, /*accumulate=*/false, StoreAndColumnMax<T>{cm});
        for (int64_t c = 0; c < nq_pad; c += W) {
          softmax_strip(c);
        }
      } else {
        // Lazy rescaling: exp2 against the running max, in the micro-kernel's epilogue, with
        // the sums and the new maxima. The running max stays unless a strip's scores exceed
        // it by more than kLazyRescale (weights up to 2^kLazyRescale are harmless); such a
        // strip is recomputed and takes the step above.
        std::fill(cm, cm + nq_pad, neg_inf<T>());
        std::fill(cs, cs + nq_pad, T(0));
        gemm<T>(nk, nq_pad, d.E, k_tile, key.stride(2), key.stride(3), q_t.data(), nq_pad, PW,
                st, BQ, /*accumulate=*/false, StoreExp2Columns<T>{m_run.data(), cm, cs});
        for (int64_t c = 0; c < nq_pad; c += W) {
          bool exceeds = false;
          for (int64_t r = 0; r < W; ++r) {
            exceeds = exceeds || !(cm[c + r] <= m_run[c + r] + static_cast<T>(kLazyRescale));
          }
          if (exceeds) {
            scores_strip(c);
            max_strip(c);
            softmax_strip(c);
          } else {
            (Vec::loadu(l_run.data() + c) + Vec::loadu(cs + c)).store(l_run.data() + c);
          }
        }
      }
      // O [nq, ev_pad] += P V, with P read through S^T
      gemm<T>(nq, ev_pad, nk, st, 1, BQ, vp + j0 * ld_v, ld_v, PW, acc.data(), ev_pad,
              /*accumulate=*/true);
      m_ready = m_ready ||
          std::all_of(m_run.begin(), m_run.begin() + nq_pad, [](T m) { return std::isfinite(m); });
    }

    T* o_head = o + head_offset(out, bh, d.H);
    T* max_head = max_data + bh * d.Lq;
    T* log_sum_head = log_sum_data + bh * d.Lq;
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t i = i0 + r;
      T* o_row = o_head + i * out.stride(2);
      const T* a = acc.data() + r * ev_pad;
      if (!(l_run[r] > T(0)) && !std::isnan(l_run[r])) {
        // Fully masked row: zero output; max -inf tells backward its weights are zero.
        for (int64_t e = 0; e < d.Ev; ++e) {
          o_row[e * out.stride(3)] = T(0);
        }
        max_head[i] = neg_inf<T>();
        log_sum_head[i] = neg_inf<T>();
        continue;
      }
      const T inv = T(1) / l_run[r];
      for (int64_t e = 0; e < d.Ev; ++e) {
        o_row[e * out.stride(3)] = a[e] * inv;
      }
      max_head[i] = m_run[r];
      // The sum is at least the max's own term, 1; exp2's polynomial may give 1 - 7e-8.
      log_sum_head[i] = std::log(std::max(l_run[r], T(1)));
    }
    if (--head.tiles_left == 0) {
      head.value_p.reset();
    }
  });
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
void backward_impl(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask_tensor, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_value) {
  // grad_out [B, H, Lq, Ev] -> grad_query [B, H, Lq, E], grad_key [B, H, Lk, E],
  //                            grad_value [B, H, Lk, Ev]
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  const Dims d = dims_of(query, key, value);
  constexpr int64_t PW = panel_width<T>();
  constexpr int64_t BK = block_k<T>();
  const int64_t BH = d.BH();
  const int64_t Lk_pad = round_up(d.Lk, PW);
  const int64_t E_pad = round_up(d.E, W);
  const int64_t Ev_pad = round_up(d.Ev, W);
  const MaskView mask(mask_tensor);
  const T s_mul = static_cast<T>(args.scale);

  const int64_t k_tiles = (d.Lk + BK - 1) / BK;
  const int64_t q_tiles = (d.Lq + kBlockQBackward - 1) / kBlockQBackward;
  // With few heads, each head's key tiles are split into chunks, each with its own grad_query
  // accumulator (summed at the end, in chunk order). The split depends on the shape alone,
  // never on the thread count, so that the sums, and so the gradients, are the same bits on
  // any number of threads.
  // At least one chunk, even with no keys: it writes grad_query (zeros).
  const int64_t chunks = BH == 0 || BH >= kSplitWorkers
      ? 1
      : std::max<int64_t>(1, std::min(k_tiles, (kSplitWorkers + BH - 1) / BH));

  const T* q = query.data_ptr<T>();
  const T* k = key.data_ptr<T>();
  const T* v = value.data_ptr<T>();
  const T* go = grad_out.data_ptr<T>();
  const T* o = out.data_ptr<T>();
  const T* max_data = row_max.data_ptr<T>();
  const T* log_sum_data = row_log_sum.data_ptr<T>();
  T* gq = grad_query.data_ptr<T>();

  // Per head, packed by the first chunk that needs it and freed by the last, which also writes
  // grad_query: q times the scale and grad_out as rows, keys as rows and in transposed panels
  // (as in the forward), values in transposed panels, delta = rowsum(grad_out * out), the row
  // statistics and one grad_query accumulator per chunk.
  struct Head {
    std::once_flag packed;
    std::atomic<int64_t> chunks_left{0};
    std::unique_ptr<T[]> q_s, do_p, k_p, k_t, v_t, delta, m, log2_sum, dq_acc;
    const T* do_rows = nullptr; // do_p or grad_out itself; likewise below
    const T* k_rows = nullptr;
    int64_t ld_do = 0, ld_k = 0;
  };
  std::unique_ptr<Head[]> heads(new Head[static_cast<size_t>(BH)]);
  for (int64_t bh = 0; bh < BH; ++bh) {
    heads[bh].chunks_left = chunks;
  }
  auto alloc = [](std::unique_ptr<T[]>& buf, int64_t n) { buf.reset(new T[static_cast<size_t>(n)]); };
  auto pack_head = [&](Head& hd, int64_t bh) {
    alloc(hd.k_t, d.E * Lk_pad);
    alloc(hd.v_t, d.Ev * Lk_pad);
    alloc(hd.delta, d.Lq);
    alloc(hd.q_s, d.Lq * E_pad);
    alloc(hd.m, d.Lq);
    alloc(hd.log2_sum, d.Lq);
    alloc(hd.dq_acc, chunks * d.Lq * E_pad);
    hd.do_rows = rows_of(go + head_offset(grad_out, bh, d.H), d.Lq, d.Ev, grad_out.stride(2),
                         grad_out.stride(3), hd.do_p, hd.ld_do);
    hd.k_rows = rows_of(k + head_offset(key, bh, d.H), d.Lk, d.E, key.stride(2), key.stride(3),
                        hd.k_p, hd.ld_k);
    // The queries times the scale exactly as the forward (and the math path) scales them, so
    // that backward's scores are the forward's to the bit (the same products, summed in the
    // same order): P then stays exact where one key takes all the weight. dK = dSᵀ (Q scale)
    // takes the same rows, as the math path's gradient does: scaling after the product would
    // overflow where q is huge and the scale tiny, and give inf * 0 at scale 0.
    pack(q + head_offset(query, bh, d.H), d.Lq, d.E, query.stride(2), query.stride(3),
         hd.q_s.get(), E_pad, s_mul);
    pack_transposed_panels(k + head_offset(key, bh, d.H), d.Lk, d.E, key.stride(2),
                           key.stride(3), hd.k_t.get(), PW);
    pack_transposed_panels(v + head_offset(value, bh, d.H), d.Lk, d.Ev, value.stride(2),
                           value.stride(3), hd.v_t.get(), PW);
    std::fill(hd.dq_acc.get(), hd.dq_acc.get() + chunks * d.Lq * E_pad, T(0));
    const T* o_head = o + head_offset(out, bh, d.H);
    for (int64_t i = 0; i < d.Lq; ++i) {
      // delta = rowsum(dO * O), summed exactly as the micro-kernel sums dP = dO Vᵀ (the same
      // fmadd, in the same order): where all of a row's weight is on one key, O is that key's
      // value to the bit, so delta equals its dP to the bit and dS = P (dP - delta) is 0, as
      // in exact arithmetic. A huge scale or huge queries would magnify any residue.
      Vec acc(T(0));
      for (int64_t e = 0; e < d.Ev; ++e) {
        acc = at::vec::fmadd(Vec(hd.do_rows[i * hd.ld_do + e]),
                             Vec(o_head[i * out.stride(2) + e * out.stride(3)]), acc);
      }
      T lanes[Vec::size()];
      acc.store(lanes);
      hd.delta[i] = lanes[0];
      // A fully masked row (max -inf) gets weights exp2(-inf) = 0 from log2_sum = +inf.
      const T mx = max_data[bh * d.Lq + i];
      const bool dead = mx == neg_inf<T>();
      hd.m[i] = dead ? T(0) : mx;
      hd.log2_sum[i] = dead ? std::numeric_limits<T>::infinity()
                            : static_cast<T>(log_sum_data[bh * d.Lq + i] * kLog2e);
    }
  };
  auto finish_head = [&](Head& hd, int64_t bh, T scale) {
    T* gq_head = gq + head_offset(grad_query, bh, d.H);
    for (int64_t i = 0; i < d.Lq; ++i) {
      T* row = gq_head + i * grad_query.stride(2);
      for (int64_t e = 0; e < d.E; ++e) {
        T sum = 0;
        for (int64_t c = 0; c < chunks; ++c) {
          sum += hd.dq_acc[(c * d.Lq + i) * E_pad + e];
        }
        row[e * grad_query.stride(3)] = sum * scale;
      }
    }
    for (auto* buf : {&hd.q_s, &hd.do_p, &hd.k_p, &hd.k_t, &hd.v_t, &hd.delta,
                      &hd.m, &hd.log2_sum, &hd.dq_acc}) {
      buf->reset();
    }
  };

  T* gk = grad_key.data_ptr<T>();
  T* gv = grad_value.data_ptr<T>();
  const T scale = static_cast<T>(args.scale);
  parallel_items(BH * chunks, [&](int64_t item) {
    const int64_t bh = item / chunks;
    const int64_t chunk = item % chunks;
    const int64_t b = bh / d.H, h = bh % d.H;
    Head& hd = heads[bh];
    std::call_once(hd.packed, pack_head, hd, bh);
    const T* doh = hd.do_rows;
    const T* kh = hd.k_rows;
    const int64_t ld_do = hd.ld_do, ld_k = hd.ld_k;
    const T* kth = hd.k_t.get();
    const T* vth = hd.v_t.get();
    const T* delta_h = hd.delta.get();
    const T* qs = hd.q_s.get();
    const T* row_m = hd.m.get();
    const T* row_log2_sum = hd.log2_sum.get();
    T* dq = hd.dq_acc.get() + chunk * d.Lq * E_pad;

    thread_local std::vector<T> probs, dscores, dk, dv;
    probs.resize(static_cast<size_t>(kBlockQBackward * BK));
    dscores.resize(static_cast<size_t>(kBlockQBackward * BK));
    dk.resize(static_cast<size_t>(BK * E_pad));
    dv.resize(static_cast<size_t>(BK * Ev_pad));

    // Interleaved key tiles, so that each chunk gets early (long) and late causal tiles.
    for (int64_t kt = chunk; kt < k_tiles; kt += chunks) {
      const int64_t j0 = kt * BK;
      const int64_t nk = std::min(BK, d.Lk - j0);
      const int64_t nk_pad = round_up(nk, W);
      std::fill(dk.begin(), dk.end(), T(0));
      std::fill(dv.begin(), dv.end(), T(0));
      // Causal: queries before j0 see none of these keys.
      const int64_t qt_begin = args.is_causal ? std::min(j0, d.Lq) / kBlockQBackward : 0;
      for (int64_t qt = qt_begin; qt < q_tiles; ++qt) {
        const int64_t i0 = qt * kBlockQBackward;
        const int64_t nq = std::min(kBlockQBackward, d.Lq - i0);
        T* p = probs.data();
        T* ds = dscores.data();
        // P = exp(S - max - log_sum): in the GEMM's epilogue where no mask and no padding column
        // touches the tile, else after masking row by row.
        const T* k_panels = kth + j0 * d.E;
        if (mask.data == nullptr && !(args.is_causal && j0 + nk - 1 > i0) && nk == nk_pad) {
          gemm<T>(nq, nk_pad, d.E, qs + i0 * E_pad, E_pad, 1, k_panels, PW, d.E * PW, p, BK,
                  /*accumulate=*/false, StoreExp2<T>{row_m + i0, row_log2_sum + i0});
        } else {
          gemm<T>(nq, nk_pad, d.E, qs + i0 * E_pad, E_pad, 1, k_panels, PW, d.E * PW, p, BK,
                  /*accumulate=*/false);
          for (int64_t r = 0; r < nq; ++r) {
            const int64_t i = i0 + r;
            T* s = p + r * BK;
            prepare_row<T>(s, nk, nk_pad, mask, b, h, i, j0,
                           args.is_causal ? i : std::numeric_limits<int64_t>::max() / 2);
            const Vec mx(row_m[i]), ls(row_log2_sum[i]);
            for (int64_t j = 0; j < nk_pad; j += W) {
              probability(Vec::loadu(s + j), mx, ls).store(s + j);
            }
          }
        }
        // dV += Pᵀ dO
        gemm<T>(nk, Ev_pad, nq, p, 1, BK, doh + i0 * ld_do, ld_do, PW, dv.data(), Ev_pad,
                /*accumulate=*/true);
        // dS = P (dP - delta), with dP = dO Vᵀ in registers
        gemm<T>(nq, nk_pad, d.Ev, doh + i0 * ld_do, ld_do, 1, vth + j0 * d.Ev, PW, d.Ev * PW,
                ds, BK, /*accumulate=*/false, StoreSoftmaxGrad<T>{p, delta_h + i0});
        // dK += dSᵀ (Q scale), dQ += dS K (scale applied at the end)
        gemm<T>(nk, E_pad, nq, ds, 1, BK, qs + i0 * E_pad, E_pad, PW, dk.data(), E_pad,
                /*accumulate=*/true);
        gemm<T>(nq, E_pad, nk, ds, BK, 1, kh + j0 * ld_k, ld_k, PW, dq + i0 * E_pad,
                E_pad, /*accumulate=*/true);
      }
      T* gk_head = gk + head_offset(grad_key, bh, d.H);
      T* gv_head = gv + head_offset(grad_value, bh, d.H);
      for (int64_t r = 0; r < nk; ++r) {
        T* gk_row = gk_head + (j0 + r) * grad_key.stride(2);
        for (int64_t e = 0; e < d.E; ++e) {
          gk_row[e * grad_key.stride(3)] = dk[r * E_pad + e];
        }
        T* gv_row = gv_head + (j0 + r) * grad_value.stride(2);
        for (int64_t e = 0; e < d.Ev; ++e) {
          gv_row[e * grad_value.stride(3)] = dv[r * Ev_pad + e];
        }
      }
    }
    if (--hd.chunks_left == 0) {
      finish_head(hd, bh, scale);
    }
  });

}

} // namespace

void flash_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& mask, const FlashArgs& args, at::Tensor& out, at::Tensor& row_max,
    at::Tensor& row_log_sum) {
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_forward", [&] {
    forward_impl<scalar_t>(query, key, value, mask, args, out, row_max, row_log_sum);
  });
}

void flash_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value) {
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_backward", [&] {
    backward_impl<scalar_t>(grad_out, query, key, value, mask, out, row_max, row_log_sum, args,
                            grad_query, grad_key, grad_value);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
