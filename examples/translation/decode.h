#pragma once

// Decoding for torchattn-translate: batched greedy search, beam search with length
// normalisation, and the translator that turns text into text.

#include "data.h"
#include "model.h"
#include "text.h"

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace translate {

struct Hypothesis {
  std::vector<int64_t> tokens; ///< without <s>; ends with </s> unless cut at max_len
  torch::Tensor attention;     ///< [tokens, S] attention over the source, when kept
  double log_prob = 0;         ///< sum of the tokens' log-probabilities
};

/// Greedy search for a batch: src [B, S], src_pad [B, S] -> B hypotheses.
std::vector<Hypothesis> greedy_decode(
    Seq2SeqImpl& model, const torch::Tensor& src, const torch::Tensor& src_pad, int64_t max_len,
    bool keep_attention);

/// Beam search for one sentence src [1, S] with `beam` hypotheses; finished hypotheses are
/// ranked by log_prob / length^alpha. With beam = 1 it returns what greedy_decode returns.
Hypothesis beam_search(
    Seq2SeqImpl& model, const torch::Tensor& src, int64_t beam, int64_t max_len, double alpha,
    bool keep_attention);

/// Beam search for N sentences src [N, S] at once: every step decodes the live beams of all
/// of them as one batch (at most N x beam rows). Each sentence's result is beam_search's.
std::vector<Hypothesis> beam_search_batch(
    Seq2SeqImpl& model, const torch::Tensor& src, int64_t beam, int64_t max_len, double alpha,
    bool keep_attention);

/// A trained model with its vocabularies and tokenizers, as `train --out DIR` writes it.
struct Translator {
  ModelOptions options;
  Vocab src_vocab, tgt_vocab;
  std::shared_ptr<Seq2SeqImpl> model;
  Tokenizers tok;

  struct Options {
    int64_t beam = 1;
    /// Length normalisation exponent: 0.6 (GNMT's value) chose the best beam-4 dev BLEU of
    /// 0, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5 on Tatoeba for two models (1.0 before session 22).
    double alpha = 0.6;
    /// Replace an output <unk> by the source word it attends to most (names, numbers).
    bool copy_unknown = true;
    bool keep_attention = false;
  };
  struct Result {
    std::vector<std::string> source_tokens, tokens;
    std::string text;
    torch::Tensor attention; ///< [tokens (+ </s>), source tokens] when kept
  };
  /// Translates in order; empty input lines give empty translations.
  std::vector<Result> translate(const std::vector<std::string>& sentences, const Options& o) const;
};

} // namespace translate
