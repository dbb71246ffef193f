#pragma once

// Flexible attention's modifiers on score tiles: which tiles a mask leaves empty (skipped),
// full (no per-element work) or partial; the scores modified (soft-cap, ALiBi, position table,
// bias) and masked, row by row for backward and transposed (keys x queries) for the forward.
//
// Mask modifiers that depend on i and j alone (causal, window, prefix) give each query an
// interval of keys, [lo, hi]; documents and block masks are checked per element only in
// partial tiles. ALiBi and the position table depend on j - i alone: a tile reads them from
// one array over its diagonals (`diagonal_terms`), never an [Lq, Lk] matrix.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/exp2.h"
#include "ops/cpu/flash_attention/masks.h"

#include <algorithm>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

enum class TileKind { empty, full, partial };

/// The modifiers of FlashArgs as raw pointers, for tensors of scalar type T.
template <typename T>
struct Modifiers {
  int64_t Lq = 0, Lk = 0, H = 0;
  int64_t off = 0; // the diagonal: key i + off for query i
  bool causal = false;
  int64_t wl = -1, wr = -1;
  const int64_t* prefix = nullptr;
  const int64_t *q_doc = nullptr, *k_doc = nullptr;
  int64_t q_doc_b = 0, k_doc_b = 0; // batch strides (0: broadcast)
  const uint8_t* kinds = nullptr;
  const int64_t* block_index = nullptr;
  const bool* block_masks = nullptr;
  int64_t bs = 1, nqb = 0, nkb = 0, kinds_b = 0, kinds_h = 0;
  MaskView mask, bias;
  T softcap = 0, inv_softcap = 0;
  const T* alibi = nullptr;
  const T* table = nullptr;
  int64_t num_buckets = 0;
  const int64_t* buckets = nullptr;

  Modifiers(const at::Tensor& attn_mask, const FlashArgs& args, const Dims& d)
      : Lq(d.Lq), Lk(d.Lk), H(d.H), mask(attn_mask), bias(args.mods.bias) {
    const FlexMods& m = args.mods;
    off = m.causal == Causal::bottom_right ? d.Lk - d.Lq : 0;
    causal = m.causal != Causal::none;
    wl = m.window_left;
    wr = m.window_right;
    if (m.prefix.defined()) {
      prefix = m.prefix.data_ptr<int64_t>();
    }
    if (m.q_doc.defined()) {
      q_doc = m.q_doc.data_ptr<int64_t>();
      k_doc = m.kv_doc.data_ptr<int64_t>();
      q_doc_b = m.q_doc.size(0) == 1 ? 0 : d.Lq;
      k_doc_b = m.kv_doc.size(0) == 1 ? 0 : d.Lk;
    }
    if (m.block_kinds.defined()) {
      kinds = m.block_kinds.data_ptr<uint8_t>();
      block_index = m.block_index.data_ptr<int64_t>();
      block_masks = m.block_masks.numel() > 0 ? m.block_masks.data_ptr<bool>() : nullptr;
      bs = m.block_masks.size(1);
      nqb = m.block_kinds.size(2);
      nkb = m.block_kinds.size(3);
      kinds_h = m.block_kinds.size(1) == 1 ? 0 : nqb * nkb;
      kinds_b = m.block_kinds.size(0) == 1 ? 0 : m.block_kinds.size(1) * nqb * nkb;
    }
    if (m.softcap > 0) {
      softcap = static_cast<T>(m.softcap);
      inv_softcap = static_cast<T>(1.0 / m.softcap);
    }
    if (m.alibi.defined()) {
      alibi = m.alibi.data_ptr<T>();
    }
    if (m.table.defined()) {
      table = m.table.data_ptr<T>();
      num_buckets = m.table.size(1);
      buckets = m.buckets.data_ptr<int64_t>();
    }
  }

  bool has_interval() const { return causal || wl >= 0 || wr >= 0; }
  bool has_diagonal() const { return alibi != nullptr || table != nullptr; }
  /// Whether every score is changed: no tile can take the plain path.
  bool modifies_scores() const {
    return softcap > 0 || has_diagonal() || bias.data != nullptr || mask.data != nullptr;
  }

  /// Whether only causal, window and prefix mask the scores (a band of keys per query), and
  /// nothing modifies them.
  bool band_only() const {
    return has_interval() && !modifies_scores() && q_doc == nullptr && kinds == nullptr;
  }

  /// The keys [lo, hi] that query i of batch b may see by causal, window and prefix.
  void interval(int64_t b, int64_t i, int64_t& lo, int64_t& hi) const {
    const int64_t diag = i + off;
    lo = 0;
    hi = Lk - 1;
    if (causal) {
      hi = std::min(hi, prefix != nullptr ? std::max(diag, prefix[b] - 1) : diag);
    }
    if (wl >= 0) {
      lo = std::max(lo, diag - wl);
    }
    if (wr >= 0) {
      hi = std::min(hi, diag + wr);
    }
  }

  /// interval() relative to the key tile [j0, j0 + nk): [lo, hi] clamped to lo in [0, nk],
  /// hi in [-1, nk] (lo > hi: none of its keys), as the band epilogues take it.
  void tile_interval(int64_t b, int64_t i, int64_t j0, int64_t nk, int32_t& lo, int32_t& hi) const {
    int64_t l, h;
    interval(b, i, l, h);
    lo = static_cast<int32_t>(std::clamp<int64_t>(l - j0, 0, nk));
    hi = static_cast<int32_t>(std::clamp<int64_t>(h - j0, -1, nk));
  }

  /// The keys [begin, end) that queries [i0, i1) of batch b may see by causal, window and
  /// prefix: lo of the first query to hi of the last (both never decrease with i).
  void key_range(int64_t b, int64_t i0, int64_t i1, int64_t& begin, int64_t& end) const {
    begin = 0;
    end = Lk;
    if (has_interval() && i1 > i0) {
      int64_t lo, hi;
      interval(b, i0, lo, hi);
      begin = std::min(lo, Lk);
      interval(b, i1 - 1, lo, hi);
      end = std::max(begin, std::min(hi + 1, Lk));
    }
  }

  /// The keys [begin, end) that every query of [i0, i1) of batch b sees by causal, window and
  /// prefix: lo of the last query to hi of the first (begin >= end where there are none).
  /// Tiles that break at these bounds leave the partially visible keys to tiles of their own.
  void full_key_range(int64_t b, int64_t i0, int64_t i1, int64_t& begin, int64_t& end) const {
    begin = 0;
    end = Lk;
    if (has_interval() && i1 > i0) {
      int64_t lo, hi;
      interval(b, i1 - 1, lo, hi);
      begin = std::min(lo, Lk);
      interval(b, i0, lo, hi);
      end = std::max<int64_t>(0, std::min(hi + 1, Lk));
    }
  }

  /// The queries [begin, end) of batch b that may see some key of [j0, j1] by causal, window
  /// and prefix: from the first with hi >= j0 to the last with lo <= j1 (binary searches, as
  /// lo and hi never decrease with i).
  void query_range(int64_t b, int64_t j0, int64_t j1, int64_t& begin, int64_t& end) const {
    begin = 0;
    end = Lq;
    if (!has_interval()) {
      return;
    }
    auto first = [&](auto&& pred) { // first i in [0, Lq) with pred(i), else Lq
      int64_t lo_i = 0, hi_i = Lq;
      while (lo_i < hi_i) {
        const int64_t mid = (lo_i + hi_i) / 2;
        if (pred(mid)) {
          hi_i = mid;
        } else {
          lo_i = mid + 1;
        }
      }
      return lo_i;
    };
    begin = first([&](int64_t i) {
      int64_t lo, hi;
      interval(b, i, lo, hi);
      return hi >= j0;
    });
    end = std::max(begin, first([&](int64_t i) {
                     int64_t lo, hi;
                     interval(b, i, lo, hi);
                     return lo > j1;
                   }));
  }

  /// Keys per backward tile: fewer for a narrow band (a sliding window), where most of a wide
  /// tile's rows would be masked; a whole number of panels of `panel`.
  int64_t backward_block_k(int64_t widest, int64_t panel) const {
    const int64_t left = wl >= 0 ? wl : Lk, right = causal ? 0 : (wr >= 0 ? wr : Lk);
    const int64_t band = left + right + 1;
    const int64_t target = band <= 1024 ? 64 : band <= 4096 ? 128 : widest;
    return std::max(panel, std::min(widest, target / panel * panel));
  }

  uint8_t block_kind(int64_t b, int64_t h, int64_t qb, int64_t kb) const {
    return kinds[b * kinds_b + h * kinds_h + qb * nkb + kb];
  }

  /// Queries [i0, i0 + nq) against keys [j0, j0 + nk) of head (b, h).
  TileKind classify(int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    const int64_t j1 = j0 + nk - 1;
    bool full = mask.data == nullptr;
    if (has_interval()) {
      // lo and hi never decrease with i (each by at most 1 per row), so the first and last
      // rows bound the tile: all rows cover it, or none reaches it, or it is partial.
      int64_t lo_first, hi_first, lo_last, hi_last;
      interval(b, i0, lo_first, hi_first);
      interval(b, i0 + nq - 1, lo_last, hi_last);
      if (hi_last < j0 || lo_first > j1) {
        return TileKind::empty;
      }
      full = full && lo_last <= j0 && hi_first >= j1;
    }
    if (q_doc != nullptr) {
      const int64_t* qd = q_doc + b * q_doc_b;
      const int64_t* kd = k_doc + b * k_doc_b;
      const auto [qmin, qmax] = std::minmax_element(qd + i0, qd + i0 + nq);
      const auto [kmin, kmax] = std::minmax_element(kd + j0, kd + j1 + 1);
      if (*qmax < *kmin || *kmax < *qmin) {
        return TileKind::empty;
      }
      full = full && *qmin == *qmax && *kmin == *kmax && *qmin == *kmin;
    }
    if (kinds != nullptr) {
      bool all_empty = true, all_full = true;
      for (int64_t qb = i0 / bs; qb <= (i0 + nq - 1) / bs; ++qb) {
        for (int64_t kb = j0 / bs; kb <= j1 / bs; ++kb) {
          const uint8_t k = block_kind(b, h, qb, kb);
          all_empty = all_empty && k == 0;
          all_full = all_full && k == 2;
        }
      }
      if (all_empty) {
        return TileKind::empty;
      }
      full = full && all_full;
    }
    return full ? TileKind::full : TileKind::partial;
  }

  /// Whether the block mask lets query i see key j.
  bool block_allowed(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const int64_t qb = i / bs, kb = j / bs;
    const uint8_t k = block_kind(b, h, qb, kb);
    if (k != 2) {
      return k == 1 &&
             block_masks
                 [(block_index[b * kinds_b + h * kinds_h + qb * nkb + kb] * bs + i % bs) * bs +
                  j % bs];
    }
    return true;
  }

  /// ALiBi and table terms of the diagonals d = dmin + v, v in [0, n): slope * d +
  /// table[h, bucket(d)], with d clamped to the valid range (padding rows and columns read a
  /// value too, which their masking or zero weights discard).
  void diagonal_terms(int64_t h, int64_t dmin, int64_t n, T* out) const {
    const T slope = alibi != nullptr ? alibi[h] : T(0);
    for (int64_t v = 0; v < n; ++v) {
      const int64_t d = std::min(std::max(dmin + v, -(Lq - 1)), Lk - 1);
      T x = slope * static_cast<T>(d);
      if (table != nullptr) {
        x += table[h * num_buckets + buckets[d + Lq - 1]];
      }
      out[v] = x;
    }
  }
};

/// Soft-caps n scores in place, s = c tanh(s / c), keeping tanh in `t` when given (backward's
/// dS needs 1 - t²).
template <typename T>
void softcap_scores(T* s, int64_t n, T c, T inv_c, T* t = nullptr) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const Vec vc(c), vinv(inv_c);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const Vec th = tanh_vec(Vec::loadu(s + j) * vinv);
    if (t != nullptr) {
      th.store(t + j);
    }
    (th * vc).store(s + j);
  }
  for (; j < n; ++j) {
    const T th = std::tanh(s[j] * inv_c);
    if (t != nullptr) {
      t[j] = th;
    }
    s[j] = th * c;
  }
}

/// y[0, n) += x[0, n)
template <typename T>
inline void add_to(T* y, const T* x, int64_t n) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    (Vec::loadu(y + j) + Vec::loadu(x + j)).store(y + j);
  }
  for (; j < n; ++j) {
    y[j] += x[j];
  }
}

/// Backward's row of scores s[0, nk_pad) for query i and keys j0..: modified (soft-cap with
/// tanh kept in t, diagonal terms from `diag` indexed by key, bias, additive mask) and masked
/// (-inf where any mask forbids and on the padding columns).
template <typename T>
void modify_row(
    const Modifiers<T>& mods, T* s, T* t, const T* diag, int64_t nk, int64_t nk_pad, int64_t b,
    int64_t h, int64_t i, int64_t j0) {
  if (mods.softcap > 0) {
    softcap_scores(s, nk_pad, mods.softcap, mods.inv_softcap, t);
  }
  if (diag != nullptr) {
    add_to(s, diag, nk);
  }
  if (mods.bias.data != nullptr) {
    const MaskView& bv = mods.bias;
    const T* row = static_cast<const T*>(bv.data) + b * bv.stride[0] + h * bv.stride[1] +
                   i * bv.stride[2] + j0 * bv.stride[3];
    for (int64_t j = 0; j < nk; ++j) {
      s[j] += row[j * bv.stride[3]];
    }
  }
  int64_t lo = 0, hi = mods.Lk - 1;
  if (mods.has_interval()) {
    mods.interval(b, i, lo, hi);
  }
  const int64_t first = std::min(std::max<int64_t>(lo - j0, 0), nk);
  std::fill(s, s + first, neg_inf<T>());
  if (mods.q_doc != nullptr) {
    const int64_t qd = mods.q_doc[b * mods.q_doc_b + i];
    const int64_t* kd = mods.k_doc + b * mods.k_doc_b + j0;
    for (int64_t j = first; j < nk; ++j) {
      s[j] = kd[j] == qd ? s[j] : neg_inf<T>();
    }
  }
  if (mods.kinds != nullptr) {
    for (int64_t j = first; j < nk; ++j) {
      if (!mods.block_allowed(b, h, i, j0 + j)) {
        s[j] = neg_inf<T>();
      }
    }
  }
  prepare_row<T>(s, nk, nk_pad, mods.mask, b, h, i, j0, hi);
}

/// The forward's transposed tile S^T[j, c] for keys j0 + j and queries i0 + c, modified and
/// masked as modify_row does (`rdiag` indexed by c - j + nk - 1).
template <typename T>
void modify_transposed(
    const Modifiers<T>& mods, T* st, int64_t ld, int64_t nk, int64_t nq, int64_t nq_pad,
    const T* rdiag, int64_t b, int64_t h, int64_t i0, int64_t j0) {
  for (int64_t j = 0; j < nk; ++j) {
    T* row = st + j * ld;
    if (mods.softcap > 0) {
      softcap_scores(row, nq_pad, mods.softcap, mods.inv_softcap);
    }
    if (rdiag != nullptr) {
      add_to(row, rdiag + (nk - 1 - j), nq);
    }
    if (mods.bias.data != nullptr) {
      const MaskView& bv = mods.bias;
      const T* m = static_cast<const T*>(bv.data) + b * bv.stride[0] + h * bv.stride[1] +
                   i0 * bv.stride[2] + (j0 + j) * bv.stride[3];
      for (int64_t c = 0; c < nq; ++c) {
        row[c] += m[c * bv.stride[2]];
      }
    }
  }
  mask_transposed(st, ld, nk, nq, mods.mask, b, h, i0, j0, /*causal=*/false);
  if (mods.has_interval()) {
    // Key j0 + j is seen by the queries c in [first, last): those with hi >= j0 + j, a suffix,
    // and lo <= j0 + j, a prefix (lo and hi never decrease with the query); both bounds
    // move forward with j.
    int64_t first = 0, last = 0;
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t jj = j0 + j;
      int64_t lo, hi;
      for (; first < nq; ++first) {
        mods.interval(b, i0 + first, lo, hi);
        if (hi >= jj) {
          break;
        }
      }
      for (last = std::max(last, first); last < nq; ++last) {
        mods.interval(b, i0 + last, lo, hi);
        if (lo > jj) {
          break;
        }
      }
      T* row = st + j * ld;
      std::fill(row, row + first, neg_inf<T>());
      std::fill(row + last, row + nq, neg_inf<T>());
    }
  }
  if (mods.q_doc != nullptr) {
    const int64_t* qd = mods.q_doc + b * mods.q_doc_b + i0;
    const int64_t* kd = mods.k_doc + b * mods.k_doc_b + j0;
    for (int64_t j = 0; j < nk; ++j) {
      T* row = st + j * ld;
      for (int64_t c = 0; c < nq; ++c) {
        row[c] = qd[c] == kd[j] ? row[c] : neg_inf<T>();
      }
    }
  }
  if (mods.kinds != nullptr) {
    for (int64_t j = 0; j < nk; ++j) {
      for (int64_t c = 0; c < nq; ++c) {
        if (!mods.block_allowed(b, h, i0 + c, j0 + j)) {
          st[j * ld + c] = neg_inf<T>();
        }
      }
    }
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
