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
// The steps, per tile of queries (forward_tile): pack the query tile (forward_tiles.h); score
// each key tile (masked, first, or lazily rescaled: forward_scores.h) and accumulate P V;
// finish the rows.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_attention/forward_scores.h"
#include "ops/cpu/flash_attention/forward_tiles.h"

#include <algorithm>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

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
    }
    // Forward::pairs: a tile that only causal, window or prefix mask in part is scored as an
    // unmasked one, its band in the epilogue, once every query has a running max.
    const bool band = f.pairs && m_ready && kind == TileKind::partial && f.mods.band_only();
    if ((modified || kind == TileKind::partial) && !band) {
      score_masked_tile(f, t, k_tile, j0, nk, c0, c1);
    } else if (!m_ready) {
      score_first_tile(f, t, k_tile, nk);
    } else {
      packed = score_lazy_tile(f, t, k_tile, j0, nk, c0, c1, band);
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
