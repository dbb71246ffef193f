// The fused attention kernel's backward: recomputes the scores per tile from the forward's row
// statistics (no buffer grows with Lq x Lk) and accumulates dQ, dK and dV.
//
// The steps, per work item (a head, or a chunk of its key tiles, backward_item): pack a head
// (once per head: operands in the micro-kernel's layouts and each row's delta and statistics);
// a key tile (for each of its query tiles: P, dV, dS, dK and dQ); finish a head (dQ summed
// over the chunks in a fixed order, buffers freed).
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_attention/epilogues.h"
#include "ops/cpu/flash_attention/masks.h"
#include "ops/cpu/flash_attention/packing.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// What every work item of the backward reads and writes.
template <typename T>
struct Backward {
  const at::Tensor& grad_out;
  const at::Tensor& query;
  const at::Tensor& key;
  const at::Tensor& value;
  const at::Tensor& out;
  const T* row_max;
  const T* row_log_sum;
  at::Tensor& grad_query;
  at::Tensor& grad_key;
  at::Tensor& grad_value;
  MaskView mask;
  FlashArgs args;
  Dims d;
  int64_t k_tiles, q_tiles, chunks, E_pad, Ev_pad, Lk_pad;
};

/// Per head, packed by the first chunk that needs it and freed by the last, which also writes
/// grad_query: q times the scale and grad_out as rows, keys as rows and in transposed panels,
/// values in transposed panels, delta = rowsum(grad_out * out), the row statistics and one
/// grad_query accumulator per chunk.
template <typename T>
struct BackwardHead {
  std::once_flag packed;
  std::atomic<int64_t> chunks_left{0};
  std::unique_ptr<T[]> q_s, do_p, k_p, k_t, v_t, delta, m, log2_sum, dq_acc;
  const T* do_rows = nullptr; // do_p or grad_out itself; likewise k_rows
  const T* k_rows = nullptr;
  int64_t ld_do = 0, ld_k = 0;
};

/// Each row's delta and statistics in backward's form.
template <typename T>
void row_statistics(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  using Vec = Vectorized<T>;
  const Dims& d = g.d;
  const T* o_head = g.out.template data_ptr<T>() + head_offset(g.out, bh, d.H);
  for (int64_t i = 0; i < d.Lq; ++i) {
    // delta = rowsum(dO * O), summed exactly as the micro-kernel sums dP = dO Vᵀ (the same
    // fmadd, in the same order): where all of a row's weight is on one key, O is that key's
    // value to the bit, so delta equals its dP to the bit and dS = P (dP - delta) is 0, as in
    // exact arithmetic. A huge scale or huge queries would magnify any residue.
    Vec acc(T(0));
    for (int64_t e = 0; e < d.Ev; ++e) {
      acc = at::vec::fmadd(
          Vec(hd.do_rows[i * hd.ld_do + e]), Vec(o_head[i * g.out.stride(2) + e * g.out.stride(3)]),
          acc);
    }
    T lanes[Vec::size()];
    acc.store(lanes);
    hd.delta[i] = lanes[0];
    // A fully masked row (max -inf) gets weights exp2(-inf) = 0 from log2_sum = +inf.
    const T mx = g.row_max[bh * d.Lq + i];
    const bool dead = mx == neg_inf<T>();
    hd.m[i] = dead ? T(0) : mx;
    hd.log2_sum[i] = dead ? std::numeric_limits<T>::infinity()
                          : static_cast<T>(g.row_log_sum[bh * d.Lq + i] * kLog2e);
  }
}

/// Pack a head.
template <typename T>
void pack_head(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  const Dims& d = g.d;
  const int64_t PW = panel_width<T>();
  auto alloc = [](std::unique_ptr<T[]>& buf, int64_t n) {
    buf.reset(new T[static_cast<size_t>(n)]);
  };
  alloc(hd.k_t, d.E * g.Lk_pad);
  alloc(hd.v_t, d.Ev * g.Lk_pad);
  alloc(hd.delta, d.Lq);
  alloc(hd.q_s, d.Lq * g.E_pad);
  alloc(hd.m, d.Lq);
  alloc(hd.log2_sum, d.Lq);
  alloc(hd.dq_acc, g.chunks * d.Lq * g.E_pad);
  const T* k = g.key.template data_ptr<T>() + head_offset(g.key, bh, d.H);
  const T* v = g.value.template data_ptr<T>() + head_offset(g.value, bh, d.H);
  hd.do_rows = rows_of(
      g.grad_out.template data_ptr<T>() + head_offset(g.grad_out, bh, d.H), d.Lq, d.Ev,
      g.grad_out.stride(2), g.grad_out.stride(3), hd.do_p, hd.ld_do);
  hd.k_rows = rows_of(k, d.Lk, d.E, g.key.stride(2), g.key.stride(3), hd.k_p, hd.ld_k);
  // The queries times the scale exactly as the forward (and the math path) scales them, so
  // that backward's scores are the forward's to the bit (the same products, summed in the same
  // order): P then stays exact where one key takes all the weight. dK = dSᵀ (Q scale) takes
  // the same rows, as the math path's gradient does: scaling after the product would overflow
  // where q is huge and the scale tiny, and give inf * 0 at scale 0.
  pack(
      g.query.template data_ptr<T>() + head_offset(g.query, bh, d.H), d.Lq, d.E, g.query.stride(2),
      g.query.stride(3), hd.q_s.get(), g.E_pad, static_cast<T>(g.args.scale));
  pack_transposed_panels(k, d.Lk, d.E, g.key.stride(2), g.key.stride(3), hd.k_t.get(), PW);
  pack_transposed_panels(v, d.Lk, d.Ev, g.value.stride(2), g.value.stride(3), hd.v_t.get(), PW);
  std::fill(hd.dq_acc.get(), hd.dq_acc.get() + g.chunks * d.Lq * g.E_pad, T(0));
  row_statistics(g, hd, bh);
}

/// The tile buffers of one thread: P and dS [kBlockQBackward, BK], dK [BK, E_pad] and dV
/// [BK, Ev_pad].
template <typename T>
struct KeyTileBuffers {
  T* p;
  T* ds;
  T* dk;
  T* dv;
};

/// P = exp(S - max - log_sum) for queries [i0, i0 + nq) and keys [j0, j0 + nk): in the GEMM's
/// epilogue where no mask and no padding column touches the tile, else after masking row by
/// row.
template <typename T>
void probabilities(
    const Backward<T>& g, const BackwardHead<T>& hd, int64_t bh, T* p, int64_t i0, int64_t nq,
    int64_t j0, int64_t nk) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t BK = block_k<T>();
  const int64_t PW = panel_width<T>();
  const int64_t E = g.d.E, E_pad = g.E_pad;
  const int64_t nk_pad = round_up(nk, W);
  const T* qs = hd.q_s.get() + i0 * E_pad;
  const T* k_panels = hd.k_t.get() + j0 * E;
  const T* row_m = hd.m.get();
  const T* row_log2_sum = hd.log2_sum.get();
  if (g.mask.data == nullptr && !(g.args.is_causal && j0 + nk - 1 > i0) && nk == nk_pad) {
    gemm<T>(
        nq, nk_pad, E, qs, E_pad, 1, k_panels, PW, E * PW, p, BK, /*accumulate=*/false,
        StoreExp2<T>{row_m + i0, row_log2_sum + i0});
    return;
  }
  gemm<T>(nq, nk_pad, E, qs, E_pad, 1, k_panels, PW, E * PW, p, BK, /*accumulate=*/false);
  const int64_t b = bh / g.d.H, h = bh % g.d.H;
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    T* s = p + r * BK;
    prepare_row<T>(
        s, nk, nk_pad, g.mask, b, h, i, j0,
        g.args.is_causal ? i : std::numeric_limits<int64_t>::max() / 2);
    const Vec mx(row_m[i]), ls(row_log2_sum[i]);
    for (int64_t j = 0; j < nk_pad; j += W) {
      probability(Vec::loadu(s + j), mx, ls).store(s + j);
    }
  }
}

/// One query tile of a key tile: P, then dV += Pᵀ dO, dS = P (dP - delta) with dP = dO Vᵀ in
/// registers, dK += dSᵀ (Q scale) and dQ += dS K (scale applied when the head finishes).
template <typename T>
void query_tile_gradients(
    const Backward<T>& g, const BackwardHead<T>& hd, int64_t bh, const KeyTileBuffers<T>& buf,
    T* dq, int64_t i0, int64_t j0, int64_t nk) {
  constexpr int64_t BK = block_k<T>();
  const int64_t PW = panel_width<T>();
  const int64_t nq = std::min(kBlockQBackward, g.d.Lq - i0);
  const int64_t nk_pad = round_up(nk, Vectorized<T>::size());
  const int64_t E_pad = g.E_pad, Ev_pad = g.Ev_pad, Ev = g.d.Ev;
  const T* doh = hd.do_rows + i0 * hd.ld_do;
  const T* qs = hd.q_s.get() + i0 * E_pad;
  probabilities(g, hd, bh, buf.p, i0, nq, j0, nk);
  gemm<T>(nk, Ev_pad, nq, buf.p, 1, BK, doh, hd.ld_do, PW, buf.dv, Ev_pad, /*accumulate=*/true);
  gemm<T>(
      nq, nk_pad, Ev, doh, hd.ld_do, 1, hd.v_t.get() + j0 * Ev, PW, Ev * PW, buf.ds, BK,
      /*accumulate=*/false, StoreSoftmaxGrad<T>{buf.p, hd.delta.get() + i0});
  gemm<T>(nk, E_pad, nq, buf.ds, 1, BK, qs, E_pad, PW, buf.dk, E_pad, /*accumulate=*/true);
  gemm<T>(
      nq, E_pad, nk, buf.ds, BK, 1, hd.k_rows + j0 * hd.ld_k, hd.ld_k, PW, dq + i0 * E_pad, E_pad,
      /*accumulate=*/true);
}

/// A key tile: its dK and dV over every query tile that sees it, written to grad_key and
/// grad_value; dQ accumulates into the chunk's accumulator `dq`.
template <typename T>
void key_tile(
    const Backward<T>& g, const BackwardHead<T>& hd, int64_t bh, const KeyTileBuffers<T>& buf,
    T* dq, int64_t kt) {
  constexpr int64_t BK = block_k<T>();
  const Dims& d = g.d;
  const int64_t j0 = kt * BK;
  const int64_t nk = std::min(BK, d.Lk - j0);
  std::fill(buf.dk, buf.dk + BK * g.E_pad, T(0));
  std::fill(buf.dv, buf.dv + BK * g.Ev_pad, T(0));
  // Causal: queries before j0 see none of these keys.
  const int64_t qt_begin = g.args.is_causal ? std::min(j0, d.Lq) / kBlockQBackward : 0;
  for (int64_t qt = qt_begin; qt < g.q_tiles; ++qt) {
    query_tile_gradients(g, hd, bh, buf, dq, qt * kBlockQBackward, j0, nk);
  }
  T* gk_head = g.grad_key.template data_ptr<T>() + head_offset(g.grad_key, bh, d.H);
  T* gv_head = g.grad_value.template data_ptr<T>() + head_offset(g.grad_value, bh, d.H);
  for (int64_t r = 0; r < nk; ++r) {
    T* gk_row = gk_head + (j0 + r) * g.grad_key.stride(2);
    for (int64_t e = 0; e < d.E; ++e) {
      gk_row[e * g.grad_key.stride(3)] = buf.dk[r * g.E_pad + e];
    }
    T* gv_row = gv_head + (j0 + r) * g.grad_value.stride(2);
    for (int64_t e = 0; e < d.Ev; ++e) {
      gv_row[e * g.grad_value.stride(3)] = buf.dv[r * g.Ev_pad + e];
    }
  }
}

/// Finish a head: grad_query = scale * the chunks' accumulators summed in chunk order; the
/// head's buffers freed.
template <typename T>
void finish_head(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  const Dims& d = g.d;
  const T scale = static_cast<T>(g.args.scale);
  T* gq_head = g.grad_query.template data_ptr<T>() + head_offset(g.grad_query, bh, d.H);
  for (int64_t i = 0; i < d.Lq; ++i) {
    T* row = gq_head + i * g.grad_query.stride(2);
    for (int64_t e = 0; e < d.E; ++e) {
      T sum = 0;
      for (int64_t c = 0; c < g.chunks; ++c) {
        sum += hd.dq_acc[(c * d.Lq + i) * g.E_pad + e];
      }
      row[e * g.grad_query.stride(3)] = sum * scale;
    }
  }
  for (auto* buf :
       {&hd.q_s, &hd.do_p, &hd.k_p, &hd.k_t, &hd.v_t, &hd.delta, &hd.m, &hd.log2_sum, &hd.dq_acc}) {
    buf->reset();
  }
}

/// One work item: a chunk of one head's key tiles, interleaved so that each chunk gets early
/// (long) and late causal tiles.
template <typename T>
void backward_item(const Backward<T>& g, BackwardHead<T>* heads, int64_t item) {
  constexpr int64_t BK = block_k<T>();
  const int64_t bh = item / g.chunks;
  const int64_t chunk = item % g.chunks;
  BackwardHead<T>& hd = heads[bh];
  std::call_once(hd.packed, [&] { pack_head(g, hd, bh); });
  thread_local std::vector<T> probs, dscores, dk, dv;
  probs.resize(static_cast<size_t>(kBlockQBackward * BK));
  dscores.resize(static_cast<size_t>(kBlockQBackward * BK));
  dk.resize(static_cast<size_t>(BK * g.E_pad));
  dv.resize(static_cast<size_t>(BK * g.Ev_pad));
  const KeyTileBuffers<T> buf{probs.data(), dscores.data(), dk.data(), dv.data()};
  T* dq = hd.dq_acc.get() + chunk * g.d.Lq * g.E_pad;
  for (int64_t kt = chunk; kt < g.k_tiles; kt += g.chunks) {
    key_tile(g, hd, bh, buf, dq, kt);
  }
  if (--hd.chunks_left == 0) {
    finish_head(g, hd, bh);
  }
}

template <typename T>
void backward_impl(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value) {
  // grad_out [B, H, Lq, Ev] -> grad_query [B, H, Lq, E], grad_key [B, H, Lk, E],
  //                            grad_value [B, H, Lk, Ev]
  constexpr int64_t W = Vectorized<T>::size();
  const Dims d = dims_of(query, key, value);
  const int64_t BH = d.BH();
  const int64_t k_tiles = (d.Lk + block_k<T>() - 1) / block_k<T>();
  // With few heads, each head's key tiles are split into chunks, each with its own grad_query
  // accumulator (summed at the end, in chunk order). The split depends on the shape alone,
  // never on the thread count, so that the sums, and so the gradients, are the same bits on
  // any number of threads. At least one chunk, even with no keys: it writes grad_query (zeros).
  const int64_t chunks =
      BH == 0 || BH >= kSplitWorkers
          ? 1
          : std::max<int64_t>(1, std::min(k_tiles, (kSplitWorkers + BH - 1) / BH));
  const Backward<T> g{
      grad_out,
      query,
      key,
      value,
      out,
      row_max.data_ptr<T>(),
      row_log_sum.data_ptr<T>(),
      grad_query,
      grad_key,
      grad_value,
      MaskView(mask),
      args,
      d,
      k_tiles,
      (d.Lq + kBlockQBackward - 1) / kBlockQBackward,
      chunks,
      round_up(d.E, W),
      round_up(d.Ev, W),
      round_up(d.Lk, panel_width<T>())};
  std::unique_ptr<BackwardHead<T>[]> heads(new BackwardHead<T>[static_cast<size_t>(BH)]);
  for (int64_t bh = 0; bh < BH; ++bh) {
    heads[bh].chunks_left = chunks;
  }
  parallel_items(BH * chunks, [&](int64_t item) { backward_item(g, heads.get(), item); });
}

} // namespace

void flash_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    at::Tensor& grad_query, at::Tensor& grad_key, at::Tensor& grad_value) {
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_backward", [&] {
    backward_impl<scalar_t>(
        grad_out, query, key, value, mask, out, row_max, row_log_sum, args, grad_query, grad_key,
        grad_value);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
