#pragma once

// Parallel text for torchattn-translate: reading `English<TAB>French[<TAB>French...]` files,
// splitting by source sentence, and length-bucketed batches with padding masks.

#include "text.h"
#include "tokenizer.h"

#include <torch/types.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace translate {

/// A source sentence with every reference translation it has.
struct Example {
  std::string source;
  std::vector<std::string> references;
};

/// Reads a TSV file of `source<TAB>reference[<TAB>reference...]` lines (UTF-8; a trailing
/// '\r' is dropped; empty lines are skipped). Lines with the same source are merged, in order
/// of first appearance. Throws std::runtime_error naming the file and line of a line without
/// a tab, an empty field or invalid UTF-8, and for a file with no pairs.
std::vector<Example> read_examples(const std::string& path);
void write_examples(const std::string& path, const std::vector<Example>& examples);

/// Splits by source sentence with a fixed seed: `test_fraction` and `dev_fraction` of the
/// sources (rounded, at least one each when fractions are positive) go to test and dev.
struct Split {
  std::vector<Example> train, dev, test;
};
Split split_examples(
    std::vector<Example> examples, double dev_fraction, double test_fraction, uint64_t seed);

/// The tokenizers of the two sides (tokenizer.h): words by default.
struct Tokenizers {
  Tokenizer src, tgt;
};

/// The source and target vocabularies of `examples` (every reference counts) cut by `tok`, as
/// train builds them: tokens seen at least `min_freq` times, at most `max_size` per side (0:
/// no cap); a SentencePiece side has every piece of its model instead.
std::pair<Vocab, Vocab> build_vocabs(
    const std::vector<Example>& examples, const Tokenizers& tok, int64_t min_freq,
    int64_t max_size);

/// A tokenised, id-encoded training pair.
struct EncodedPair {
  std::vector<int64_t> src, tgt;
};
/// One pair per (source, reference), sentences longer than `max_len` tokens dropped (and
/// counted into `*too_long` when given).
std::vector<EncodedPair> encode_pairs(
    const std::vector<Example>& examples, const Tokenizers& tok, const Vocab& src, const Vocab& tgt,
    int64_t max_len, size_t* too_long = nullptr);

struct Batch {
  torch::Tensor src;         ///< [B, S] int64, <pad> = 0
  torch::Tensor src_pad;     ///< [B, S] bool, true at padding
  torch::Tensor tgt_in;      ///< [B, T] <s> y1 .. yn, padded
  torch::Tensor tgt_out;     ///< [B, T] y1 .. yn </s>, padded
  int64_t target_tokens = 0; ///< non-pad entries of tgt_out
};

/// `src` with each word (an id past the specials) replaced by <unk> with probability `p`,
/// drawn from torch's generator: word dropout (Sennrich et al., 2016). Training sees <unk>
/// in its sources, as a test sentence with an unseen word does.
torch::Tensor drop_words(const torch::Tensor& src, double p);

/// Pads and stacks `pairs[indices]` into a batch.
Batch make_batch(const std::vector<EncodedPair>& pairs, const std::vector<size_t>& indices);

/// Length-bucketed batches: pairs sorted by (source, target) length after a shuffle with
/// `rng` (so equal lengths mix), cut into batches of at most `max_tokens` padded tokens on the
/// longer side, then the batch order shuffled. Every pair appears exactly once.
std::vector<std::vector<size_t>> bucket_batches(
    const std::vector<EncodedPair>& pairs, int64_t max_tokens, std::mt19937_64& rng);

} // namespace translate
