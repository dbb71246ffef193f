#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace torchattn::nn {

/// A key/value cache for incremental decoding, one per attention layer: keys and values
/// [B, H_kv, capacity, E] preallocated, and each batch row's length, so rows of a batch may
/// hold sequences of different lengths with no padding token ever attended.
///
/// Layout and its trade-off: one contiguous buffer per tensor whose capacity doubles when a
/// row outgrows it (amortised O(1) copies per token), rather than vLLM's pages with a block
/// table per sequence. The decoding kernel then reads a plain strided view (key() and
/// value(): unit stride along E, no indirection per block), and a step appends without
/// copying the prefix. What it costs: every row reserves the longest row's capacity (memory
/// over-reserved when lengths differ a lot, where pages would share and free blocks), and a
/// growth copies the whole cache once. Beam search's reorder() copies only the rows that
/// change.
///
/// Example:
/// ```
/// torchattn::nn::KVCache cache;
/// cache.append(k_new, v_new);                // [B, H_kv, T, E]; row b grows by T
/// auto [out, lse] = torchattn::ops::decode_attention(q, cache.key(), cache.value(),
///     cache.lengths(), c10::nullopt, true, -1, c10::nullopt);
/// cache.reorder(beam_parents);               // beam search: row b takes row parents[b]
/// ```
class KVCache {
 public:
  /// `capacity`: positions reserved at the first append (it doubles when needed). Default: 256.
  explicit KVCache(int64_t capacity);
  KVCache() : KVCache(256) {}

  /// Appends key [B, H_kv, T, E] and value [B, H_kv, T, Ev] at each row's length: row b takes
  /// the first counts[b] of the T new positions (int64 [B], each in [0, T]; default all T).
  /// The first append fixes B, H_kv, E, Ev, dtype and device.
  void append(
      const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& counts = {});

  /// [B, H_kv, max_length, E]: a view of the buffer; row b's valid keys are its first
  /// lengths()[b].
  torch::Tensor key() const;
  torch::Tensor value() const;
  /// int64 [B]: each row's length.
  torch::Tensor lengths() const;
  const std::vector<int64_t>& row_lengths() const { return lengths_; }
  int64_t max_length() const;
  int64_t capacity() const { return capacity_; }
  int64_t batch_size() const { return static_cast<int64_t>(lengths_.size()); }
  bool empty() const { return !key_.defined(); }

  /// Beam search: row b becomes what row rows[b] was (int64 [B'], B' may differ from B, e.g.
  /// B x K when a batch first expands into K beams). Copies only rows with rows[b] != b
  /// (when B' = B), and only their first max_length() positions.
  void reorder(const torch::Tensor& rows);

  /// Drops everything (the next append starts a new batch).
  void clear();

 private:
  void reserve(int64_t positions);

  int64_t capacity_;
  torch::Tensor key_, value_; // [B, H_kv, capacity, E], [B, H_kv, capacity, Ev]
  std::vector<int64_t> lengths_;
};

} // namespace torchattn::nn
