#pragma once

// Corpus BLEU as sacreBLEU computes it by default: BLEU-4, uniform weights, brevity penalty
// against the closest reference length, 13a tokenisation, 'exp' smoothing, several references
// per segment.

#include <string>
#include <vector>

namespace translate {

/// sacreBLEU's 13a tokenisation (the one of mteval-v13a.pl): splits ASCII punctuation and
/// symbols off, periods and commas unless next to a digit, and a dash after a digit; then
/// splits the line as sacreBLEU does, with Python's str.split() (split_python_whitespace).
std::vector<std::string> tokenize_13a(const std::string& line);

/// The words of UTF-8 `line` as Python's str.split() gives them: separated by runs of the code
/// points for which str.isspace() holds, Unicode spaces included (U+00A0, U+2009, U+202F,
/// U+3000, ...; French puts U+202F or U+2009 before "!" and "?"), not zero-width ones.
std::vector<std::string> split_python_whitespace(const std::string& line);

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
