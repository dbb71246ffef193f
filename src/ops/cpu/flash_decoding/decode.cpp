// The decoding kernel (flash-decoding): few queries per head (Lq of 1 to 16) against a long
// key/value cache. Decoding is bound by reading the cache, so the kernel is built around one
// pass over it:
//   - the keys of each kv head are split into chunks, and chunks of every head are the work
//     items of all threads, so one head (B x H_kv = 1) still uses every core;
//   - an item reads a block of 1024 keys as one stream, then its values as another, scoring
//     all query rows of its kv head (the H / H_kv query heads of the group times Lq) against
//     each key, with an online softmax per block, and accumulating P V the same way: each
//     cache row is read from memory once (64-key sub-blocks, which would keep a block's rows
//     in L1 for the second run of query rows, read 4-6% slower for one row and no faster for
//     GQA 32/8);
//   - the items' partial results (their running max, sum and P V) are merged per row by their
//     logsumexp, as FlashAttention's split-KV decoding does.
// Per-row cache lengths and query positions come from DecodeArgs (see kernel.h).
//
// bfloat16 and float16 caches are read in their own dtype and computed in float32 (rows.h),
// with the fused kernel's rounding (flash_attention/low_precision.h): P is rounded to the
// dtype before P V, the output is divided by the sum of the rounded weights and returned in
// float32 for the op to round once, and the logsumexp (float32) sums the unrounded weights.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_decoding/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_decoding/rows.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

// Work items per thread that the split aims for, so uneven chunks still balance; and the
// fewest keys worth an item of its own (merging costs a row of Ev per item).
constexpr int64_t kItemsPerThread = 4;
constexpr int64_t kMinChunk = 256;
// How many rows ahead of the one being read each stream prefetches (64 KiB of keys or values:
// far enough for memory's latency, near enough for L2).
constexpr int64_t kPrefetchRows = 128;

/// One work item: keys [begin, end) of the kv head `group` (b * H_kv + g).
struct Item {
  int64_t group, begin, end;
};

/// T: the compute type (float, double); C: the cache's (T, or bfloat16/float16 with T float).
template <typename T, typename C>
struct Decode {
  // P is rounded to the cache's dtype before P V when that is narrower than T.
  static constexpr bool kRound = !std::is_same_v<T, C>;
  static constexpr bool kHalf = std::is_same_v<C, c10::Half>;
  const C* key = nullptr;
  const C* value = nullptr;
  int64_t k_sb = 0, k_sh = 0, k_sl = 0, v_sb = 0, v_sh = 0, v_sl = 0;
  int64_t B = 0, H = 0, Hkv = 0, Lq = 0, E = 0, Ev = 0;
  int64_t G = 0, R = 0, Ep = 0, Evp = 0; // query heads per kv head, rows per group, padded E, Ev
  std::vector<T> q;                // scaled queries [B, H, Lq, Ep]: a group's R rows are contiguous
  std::vector<int64_t> first, end; // the keys row (b, i) sees: [first, end), per [B, Lq]
  std::vector<Item> items;
  std::vector<int64_t> group_items; // items of group g: [group_items[g], group_items[g + 1])
  std::vector<T> acc, max, sum;     // per item: [R, Evp], [R], [R]
  std::vector<T> rounded_sum;       // per item [R]: the sum of the rounded weights (kRound)
};

/// The key range of each row (b, i), from the cache lengths, query positions and masks.
template <typename T, typename C>
void key_ranges(Decode<T, C>& d, const DecodeArgs& args, int64_t Lk) {
  d.first.resize(d.B * d.Lq);
  d.end.resize(d.B * d.Lq);
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t len = args.kv_len.defined() ? args.kv_len.data_ptr<int64_t>()[b] : Lk;
    const int64_t start = args.q_start.defined() ? args.q_start.data_ptr<int64_t>()[b] : len - d.Lq;
    for (int64_t i = 0; i < d.Lq; ++i) {
      const int64_t p = start + i;
      int64_t lo = 0, hi = len;
      if (args.causal) {
        hi = std::min(hi, p + 1);
      }
      if (args.window_left >= 0) {
        lo = std::max<int64_t>(0, p - args.window_left);
      }
      d.first[b * d.Lq + i] = lo;
      d.end[b * d.Lq + i] = std::max(lo, hi);
    }
  }
}

/// Splits each kv head's keys into items: about kItemsPerThread per thread over all heads,
/// none shorter than kMinChunk keys unless its head has fewer.
template <typename T, typename C>
void split_items(Decode<T, C>& d) {
  std::vector<int64_t> lo(d.B), hi(d.B);
  int64_t total = 0;
  for (int64_t b = 0; b < d.B; ++b) {
    lo[b] = *std::min_element(d.first.begin() + b * d.Lq, d.first.begin() + (b + 1) * d.Lq);
    hi[b] = *std::max_element(d.end.begin() + b * d.Lq, d.end.begin() + (b + 1) * d.Lq);
    total += std::max<int64_t>(0, hi[b] - lo[b]) * d.Hkv;
  }
  const int64_t groups = d.B * d.Hkv;
  const int64_t target = std::max(groups, at::get_num_threads() * kItemsPerThread);
  const int64_t chunk = std::max(kMinChunk, (total + target - 1) / target);
  d.group_items.assign(1, 0);
  for (int64_t group = 0; group < groups; ++group) {
    const int64_t b = group / d.Hkv, span = std::max<int64_t>(0, hi[b] - lo[b]);
    const int64_t n = (span + chunk - 1) / chunk;
    const int64_t step = n == 0 ? 0 : round_up((span + n - 1) / n, 64);
    for (int64_t begin = lo[b]; begin < hi[b]; begin += step) {
      d.items.push_back({group, begin, std::min(hi[b], begin + step)});
    }
    d.group_items.push_back(static_cast<int64_t>(d.items.size()));
  }
  const auto n = static_cast<size_t>(d.items.size());
  d.acc.assign(n * d.R * d.Evp, T(0));
  d.max.assign(n * d.R, neg_inf<T>());
  d.sum.assign(n * d.R, T(0));
  d.rounded_sum.assign(d.kRound ? n * d.R : 0, T(0));
}

/// The online softmax of one block for every row: masks keys outside each row's range, raises
/// the row's max (rescaling its sum and accumulator), and leaves P in s (0 where masked).
template <typename T, typename C>
void softmax_block(Decode<T, C>& d, const Item& it, int64_t item, int64_t j0, int64_t nb, T* s) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t b = it.group / d.Hkv;
  const int64_t nv = round_up(nb, W); // the block's scores in whole vectors
  for (int64_t r = 0; r < d.R; ++r) {
    T* sr = s + r * kDecodeKeys;
    const int64_t i = r % d.Lq;
    const int64_t lo = std::clamp<int64_t>(d.first[b * d.Lq + i] - j0, 0, nb);
    const int64_t hi = std::clamp<int64_t>(d.end[b * d.Lq + i] - j0, lo, nb);
    std::fill(sr, sr + lo, neg_inf<T>());
    std::fill(sr + hi, sr + nv, neg_inf<T>());
    if (lo == hi) {
      std::fill(sr, sr + nv, T(0));
      continue;
    }
    Vec bm(neg_inf<T>());
    for (int64_t j = 0; j < nv; j += W) {
      bm = max_fast(bm, Vec::loadu(sr + j));
    }
    T& m = d.max[item * d.R + r];
    T& l = d.sum[item * d.R + r];
    const T m_new = std::max(m, lane_max(bm));
    if (m_new == neg_inf<T>()) {
      // Every score is -inf or NaN: a NaN poisons the row's sum, as it does the math path's.
      if (std::any_of(sr + lo, sr + hi, [](T x) { return std::isnan(x); })) {
        l = std::numeric_limits<T>::quiet_NaN();
      }
      std::fill(sr, sr + nv, T(0));
      continue;
    }
    if (m_new > m) {
      const T alpha = m == neg_inf<T>() ? T(0) : std::exp(m - m_new);
      T* a = d.acc.data() + (item * d.R + r) * d.Evp;
      for (int64_t e = 0; e < d.Evp; e += W) {
        (Vec::loadu(a + e) * Vec(alpha)).store(a + e);
      }
      l *= alpha;
      if constexpr (Decode<T, C>::kRound) {
        d.rounded_sum[item * d.R + r] *= alpha;
      }
      m = m_new;
    }
    Vec total(T(0)), rounded(T(0));
    for (int64_t j = 0; j < nv; j += W) {
      Vec p = exp_minus(Vec::loadu(sr + j), Vec(m));
      total = total + p;
      if constexpr (Decode<T, C>::kRound) {
        p = round_lanes(p, Decode<T, C>::kHalf);
        rounded = rounded + p;
      }
      p.store(sr + j);
    }
    l += lane_sum(total);
    if constexpr (Decode<T, C>::kRound) {
      d.rounded_sum[item * d.R + r] += lane_sum(rounded);
    }
  }
}

/// One item: every row of its group against its keys, block by block.
template <typename T, typename C>
void decode_item(Decode<T, C>& d, int64_t item, T* s) {
  const Item& it = d.items[item];
  const int64_t b = it.group / d.Hkv, g = it.group % d.Hkv;
  const T* q = d.q.data() + (b * d.H + g * d.G) * d.Lq * d.Ep;
  const C* k = d.key + b * d.k_sb + g * d.k_sh;
  const C* v = d.value + b * d.v_sb + g * d.v_sh;
  T* acc = d.acc.data() + item * d.R * d.Evp;
  for (int64_t j0 = it.begin; j0 < it.end; j0 += kDecodeKeys) {
    const int64_t nb = std::min(kDecodeKeys, it.end - j0);
    // Row j of the block prefetches row j + kPrefetchRows of its stream.
    const int64_t ahead = j0 + kPrefetchRows;
    const int64_t n_ahead = std::clamp<int64_t>(it.end - ahead, 0, nb);
    const Prefetch<C> pk{k + ahead * d.k_sl, d.k_sl, n_ahead, d.E * int64_t(sizeof(C))};
    const Prefetch<C> pv{v + ahead * d.v_sl, d.v_sl, n_ahead, d.Ev * int64_t(sizeof(C))};
    // The first run of rows prefetches. (Not `r0 == 0 ? pk : none` in the lambda: GCC 12
    // loses the conditional's value there and drops the prefetches.)
    for_row_runs(d.R, [&](int64_t r0, auto rows) {
      Prefetch<C> pf;
      if (r0 == 0) {
        pf = pk;
      }
      score_rows<T, C, decltype(rows)::value>(
          q + r0 * d.Ep, d.Ep, k + j0 * d.k_sl, d.k_sl, nb, d.E, s + r0 * kDecodeKeys, pf);
    });
    softmax_block(d, it, item, j0, nb, s);
    for_row_runs(d.R, [&](int64_t r0, auto rows) {
      Prefetch<C> pf;
      if (r0 == 0) {
        pf = pv;
      }
      accumulate_rows<T, C, decltype(rows)::value>(
          s + r0 * kDecodeKeys, v + j0 * d.v_sl, d.v_sl, nb, d.Ev, acc + r0 * d.Evp, d.Evp, pf);
    });
  }
}

/// Merges the items of each group into its rows of out and lse, weighting each item's
/// accumulator by exp(its max - the row's max). The output is divided by the sum of the
/// weights it was accumulated with (rounded ones where P was rounded), lse takes the exact sum.
template <typename T, typename C>
void merge_group(const Decode<T, C>& d, int64_t group, T* out, T* lse) {
  const int64_t b = group / d.Hkv, g = group % d.Hkv;
  const int64_t i0 = d.group_items[group], i1 = d.group_items[group + 1];
  for (int64_t r = 0; r < d.R; ++r) {
    const int64_t row = (b * d.H + g * d.G) * d.Lq + r;
    T m = neg_inf<T>();
    for (int64_t i = i0; i < i1; ++i) {
      m = std::max(m, d.max[i * d.R + r]);
    }
    T* o = out + row * d.Ev;
    if (m == neg_inf<T>()) {
      // No key, or only NaN scores (their items' sums are NaN).
      bool nan = false;
      for (int64_t i = i0; i < i1; ++i) {
        nan = nan || std::isnan(d.sum[i * d.R + r]);
      }
      const T fill = nan ? std::numeric_limits<T>::quiet_NaN() : T(0);
      std::fill(o, o + d.Ev, fill);
      lse[row] = nan ? fill : neg_inf<T>();
      continue;
    }
    T l = 0, lo = 0;
    std::fill(o, o + d.Ev, T(0));
    for (int64_t i = i0; i < i1; ++i) {
      const T w = d.max[i * d.R + r] == neg_inf<T>() ? T(0) : std::exp(d.max[i * d.R + r] - m);
      l += w * d.sum[i * d.R + r];
      lo += w * (d.kRound ? d.rounded_sum[i * d.R + r] : d.sum[i * d.R + r]);
      const T* a = d.acc.data() + (i * d.R + r) * d.Evp;
      for (int64_t e = 0; e < d.Ev; ++e) {
        o[e] += w * a[e];
      }
    }
    for (int64_t e = 0; e < d.Ev; ++e) {
      o[e] /= lo;
    }
    lse[row] = m + std::log(l);
  }
}

/// The scaled queries, packed with a group's rows contiguous and E padded with zeros.
template <typename T, typename C>
void pack_queries(Decode<T, C>& d, const at::Tensor& query, double scale) {
  d.q.assign(static_cast<size_t>(d.B * d.H * d.Lq * d.Ep), T(0));
  const C* src = query.data_ptr<C>();
  const T sc = static_cast<T>(scale);
  for (int64_t row = 0; row < d.B * d.H * d.Lq; ++row) {
    const int64_t b = row / (d.H * d.Lq), h = row / d.Lq % d.H, i = row % d.Lq;
    const C* x = src + b * query.stride(0) + h * query.stride(1) + i * query.stride(2);
    for (int64_t e = 0; e < d.E; ++e) {
      d.q[row * d.Ep + e] = widen<T>(x[e * query.stride(3)]) * sc;
    }
  }
}

template <typename T, typename C>
void decode_impl(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const DecodeArgs& args,
    at::Tensor& out, at::Tensor& lse) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> out [B, H, Lq, Ev], lse [B, H, Lq]
  constexpr int64_t W = Vectorized<T>::size();
  Decode<T, C> d;
  d.key = key.data_ptr<C>();
  d.value = value.data_ptr<C>();
  d.k_sb = key.stride(0), d.k_sh = key.stride(1), d.k_sl = key.stride(2);
  d.v_sb = value.stride(0), d.v_sh = value.stride(1), d.v_sl = value.stride(2);
  d.B = query.size(0), d.H = query.size(1), d.Hkv = key.size(1), d.Lq = query.size(2);
  d.E = query.size(3), d.Ev = value.size(3);
  d.G = d.H / d.Hkv;
  d.R = d.G * d.Lq;
  d.Ep = round_up(d.E, W);
  d.Evp = round_up(d.Ev, W);
  pack_queries(d, query, args.scale);
  key_ranges(d, args, key.size(2));
  split_items(d);
  const auto count = static_cast<int64_t>(d.items.size());
  parallel_items(count, [&](int64_t item) {
    // P of every row for one block; a thread's items share it.
    thread_local std::vector<T> s;
    s.resize(static_cast<size_t>(d.R * kDecodeKeys));
    decode_item(d, item, s.data());
  });
  T* o = out.data_ptr<T>();
  T* l = lse.data_ptr<T>();
  at::parallel_for(0, d.B * d.Hkv, 1, [&](int64_t begin, int64_t end) {
    for (int64_t group = begin; group < end; ++group) {
      merge_group(d, group, o, l);
    }
  });
}

} // namespace

void flash_decode(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const DecodeArgs& args,
    at::Tensor& out, at::Tensor& lse) {
  switch (query.scalar_type()) {
    case at::kBFloat16:
      decode_impl<float, c10::BFloat16>(query, key, value, args, out, lse);
      break;
    case at::kHalf:
      decode_impl<float, c10::Half>(query, key, value, args, out, lse);
      break;
    default:
      AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_decode", [&] {
        decode_impl<scalar_t, scalar_t>(query, key, value, args, out, lse);
      });
  }
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
