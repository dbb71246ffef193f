#pragma once

// The fused attention kernel's shared constants and helpers: register and tile sizes, shapes,
// head offsets and the work loop.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

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
constexpr int64_t kBlockKTarget = 256;  // rounded down to a multiple of the panel width

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

inline int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

struct Dims {
  int64_t B, H, Lq, Lk, E, Ev;
  int64_t BH() const { return B * H; }
};

inline Dims dims_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
}

/// Element offset of [b, h, 0, 0] in a 4-D tensor.
inline int64_t head_offset(const at::Tensor& t, int64_t bh, int64_t H) {
  return (bh / H) * t.stride(0) + (bh % H) * t.stride(1);
}

/// Element offset of [b, h, 0, 0] in a 4-D tensor for its flat head index b * size(1) + h (key
/// and value under grouped-query attention have fewer heads than query).
inline int64_t kv_offset(const at::Tensor& t, int64_t head) {
  return (head / t.size(1)) * t.stride(0) + (head % t.size(1)) * t.stride(1);
}

/// Buffers reused across the heads of one call: a head's buffers go back when it finishes,
/// so a call touches fresh pages (each a page fault, then zeroing by the OS) for the few
/// heads in flight, not for every head. Buffers of one size are interchangeable.
template <typename T>
class BufferPool {
 public:
  std::unique_ptr<T[]> take(int64_t n) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& list = free_[n];
      if (!list.empty()) {
        auto p = std::move(list.back());
        list.pop_back();
        return p;
      }
    }
    return std::unique_ptr<T[]>(new T[static_cast<size_t>(n)]);
  }

  void give(int64_t n, std::unique_ptr<T[]>& p) {
    if (p) {
      std::lock_guard<std::mutex> lock(mutex_);
      free_[n].push_back(std::move(p));
    }
  }

 private:
  std::mutex mutex_;
  std::map<int64_t, std::vector<std::unique_ptr<T[]>>> free_;
};

/// Work items over `units` units (kv heads) of `per_unit` items each, in blocks of `lanes`
/// units whose items interleave: threads that start together (one per lane) start on
/// different units, so that each packs its own unit's operands instead of waiting on another
/// thread's packing, and about two blocks of units hold packed operands at a time. Gives the
/// unit of item `item` and its index within the unit.
inline void interleaved_item(
    int64_t item, int64_t units, int64_t per_unit, int64_t lanes, int64_t& unit, int64_t& k) {
  const int64_t block = item / (lanes * per_unit);
  const int64_t r = item % (lanes * per_unit);
  const int64_t here = std::min(lanes, units - block * lanes); // the last block: fewer units
  unit = block * lanes + r % here;
  k = r / here;
}

/// The first query head (b * H + h) of kv head `kv`: its batch's heads, then the kv head's
/// group of `group` consecutive query heads.
inline int64_t first_query_head(int64_t kv, int64_t H, int64_t group) {
  const int64_t kv_per_b = H / group;
  return (kv / kv_per_b) * H + (kv % kv_per_b) * group;
}

/// interleaved_item's lanes: a unit per thread, at least one.
inline int64_t item_lanes(int64_t units) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), units));
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

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
