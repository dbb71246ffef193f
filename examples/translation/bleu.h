#pragma once

// Corpus BLEU as sacreBLEU computes it by default: BLEU-4, uniform weights, brevity penalty
// against the closest reference length, 13a tokenisation, 'exp' smoothing, several references
// per segment.

#include <string>
#include <vector>

namespace translate {

/// sacreBLEU's 13a tokenisation (the one of mteval-v13a.pl): splits ASCII punctuation and
/// symbols off, periods and commas unless next to a digit, and a dash after a digit.
std::vector<std::string> tokenize_13a(const std::string& line);

struct BleuScore {
  double score = 0;          ///< 0..100
  double precisions[4] = {}; ///< n-gram precisions, 0..100
  double brevity_penalty = 0;
  long hyp_len = 0, ref_len = 0;
};

/// BLEU of `hypotheses` against `references` (references[i] holds every reference of
/// hypothesis i, at least one). `lowercase` compares case-insensitively (utf8_lower).
BleuScore corpus_bleu(
    const std::vector<std::string>& hypotheses,
    const std::vector<std::vector<std::string>>& references, bool lowercase = true);

} // namespace translate
