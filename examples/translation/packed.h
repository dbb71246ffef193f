#pragma once

// Packed batches for the Transformer: sentences back to back in one row, with no padding in
// the encoder, the decoder or the output layer. Each sentence attends only to itself (and its
// own source), through torchattn's varlen attention (cu_seqlens), and positions restart at 0
// for every sentence.

#include "data.h"

#include <torch/types.h>

#include <cstdint>
#include <random>
#include <vector>

namespace translate {

struct PackedBatch {
  torch::Tensor src, src_pos;             ///< [S] tokens and positions of every source
  torch::Tensor tgt_in, tgt_out, tgt_pos; ///< [T] <s> y1..yn, y1..yn </s>, positions
  torch::Tensor cu_src, cu_tgt;           ///< [N + 1] int64: where each sentence starts
  int64_t target_tokens = 0;              ///< T
};

/// `pairs[indices]` back to back.
PackedBatch make_packed_batch(
    const std::vector<EncodedPair>& pairs, const std::vector<size_t>& indices);

/// Batches of pairs in an order shuffled with `rng`, each holding at most `max_tokens` tokens
/// on its longer side (sources, or targets with </s>). Every pair appears exactly once.
std::vector<std::vector<size_t>> packed_batches(
    const std::vector<EncodedPair>& pairs, int64_t max_tokens, std::mt19937_64& rng);

/// The fraction of padding in `batches` of make_batch: {encoder, decoder} padded positions
/// over all positions.
std::pair<double, double> padding_fraction(
    const std::vector<EncodedPair>& pairs, const std::vector<std::vector<size_t>>& batches);

} // namespace translate
