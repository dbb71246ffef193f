// The fused attention kernel's forward: tiles of queries against all their keys with an online
// softmax, saving each row's softmax statistics for backward. No buffer grows with Lq x Lk.
//
// Scores are computed transposed, keys x queries: S^T = K Q^T takes the keys as they are (one
// broadcast element of a key row per step) and only the query tile is transposed, so the
// forward copies nothing of size Lk. The softmax then runs down the columns, one vector of
// queries at a time, with no horizontal reduction.
//
// Scores are those of the math path, (q * scale) kᵀ + mask, rounded as it rounds them: every
// finite score counts, however large (a -1e30 mask row is a uniform row, not a masked one).
// The forward saves each row's max m and log(sum of exp(s - m)) apart: their sum, the
// logsumexp, would round away the sum where |m| is large (|m| = 1e30 keeps no digit of
// log 7), and backward's P = exp(s - m - log_sum) needs both exactly.
//
// The steps, per tile of queries (forward_tile): pack the query tile; score each key tile
// (masked, first, or lazily rescaled) and accumulate P V; finish the rows.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_attention/epilogues.h"
#include "ops/cpu/flash_attention/low_precision.h"
#include "ops/cpu/flash_attention/micro_kernel_bf16.h"
#include "ops/cpu/flash_attention/modifiers.h"
#include "ops/cpu/flash_attention/packing.h"
#include "ops/cpu/flash_attention/pair_packing.h"

#include <cstring>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Columns of the transposed score tile: the query tile rounded up to whole vectors.
template <typename T>
constexpr int64_t forward_block_q() {
  constexpr int64_t W = Vectorized<T>::size();
  return (kBlockQForward + W - 1) / W * W;
}

/// What every tile of the forward reads and writes.
template <typename T>
struct Forward {
  const at::Tensor& query;
  const at::Tensor& key;
  const at::Tensor& value;
  at::Tensor& out;
  T* row_max;
  T* row_log_sum;
  Modifiers<T> mods;
  FlashArgs args;
  Dims d;
  int64_t q_tiles;
  int64_t lanes; // kv heads whose tiles interleave in the item order (item_tile)
  int64_t group; // query heads per kv head
  // bfloat16 operands multiplied as pairs by vdpbf16ps (the avx512_bf16 build, T float):
  // query, key and value stay bfloat16 and are packed as pairs (micro_kernel_bf16.h).
  bool pairs = false;
};

/// A head's values as rows: the tensor itself when its rows are contiguous whole vectors, else
/// a copy made by the head's first tile and freed by its last (tiles are taken a few heads at
/// a time, item_tile, so about two heads per thread are copied at a time).
template <typename T>
struct ValueRows {
  std::once_flag packed;
  std::atomic<int64_t> tiles_left{0};
  std::unique_ptr<T[]> copy;
  const T* rows = nullptr;
  int64_t ld = 0;
  // Keys as A operand rows: the tensor itself, or (bfloat16 and float16 inputs) a T copy.
  std::unique_ptr<T[]> key_copy;
  const T* keys = nullptr;
  int64_t key_rs = 0, key_cs = 0;
  // Forward::pairs: the keys as pairs along E, word (j, kp) at key_pairs[j * key_rs + kp *
  // key_cs] (rows [Lk, E / 2] copied as stored where E is even and rows contiguous, else
  // [ceil(E / 2), Lk]), and the values as pairs of keys [ceil(Lk / 2), ld]; ld is Ev rounded
  // up to whole vectors.
  std::unique_ptr<uint32_t[]> key_pairs, value_pairs;
};

/// One tile of queries: where it is, its transposed queries, its score tile S^T [BK, BQ], and
/// the running max, sum and output accumulator of its queries (thread-local buffers).
template <typename T>
struct QueryTile {
  int64_t bh, b, h, i0, nq, nq_pad, ev_pad;
  int64_t key_rs, key_cs; // the strides of the keys' rows and elements (ValueRows)
  T* q_t;
  uint32_t* q_pairs; // Forward::pairs: the queries as pairs along E [ceil(E / 2), nq_pad]
  uint32_t* p_pairs; // Forward::pairs: P as pairs of keys [ceil(BK / 2), BQ]
  T* st;
  T* acc;
  T* m_run;
  T* l_run;
  T* l_round; // low precision: the running sum of P as rounded for P V (else null)
  T* col_max;
  T* col_sum;
  T* col_sum_round; // Forward::pairs: a lazy tile's column sums of its rounded weights
  T* rdiag;
};

/// The query head and tile of item `item`: kv heads interleaved (interleaved_item); within
/// one, its query heads in turn, each's largest causal tiles (the last queries) first.
template <typename T>
void item_tile(const Forward<T>& f, int64_t item, int64_t& bh, int64_t& tile) {
  int64_t kv, k;
  interleaved_item(item, f.d.B * (f.d.H / f.group), f.group * f.q_tiles, f.lanes, kv, k);
  bh = first_query_head(kv, f.d.H, f.group) + k / f.q_tiles;
  tile = f.q_tiles - 1 - k % f.q_tiles;
}

/// Pack the query tile: the tile of item `item` (item_tile), its buffers, and its queries
/// transposed [E, nq_pad], times the scale as the math path scales them, zero padded.
template <typename T>
QueryTile<T> pack_query_tile(const Forward<T>& f, int64_t item) {
  constexpr int64_t W = Vectorized<T>::size();
  constexpr int64_t BQ = forward_block_q<T>();
  constexpr int64_t BK = forward_block_k();
  const Dims& d = f.d;
  QueryTile<T> t;
  int64_t tile;
  item_tile(f, item, t.bh, tile);
  t.b = t.bh / d.H;
  t.h = t.bh % d.H;
  t.i0 = tile * kBlockQForward;
  t.nq = std::min(kBlockQForward, d.Lq - t.i0);
  t.nq_pad = round_up(t.nq, W);
  t.ev_pad = round_up(d.Ev, W);

  thread_local std::vector<T> q_t, scores, acc, m_run, l_run, l_round, col_max, col_sum,
      col_sum_round, rdiag;
  thread_local std::vector<uint32_t> q_pairs, p_pairs;
  q_t.resize(static_cast<size_t>(d.E * BQ));
  scores.resize(static_cast<size_t>(BK * BQ));
  col_max.resize(static_cast<size_t>(BQ));
  col_sum.resize(static_cast<size_t>(BQ));
  rdiag.resize(static_cast<size_t>(BQ + BK));
  acc.assign(static_cast<size_t>(BQ * t.ev_pad), T(0));
  m_run.assign(static_cast<size_t>(BQ), neg_inf<T>());
  l_run.assign(static_cast<size_t>(BQ), T(0));
  t.q_t = q_t.data();
  t.st = scores.data();
  t.acc = acc.data();
  t.m_run = m_run.data();
  t.l_run = l_run.data();
  t.l_round = nullptr;
  if (f.args.low_precision != at::ScalarType::Undefined) {
    l_round.assign(static_cast<size_t>(BQ), T(0));
    t.l_round = l_round.data();
  }
  t.col_max = col_max.data();
  t.col_sum = col_sum.data();
  col_sum_round.resize(static_cast<size_t>(BQ));
  t.col_sum_round = col_sum_round.data();
  t.rdiag = rdiag.data();

  if (f.pairs) {
    // Unscaled: the scale multiplies the float32 products (micro_kernel_pairs).
    q_pairs.resize(static_cast<size_t>((d.E + 1) / 2 * BQ));
    p_pairs.resize(static_cast<size_t>((BK + 1) / 2 * BQ));
    t.q_pairs = q_pairs.data();
    t.p_pairs = p_pairs.data();
    const at::BFloat16* q_tile = f.query.template data_ptr<at::BFloat16>() +
                                 head_offset(f.query, t.bh, d.H) + t.i0 * f.query.stride(2);
    pack_pairs(q_tile, d.E, t.nq, f.query.stride(3), f.query.stride(2), t.q_pairs, t.nq_pad);
    return t;
  }
  const int64_t q_offset = head_offset(f.query, t.bh, d.H) + t.i0 * f.query.stride(2);
  if (f.query.scalar_type() == c10::CppTypeToScalarType<T>::value) {
    pack(
        f.query.template data_ptr<T>() + q_offset, d.E, t.nq, f.query.stride(3), f.query.stride(2),
        t.q_t, t.nq_pad, static_cast<T>(f.args.scale));
  } else {
    // bfloat16, float16: converted row by row (vectorized), then transposed.
    thread_local std::vector<T> rows;
    rows.resize(static_cast<size_t>(t.nq * d.E));
    with_data<T>(f.query, q_offset, [&](const auto* q_tile) {
      pack(q_tile, t.nq, d.E, f.query.stride(2), f.query.stride(3), rows.data(), d.E);
    });
    pack(rows.data(), d.E, t.nq, 1, d.E, t.q_t, t.nq_pad, static_cast<T>(f.args.scale));
  }
  return t;
}

/// Column maxima of strip c (W queries) of S^T [nk, BQ] into cm, on independent chains: bound
/// by throughput, not by the latency of max.
template <typename T>
inline void max_strip(const T* st, int64_t nk, int64_t c, T* cm) {
  using Vec = Vectorized<T>;
  constexpr int64_t BQ = forward_block_q<T>();
  const Vec ninf(neg_inf<T>());
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
}

/// The online-softmax step of strip c from its column maxima: a new running max, exp against
/// it in place, the sums, and the accumulator rows rescaled.
template <typename T>
inline void softmax_strip(const QueryTile<T>& t, int64_t nk, int64_t c) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t BQ = forward_block_q<T>();
  // Locals: the vector stores may alias anything, so fields would be reloaded after each.
  T* st = t.st;
  T* l_run = t.l_run;
  T* m_run = t.m_run;
  const int64_t ev_pad = t.ev_pad;
  const Vec ninf(neg_inf<T>());
  const Vec m_old = Vec::loadu(m_run + c);
  const Vec m_new = at::vec::maximum(Vec::loadu(t.col_max + c), m_old);
  // Queries with no key allowed yet subtract 0 instead of -inf: their weights stay 0 and
  // their alpha is exp2(-inf) = 0 on an accumulator that is still 0.
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
  at::vec::fmadd(Vec::loadu(l_run + c), alpha, sum0 + sum1).store(l_run + c);
  if (t.l_round != nullptr) {
    (Vec::loadu(t.l_round + c) * alpha).store(t.l_round + c);
  }
  m_new.store(m_run + c);
  T alphas[Vec::size()];
  alpha.store(alphas);
  for (int64_t r = 0; r < W && c + r < t.nq; ++r) {
    if (alphas[r] != T(1)) {
      T* a = t.acc + (c + r) * ev_pad;
      const Vec va(alphas[r]);
      for (int64_t e = 0; e < ev_pad; e += W) {
        (Vec::loadu(a + e) * va).store(a + e);
      }
    }
  }
}

/// S^T = K Q^T for the key tile [nk] at k_tile (Forward::pairs: at key j0 of the head's
/// key pairs) and the tile's columns [c0, c1), raw.
template <typename T, typename Epi = StoreC>
inline void scores_columns(
    const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t nk, int64_t c0, int64_t c1,
    Epi epi = Epi()) {
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (f.pairs) {
      const auto* k_pairs = reinterpret_cast<const uint32_t*>(k_tile);
      gemm_pairs(
          nk, c1 - c0, (f.d.E + 1) / 2, k_pairs, t.key_rs, t.key_cs, t.q_pairs + c0, t.nq_pad,
          panel_width<T>(), t.st + c0, forward_block_q<T>(), /*accumulate=*/false,
          static_cast<float>(f.args.scale), epi);
      return;
    }
  }
#endif
  gemm<T>(
      nk, c1 - c0, f.d.E, k_tile, t.key_rs, t.key_cs, t.q_t + c0, t.nq_pad, panel_width<T>(),
      t.st + c0, forward_block_q<T>(), /*accumulate=*/false, epi);
}

/// Score a modified tile: a modifier or mask touches it, so the maxima come after, in a pass
/// of their own. Only its columns [c0, c1) (whole vectors): the queries outside them see none
/// of its keys (causal, window, prefix), so their weights, running statistics and output stay
/// as they are.
template <typename T>
void score_masked_tile(
    const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t j0, int64_t nk, int64_t c0,
    int64_t c1) {
  constexpr int64_t W = Vectorized<T>::size();
  scores_columns(f, t, k_tile, nk, c0, c1);
  const T* rdiag = nullptr;
  if (f.mods.has_diagonal()) {
    // S^T[j, c] has d = j0 + j - i0 - c; v = c - j + nk - 1 runs down the diagonals.
    const int64_t n = t.nq_pad + nk - 1;
    f.mods.diagonal_terms(t.h, j0 - t.i0 - (t.nq_pad - 1), n, t.rdiag);
    std::reverse(t.rdiag, t.rdiag + n);
    rdiag = t.rdiag + c0;
  }
  modify_transposed(
      f.mods, t.st + c0, forward_block_q<T>(), nk, std::min(t.nq, c1) - c0, c1 - c0, rdiag, t.b,
      t.h, t.i0 + c0, j0);
  for (int64_t c = c0; c < c1; c += W) {
    max_strip(t.st, nk, c, t.col_max);
    softmax_strip(t, nk, c);
  }
}

/// Score a first tile: some query has no finite running max yet; the maxima come from the
/// micro-kernel's registers.
template <typename T>
void score_first_tile(const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t nk) {
  constexpr int64_t W = Vectorized<T>::size();
  std::fill(t.col_max, t.col_max + t.nq_pad, neg_inf<T>());
  scores_columns(f, t, k_tile, nk, 0, t.nq_pad, StoreAndColumnMax<T>{t.col_max});
  for (int64_t c = 0; c < t.nq_pad; c += W) {
    softmax_strip(t, nk, c);
  }
}

#if TORCHATTN_BF16_DOT
/// StoreExp2Columns for Forward::pairs: the weights go, rounded to bfloat16, straight to P's
/// pairs of keys (S^T is not stored); their column sums before rounding go to colsum and after
/// it to colsum_round. Saves a pass over the tile (15% of the bf16 forward at N=2048).
struct StoreExp2Pairs {
  const float* m_ref;
  float* colmax;
  float* colsum;
  float* colsum_round;
  uint32_t* pairs; // [keys / 2, ld]
  int64_t ld;

  template <int MR, int NV>
  void operator()(
      Vectorized<float> (&acc)[MR][NV], float* /*c*/, int64_t /*ldc*/, int64_t row0,
      int64_t col0) const {
    using Vec = Vectorized<float>;
    constexpr int W = Vec::size();
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      const int64_t col = col0 + n * W;
      const Vec ref = Vec::loadu(m_ref + col);
      Vec mx = acc[0][n];
      Vec sum(0.f);
      __m512 sum_round = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int i = 0; i < MR; i += 2) {
        // Row blocks start at even rows; an odd last row (the tile's last key) pairs with 0.
        const Vec e0 = exp_minus(acc[i][n], ref);
        Vec e1(0.f);
        mx = max_fast(mx, acc[i][n]);
        if (i + 1 < MR) {
          e1 = exp_minus(acc[i + 1][n], ref);
          mx = max_fast(mx, acc[i + 1][n]);
        }
        sum = sum + e0 + e1;
        const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e0));
        const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e1));
        _mm512_storeu_si512(
            pairs + (row0 + i) / 2 * ld + col, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        sum_round = _mm512_add_ps(sum_round, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
        sum_round = _mm512_add_ps(sum_round, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
      }
      max_fast(Vec::loadu(colmax + col), mx).store(colmax + col);
      (Vec::loadu(colsum + col) + sum).store(colsum + col);
      _mm512_storeu_ps(
          colsum_round + col, _mm512_add_ps(_mm512_loadu_ps(colsum_round + col), sum_round));
    }
  }
};
#endif

/// Score a tile lazily rescaled: exp against the running max, in the micro-kernel's epilogue,
/// with the sums and the new maxima. The running max stays unless a strip's scores exceed it
/// by more than kLazyRescale (weights up to 2^8 are harmless); such a strip is recomputed and
/// takes the first tile's step. Returns whether P is ready for P V already (Forward::pairs: the
/// epilogue packs it; low precision: the epilogue rounds it).
template <typename T>
bool score_lazy_tile(const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t nk) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  T* cm = t.col_max;
  T* cs = t.col_sum;
  std::fill(cm, cm + t.nq_pad, neg_inf<T>());
  std::fill(cs, cs + t.nq_pad, T(0));
  bool packed = false;
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (f.pairs) {
      std::fill(t.col_sum_round, t.col_sum_round + t.nq_pad, 0.f);
      scores_columns(
          f, t, k_tile, nk, 0, t.nq_pad,
          StoreExp2Pairs{t.m_run, cm, cs, t.col_sum_round, t.p_pairs, forward_block_q<T>()});
      packed = true;
    }
  }
#endif
  // Low precision (the float32 path): the epilogue rounds the weights as it stores them and
  // sums them both ways, which saves accumulate_values' pass over the tile.
  const bool rounds = !packed && t.l_round != nullptr;
  if (rounds) {
    std::fill(t.col_sum_round, t.col_sum_round + t.nq_pad, T(0));
    scores_columns(
        f, t, k_tile, nk, 0, t.nq_pad,
        StoreExp2Columns<T, /*kRound=*/true>{
            t.m_run, cm, cs, t.col_sum_round, f.args.low_precision == at::kHalf});
  } else if (!packed) {
    scores_columns(f, t, k_tile, nk, 0, t.nq_pad, StoreExp2Columns<T>{t.m_run, cm, cs});
  }
  for (int64_t c = 0; c < t.nq_pad; c += W) {
    bool exceeds = false;
    for (int64_t r = 0; r < W; ++r) {
      exceeds = exceeds || !(cm[c + r] <= t.m_run[c + r] + static_cast<T>(kLazyRescale));
    }
    if (exceeds) {
      scores_columns(f, t, k_tile, nk, c, c + W);
      max_strip(t.st, nk, c, cm);
      softmax_strip(t, nk, c);
#if TORCHATTN_BF16_DOT
      if constexpr (std::is_same_v<T, float>) {
        if (packed) {
          constexpr int64_t BQ = forward_block_q<T>();
          pack_pairs_from_floats(t.st + c, nk, W, BQ, t.p_pairs + c, BQ, t.l_round + c);
        }
      }
#endif
      if (rounds) {
        round_and_sum_columns(
            t.st + c, nk, W, forward_block_q<T>(), t.l_round + c, f.args.low_precision);
      }
    } else {
      (Vec::loadu(t.l_run + c) + Vec::loadu(cs + c)).store(t.l_run + c);
      if (packed || rounds) {
        (Vec::loadu(t.l_round + c) + Vec::loadu(t.col_sum_round + c)).store(t.l_round + c);
      }
    }
  }
  return packed || rounds;
}

/// Finish the rows: out = acc / sum, and the statistics; a fully masked row gets zeros and
/// -inf statistics, which tell backward its weights are zero.
template <typename T>
void finish_rows(const Forward<T>& f, const QueryTile<T>& t) {
  const Dims& d = f.d;
  at::Tensor& out = f.out;
  T* o_head = out.template data_ptr<T>() + head_offset(out, t.bh, d.H);
  T* max_head = f.row_max + t.bh * d.Lq;
  T* log_sum_head = f.row_log_sum + t.bh * d.Lq;
  // Read once: Tensor::stride checks the tensor's layout on every call.
  const int64_t os2 = out.stride(2), os3 = out.stride(3);
  for (int64_t r = 0; r < t.nq; ++r) {
    const int64_t i = t.i0 + r;
    T* o_row = o_head + i * os2;
    const T* a = t.acc + r * t.ev_pad;
    const T l = t.l_run[r];
    if (!(l > T(0)) && !std::isnan(l)) {
      for (int64_t e = 0; e < d.Ev; ++e) {
        o_row[e * os3] = T(0);
      }
      max_head[i] = neg_inf<T>();
      log_sum_head[i] = neg_inf<T>();
      continue;
    }
    // Low precision: over the sum of the weights as rounded for P V, so that they sum to 1 and
    // backward's delta = rowsum(dO * O) matches its P (see low_precision.h).
    const T inv = T(1) / (t.l_round != nullptr ? t.l_round[r] : l);
    if (os3 == 1) {
      for (int64_t e = 0; e < d.Ev; ++e) { // contiguous: vectorized
        o_row[e] = a[e] * inv;
      }
    } else {
      for (int64_t e = 0; e < d.Ev; ++e) {
        o_row[e * os3] = a[e] * inv;
      }
    }
    max_head[i] = t.m_run[r];
    // The sum is at least the max's own term, 1; exp2's polynomial may give 1 - 7e-8.
    log_sum_head[i] = std::log(std::max(l, T(1)));
  }
}

/// The keys and values of kv head `kv` as the products read them (see ValueRows): the tensors
/// themselves where they fit, else T copies (bfloat16 and float16 converted here, a head at a
/// time, rather than whole tensors up front).
template <typename T>
void pack_kv_rows(const Forward<T>& f, ValueRows<T>& head, int64_t kv) {
  const Dims& d = f.d;
  with_data<T>(f.value, kv_offset(f.value, kv), [&](const auto* v) {
    head.rows = rows_of(v, d.Lk, d.Ev, f.value.stride(2), f.value.stride(3), head.copy, head.ld);
  });
  if (f.key.scalar_type() == c10::CppTypeToScalarType<T>::value) {
    head.keys = f.key.template data_ptr<T>() + kv_offset(f.key, kv);
    head.key_rs = f.key.stride(2);
    head.key_cs = f.key.stride(3);
    return;
  }
  head.key_copy.reset(new T[static_cast<size_t>(d.Lk * d.E)]);
  with_data<T>(f.key, kv_offset(f.key, kv), [&](const auto* k) {
    pack(k, d.Lk, d.E, f.key.stride(2), f.key.stride(3), head.key_copy.get(), d.E);
  });
  head.keys = head.key_copy.get();
  head.key_rs = d.E;
  head.key_cs = 1;
}

/// Forward::pairs: the keys and values of kv head `kv` as pairs (see ValueRows).
template <typename T>
void pack_kv_pairs(const Forward<T>& f, ValueRows<T>& head, int64_t kv) {
  const Dims& d = f.d;
  head.ld = round_up(d.Ev, Vectorized<T>::size());
  const int64_t E2 = (d.E + 1) / 2;
  head.key_pairs.reset(new uint32_t[static_cast<size_t>(E2 * d.Lk)]);
  head.value_pairs.reset(new uint32_t[static_cast<size_t>((d.Lk + 1) / 2 * head.ld)]);
  const at::BFloat16* k = f.key.template data_ptr<at::BFloat16>() + kv_offset(f.key, kv);
  const int64_t kr = f.key.stride(2);
  if (d.E % 2 == 0 && f.key.stride(3) == 1) {
    // A key row of bfloat16 is a row of pairs as stored: copied, not transposed.
    for (int64_t j = 0; j < d.Lk; ++j) {
      std::memcpy(head.key_pairs.get() + j * E2, k + j * kr, static_cast<size_t>(d.E) * 2);
    }
    head.key_rs = E2;
    head.key_cs = 1;
  } else {
    pack_pairs(k, d.E, d.Lk, f.key.stride(3), kr, head.key_pairs.get(), d.Lk);
    head.key_rs = 1;
    head.key_cs = d.Lk;
  }
  pack_pairs(
      f.value.template data_ptr<at::BFloat16>() + kv_offset(f.value, kv), d.Lk, d.Ev,
      f.value.stride(2), f.value.stride(3), head.value_pairs.get(), head.ld);
}

/// O [nq, ev_pad] += P V for the key tile [j0, j0 + nk), with P read through S^T and rounded to
/// the input dtype first (bfloat16, float16; see low_precision.h); Forward::pairs: P packed as
/// pairs of keys, rounded as it is packed.
template <typename T>
void accumulate_values(
    const Forward<T>& f, const QueryTile<T>& t, const ValueRows<T>& head, int64_t j0, int64_t nk,
    bool packed, int64_t c0, int64_t c1) {
  constexpr int64_t BQ = forward_block_q<T>();
  // The queries [c0, c1) (see score_masked_tile).
  const int64_t nq = std::min(t.nq, c1) - c0;
  T* const l_round = t.l_round != nullptr ? t.l_round + c0 : nullptr;
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (f.pairs) {
      if (!packed) {
        pack_pairs_from_floats(t.st + c0, nk, c1 - c0, BQ, t.p_pairs + c0, BQ, l_round);
      }
      gemm_pairs(
          nq, t.ev_pad, (nk + 1) / 2, t.p_pairs + c0, 1, BQ,
          head.value_pairs.get() + j0 / 2 * head.ld, head.ld, panel_width<T>(),
          t.acc + c0 * t.ev_pad, t.ev_pad, /*accumulate=*/true);
      return;
    }
  }
#endif
  if (l_round != nullptr && !packed) {
    round_and_sum_columns(t.st + c0, nk, c1 - c0, BQ, l_round, f.args.low_precision);
  }
  gemm<T>(
      nq, t.ev_pad, nk, t.st + c0, 1, BQ, head.rows + j0 * head.ld, head.ld, panel_width<T>(),
      t.acc + c0 * t.ev_pad, t.ev_pad, /*accumulate=*/true);
}

/// One tile of queries against all its keys.
template <typename T>
void forward_tile(const Forward<T>& f, ValueRows<T>* heads, int64_t item) {
  constexpr int64_t BK = forward_block_k();
  constexpr int64_t W = Vectorized<T>::size();
  const Dims& d = f.d;
  QueryTile<T> t = pack_query_tile(f, item);
  const int64_t kv = t.b * (d.H / f.group) + t.h / f.group;
  ValueRows<T>& head = heads[kv];
  if (f.pairs) {
    std::call_once(head.packed, [&] { pack_kv_pairs(f, head, kv); });
  } else {
    std::call_once(head.packed, [&] { pack_kv_rows(f, head, kv); });
  }
  t.key_rs = head.key_rs;
  t.key_cs = head.key_cs;
  const T* k_head = head.keys;
  // Whether every query has a finite running max, so that unmasked tiles may take exp against
  // it (lazy rescaling).
  bool m_ready = false;
  const bool modified = f.mods.modifies_scores();
  // Only the keys these queries may see: key tiles start at the first of them.
  int64_t j_begin, j_end;
  f.mods.key_range(t.b, t.i0, t.i0 + t.nq, j_begin, j_end);
  if (f.pairs) {
    j_begin -= j_begin % 2; // pairs of keys start at even keys; the extra key is masked
  }
  // Key tiles break where the keys that every query sees begin and end (on even keys for
  // pairs), so that only keys some query cannot see take the masked tiles' extra passes (at
  // N = 512, causal: 2/3 of the scores in full tiles, against 2/5 in tiles of BK from 0).
  // Each stretch is cut into equal tiles of at most BK keys.
  int64_t full_begin, full_end;
  f.mods.full_key_range(t.b, t.i0, t.i0 + t.nq, full_begin, full_end);
  if (f.pairs) {
    full_begin += full_begin % 2;
    full_end -= full_end % 2;
  }
  for (int64_t j0 = j_begin, nk = 0; j0 < j_end; j0 += nk) {
    const int64_t stop = std::min(
        j_end, j0 < full_begin && full_begin < full_end ? full_begin
               : j0 < full_end                          ? full_end
                                                        : j_end);
    // Stretches of partly visible keys in tiles of half a query tile: the masked path skips
    // the queries that see none of a tile's keys (a quarter of a causal diagonal block).
    const int64_t most = full_begin <= j0 && j0 < full_end ? BK : forward_block_q<T>() / 2;
    const int64_t left = stop - j0, tiles = (left + most - 1) / most;
    nk = std::min(left, round_up((left + tiles - 1) / tiles, int64_t{2}));
    const TileKind kind = f.mods.classify(t.b, t.h, t.i0, t.nq, j0, nk);
    if (kind == TileKind::empty) {
      continue;
    }
    // Forward::pairs: scores_columns takes the key pairs at key j0, passed as T*.
    const T* k_tile = f.pairs ? reinterpret_cast<const T*>(head.key_pairs.get() + j0 * head.key_rs)
                              : k_head + j0 * head.key_rs;
    bool packed = false;
    int64_t c0 = 0, c1 = t.nq_pad;
    if (modified || kind == TileKind::partial) {
      int64_t first, end;
      f.mods.query_range(t.b, j0, j0 + nk - 1, first, end);
      c0 = std::clamp<int64_t>(first - t.i0, 0, t.nq - 1) / W * W;
      c1 = std::clamp<int64_t>(round_up(end - t.i0, W), c0 + W, t.nq_pad);
      score_masked_tile(f, t, k_tile, j0, nk, c0, c1);
    } else if (!m_ready) {
      score_first_tile(f, t, k_tile, nk);
    } else {
      packed = score_lazy_tile(f, t, k_tile, nk);
    }
    accumulate_values(f, t, head, j0, nk, packed, c0, c1);
    m_ready =
        m_ready || std::all_of(t.m_run, t.m_run + t.nq_pad, [](T m) { return std::isfinite(m); });
  }
  finish_rows(f, t);
  if (--head.tiles_left == 0) {
    head.copy.reset();
    head.key_copy.reset();
    head.key_pairs.reset();
    head.value_pairs.reset();
  }
}

template <typename T>
void forward_impl(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& mask,
    const FlashArgs& args, at::Tensor& out, at::Tensor& row_max, at::Tensor& row_log_sum,
    bool pairs = false) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  const Dims d = dims_of(query, key, value);
  const int64_t kv_heads = d.B * key.size(1);
  const Forward<T> f{
      query,
      key,
      value,
      out,
      row_max.data_ptr<T>(),
      row_log_sum.data_ptr<T>(),
      Modifiers<T>(mask, args, d),
      args,
      d,
      (d.Lq + kBlockQForward - 1) / kBlockQForward,
      item_lanes(kv_heads),
      d.H / key.size(1),
      pairs};
  std::unique_ptr<ValueRows<T>[]> heads(new ValueRows<T>[static_cast<size_t>(kv_heads)]);
  for (int64_t kv = 0; kv < kv_heads; ++kv) {
    heads[kv].tiles_left = f.q_tiles * f.group;
  }
  parallel_items(d.BH() * f.q_tiles, [&](int64_t item) { forward_tile(f, heads.get(), item); });
}

} // namespace

void flash_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& mask,
    const FlashArgs& args, at::Tensor& out, at::Tensor& row_max, at::Tensor& row_log_sum) {
#if TORCHATTN_BF16_DOT
  if (query.scalar_type() == at::kBFloat16) {
    // bfloat16 products by vdpbf16ps, accumulated in float32; out and the statistics float32.
    forward_impl<float>(
        query, key, value, to_float(mask), float_args(args, at::kBFloat16), out, row_max,
        row_log_sum, /*pairs=*/true);
    return;
  }
#endif
  if (is_low_precision(query.scalar_type())) {
    // bfloat16, float16: in float32 with P rounded (low_precision.h); out and the statistics
    // are float32.
    TORCH_INTERNAL_ASSERT(out.scalar_type() == at::kFloat);
    forward_impl<float>(
        query, key, value, to_float(mask), float_args(args, query.scalar_type()), out, row_max,
        row_log_sum);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_forward", [&] {
    forward_impl<scalar_t>(query, key, value, mask, args, out, row_max, row_log_sum);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
