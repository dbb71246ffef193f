#pragma once

// The fused attention kernel's forward, its state: what every tile reads and writes (Forward),
// a kv head's keys and values as the products read them (ValueRows, packed once per head) and
// a tile of queries with its buffers (QueryTile, packed per tile). See forward.cpp.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/kernel.h"
#include "ops/cpu/flash_attention/low_precision.h"
#include "ops/cpu/flash_attention/micro_kernel_bf16.h"
#include "ops/cpu/flash_attention/modifiers.h"
#include "ops/cpu/flash_attention/packing.h"
#include "ops/cpu/flash_attention/pair_packing.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

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

/// The keys of a tile that causal, window or prefix mask in part, relative to the tile: query
/// column c sees [lo[c], hi[c]]; of a vector v of 16 columns, all see [all_lo[v], all_hi[v]]
/// and some see [any_lo[v], any_hi[v]] (Forward::pairs, StoreExp2Pairs<true>).
struct BandColumns {
  static constexpr int64_t kCols = (kBlockQForward + 15) / 16 * 16, kVecs = kCols / 16;
  int32_t lo[kCols], hi[kCols];
  int32_t all_lo[kVecs], all_hi[kVecs], any_lo[kVecs], any_hi[kVecs];
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
  BandColumns* band; // Forward::pairs: the queries' keys in a band tile (band_columns)
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
  thread_local BandColumns band;
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
    t.band = &band;
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

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
