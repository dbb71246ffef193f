// The fused attention kernel's backward: recomputes the scores per tile from the forward's row
// statistics (no buffer grows with Lq x Lk) and accumulates dQ, dK and dV.
//
// The steps, per work item (a kv head, or a chunk of its key tiles, backward_item): pack a head
// (once per head: operands in the micro-kernel's layouts and each row's delta and statistics;
// backward_heads.h); a key tile (for each query head of its group and each query tile that
// sees it: P, dV, dS, dK and dQ; backward_tiles.h); finish a head (dQ summed over the chunks
// in a fixed order, buffers freed).
// Under grouped-query attention a work item holds every query head that reads its kv head, so
// that dK and dV are summed over the group in a fixed order, by one thread.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_attention/backward_heads.h"
#include "ops/cpu/flash_attention/backward_tiles.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// A key tile of kv head `kv`: its dK and dV over every query head of the group and every
/// query tile that sees it, written to grad_key and grad_value.
template <typename T>
void key_tile(
    const Backward<T>& g, BackwardHead<T>* heads, const BackwardKV<T>& kvh,
    const KeyTileBuffers<T>& buf, int64_t kv, int64_t chunk, int64_t kt) {
  const Dims& d = g.d;
  constexpr int64_t W = Vectorized<T>::size();
  const int64_t j0 = kt * g.bk;
  const int64_t nk = std::min(g.bk, d.Lk - j0);
  std::fill(buf.dk, buf.dk + nk * g.E_pad, T(0));
  std::fill(buf.dv, buf.dv + nk * g.Ev_pad, T(0));
  const int64_t b = kv / (d.H / g.group);
  // Only the queries that may see these keys: query tiles start at the first of them.
  int64_t i_begin, i_end;
  g.mods.query_range(b, j0, j0 + nk - 1, i_begin, i_end);
  if (g.pairs) {
    i_begin -= i_begin % 2; // pairs of queries start at even rows; the extra row sees no key
  }
  for (int64_t q_head = 0; q_head < g.group; ++q_head) {
    const int64_t h = (kv % (d.H / g.group)) * g.group + q_head;
    const int64_t bh = b * d.H + h;
    for (int64_t i0 = i_begin; i0 < i_end; i0 += kBlockQBackward) {
      const int64_t nq = std::min(kBlockQBackward, d.Lq - i0);
      // Only the keys up to the last these queries may see (causal, window, prefix), whole
      // vectors of them: the rest have P = 0 and dS = 0 here (the causal diagonal's blocks
      // are otherwise half zeros).
      int64_t k_first, k_end;
      g.mods.key_range(b, i0, i0 + nq, k_first, k_end);
      const int64_t nk_seen = std::clamp<int64_t>(round_up(k_end - j0, W), W, nk);
      const TilePos tp{bh, b, h, i0, nq, j0, nk_seen, round_up(nk_seen, W)};
      const TileKind kind = g.mods.classify(b, h, i0, tp.nq, j0, tp.nk);
      if (kind != TileKind::empty) {
        query_tile_gradients(g, heads[bh], kvh, buf, chunk, tp, kind);
      }
    }
  }
  // In their own dtype (store_as); their rows are contiguous (asserted by backward_impl).
  const at::Tensor& gk = g.grads.grad_key;
  const at::Tensor& gv = g.grads.grad_value;
  const at::ScalarType gk_type = gk.scalar_type(), gv_type = gv.scalar_type();
  void* const gk_data = gk.data_ptr();
  void* const gv_data = gv.data_ptr();
  const int64_t gk_head = kv_offset(gk, kv), gv_head = kv_offset(gv, kv);
  const int64_t gk2 = gk.stride(2), gv2 = gv.stride(2);
  for (int64_t r = 0; r < nk; ++r) {
    store_as(buf.dk + r * g.E_pad, d.E, gk_type, gk_data, gk_head + (j0 + r) * gk2, 1);
    store_as(buf.dv + r * g.Ev_pad, d.Ev, gv_type, gv_data, gv_head + (j0 + r) * gv2, 1);
  }
}

/// Finish a query head: grad_query = scale * the chunks' accumulators summed in chunk order,
/// likewise the diagonal sums; the head's buffers freed.
template <typename T>
void finish_head(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  const Dims& d = g.d;
  const T scale = static_cast<T>(g.args.scale);
  const at::Tensor& gq = g.grads.grad_query;
  const at::ScalarType gq_type = gq.scalar_type();
  void* const gq_data = gq.data_ptr();
  const int64_t gq_head = head_offset(gq, bh, d.H), gs2 = gq.stride(2), gs3 = gq.stride(3);
  // Vectors along E (E_pad is whole vectors): each lane sums its chunks in chunk order from 0,
  // as a scalar loop would, so the bits do not depend on the vector width. The sums replace
  // chunk 0's row, which goes to grad_query in its own dtype (store_as).
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  for (int64_t i = 0; i < d.Lq; ++i) {
    T* row = hd.dq_acc.get() + i * g.E_pad;
    for (int64_t e = 0; e < d.E; e += W) {
      Vec sum(T(0));
      for (int64_t c = 0; c < g.chunks; ++c) {
        sum = sum + Vec::loadu(hd.dq_acc.get() + (c * d.Lq + i) * g.E_pad + e);
      }
      (sum * Vec(scale)).store(row + e);
    }
    store_as(row, d.E, gq_type, gq_data, gq_head + i * gs2, gs3);
  }
  if (hd.diag_acc) {
    double* out = g.grads.grad_diagonal.template data_ptr<double>() + bh * g.n_diag;
    for (int64_t c = 0; c < g.chunks; ++c) {
      for (int64_t v = 0; v < g.n_diag; ++v) {
        out[v] += hd.diag_acc[c * g.n_diag + v];
      }
    }
  }
  for (auto* buf : {&hd.delta, &hd.m, &hd.log2_sum}) {
    g.pool->give(d.Lq, *buf);
  }
  g.pool->give(d.Lq * g.E_pad, hd.q_s);
  g.pool->give(g.chunks * d.Lq * g.E_pad, hd.dq_acc);
  hd.do_p.reset();
  hd.diag_acc.reset();
  for (auto* p : {&hd.q_e, &hd.q_q, &hd.do_e, &hd.do_q}) {
    p->reset();
  }
}

/// One work item: a chunk of one kv head's key tiles, interleaved so that each chunk gets
/// early (long) and late causal tiles.
template <typename T>
void backward_item(const Backward<T>& g, BackwardHead<T>* heads, BackwardKV<T>* kvs, int64_t item) {
  constexpr int64_t BK = block_k<T>();
  int64_t kv, chunk;
  interleaved_item(item, g.d.B * g.d.H / g.group, g.chunks, g.lanes, kv, chunk);
  const int64_t first_bh = first_query_head(kv, g.d.H, g.group);
  BackwardKV<T>& kvh = kvs[kv];
  std::call_once(kvh.packed, [&] { pack_kv(g, kvh, kv); });
  for (int64_t q_head = 0; q_head < g.group; ++q_head) {
    const int64_t bh = first_bh + q_head;
    std::call_once(heads[bh].packed, [&] { pack_head(g, heads[bh], bh); });
  }
  thread_local std::vector<T> probs, dscores, tanhs, dk, dv, diag, diag_ds;
  probs.resize(static_cast<size_t>(kBlockQBackward * BK));
  dscores.resize(static_cast<size_t>(kBlockQBackward * BK));
  tanhs.resize(static_cast<size_t>(kBlockQBackward * BK));
  dk.resize(static_cast<size_t>(BK * g.E_pad));
  dv.resize(static_cast<size_t>(BK * g.Ev_pad));
  diag.resize(static_cast<size_t>(kBlockQBackward + BK));
  diag_ds.resize(static_cast<size_t>(kBlockQBackward + BK));
  thread_local std::vector<uint32_t> p_q, ds_q, ds_k;
  if (g.pairs) {
    p_q.resize(static_cast<size_t>(kBlockQBackward / 2 * BK));
    ds_q.resize(static_cast<size_t>(kBlockQBackward / 2 * BK));
    ds_k.resize(static_cast<size_t>(kBlockQBackward * BK / 2));
  }
  const KeyTileBuffers<T> buf{probs.data(), dscores.data(), tanhs.data(), dk.data(),   dv.data(),
                              diag.data(),  diag_ds.data(), p_q.data(),   ds_q.data(), ds_k.data()};
  for (int64_t kt = chunk; kt < g.k_tiles; kt += g.chunks) {
    key_tile(g, heads, kvh, buf, kv, chunk, kt);
  }
  if (--kvh.chunks_left == 0) {
    for (int64_t q_head = 0; q_head < g.group; ++q_head) {
      finish_head(g, heads[first_bh + q_head], first_bh + q_head);
    }
    kvh.k_p.reset();
    g.pool->give(g.d.E * g.Lk_pad, kvh.k_t);
    g.pool->give(g.d.Ev * g.Lk_pad, kvh.v_t);
    kvh.k_e.reset();
    kvh.k_k.reset();
    kvh.v_e.reset();
  }
}

template <typename T>
void backward_impl(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    FlashGrads& grads, bool pairs = false) {
  // grad_out [B, H, Lq, Ev] -> grad_query [B, H, Lq, E], grad_key [B, H_kv, Lk, E],
  //                            grad_value [B, H_kv, Lk, Ev]
  constexpr int64_t W = Vectorized<T>::size();
  TORCH_INTERNAL_ASSERT(
      grads.grad_key.stride(3) == 1 && grads.grad_value.stride(3) == 1,
      "flash_attention_backward: grad_key and grad_value must have contiguous rows");
  const Dims d = dims_of(query, key, value);
  const int64_t kv_heads = d.B * key.size(1);
  const Modifiers<T> mods(mask, args, d);
  const int64_t bk = mods.backward_block_k(block_k<T>(), panel_width<T>());
  const int64_t k_tiles = (d.Lk + bk - 1) / bk;
  // With few kv heads, each one's key tiles are split into chunks, each with its own
  // grad_query accumulators (summed at the end, in chunk order). The split depends on the
  // shape alone, never on the thread count, so that the sums, and so the gradients, are the
  // same bits on any number of threads. At least one chunk, even with no keys: it writes
  // grad_query (zeros).
  const int64_t chunks =
      kv_heads == 0 || kv_heads >= kSplitWorkers
          ? 1
          : std::max<int64_t>(1, std::min(k_tiles, (kSplitWorkers + kv_heads - 1) / kv_heads));
  BufferPool<T> pool;
  const Backward<T> g{
      grad_out,
      query,
      key,
      value,
      out,
      row_max.data_ptr<T>(),
      row_log_sum.data_ptr<T>(),
      grads,
      mods,
      args,
      d,
      k_tiles,
      (d.Lq + kBlockQBackward - 1) / kBlockQBackward,
      chunks,
      round_up(d.E, W),
      round_up(d.Ev, W),
      round_up(d.Lk, panel_width<T>()),
      d.H / key.size(1),
      d.Lq + d.Lk - 1,
      bk,
      item_lanes(kv_heads),
      &pool,
      pairs};
  std::unique_ptr<BackwardHead<T>[]> heads(new BackwardHead<T>[static_cast<size_t>(d.BH())]);
  std::unique_ptr<BackwardKV<T>[]> kvs(new BackwardKV<T>[static_cast<size_t>(kv_heads)]);
  for (int64_t kv = 0; kv < kv_heads; ++kv) {
    kvs[kv].chunks_left = chunks;
  }
  parallel_items(
      kv_heads * chunks, [&](int64_t item) { backward_item(g, heads.get(), kvs.get(), item); });
}

} // namespace

void flash_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    FlashGrads& grads) {
  if (is_low_precision(query.scalar_type())) {
    // bfloat16, float16: in float32 with P and dS rounded (low_precision.h). The kernel
    // converts grad_out a head at a time and writes the gradients in their dtype (store_as);
    // grad_bias is float32 already.
#if TORCHATTN_BF16_DOT
    if (query.scalar_type() == at::kBFloat16) {
      // bfloat16 products by vdpbf16ps: query, key and value stay bfloat16.
      backward_impl<float>(
          grad_out, query, key, value, to_float(mask), to_float(out), row_max, row_log_sum,
          float_args(args, at::kBFloat16), grads, /*pairs=*/true);
      return;
    }
#endif
    backward_impl<float>(
        grad_out, query, key, value, to_float(mask), to_float(out), row_max, row_log_sum,
        float_args(args, query.scalar_type()), grads);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_backward", [&] {
    backward_impl<scalar_t>(
        grad_out, query, key, value, mask, out, row_max, row_log_sum, args, grads);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
