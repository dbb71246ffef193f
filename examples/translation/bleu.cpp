#include "bleu.h"

#include "text.h"

#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace translate {

std::vector<std::string> tokenize_13a(const std::string& input) {
  // The regular expressions are sacreBLEU's; they match ASCII bytes only, so running them on
  // UTF-8 bytes gives what Python gives on code points.
  static const std::regex symbols(R"(([\{-\~\[-\` -\&\(-\+\:-\@\/]))");
  static const std::regex period_after(R"(([^0-9])([\.,]))");
  static const std::regex period_before(R"(([\.,])([^0-9]))");
  static const std::regex dash(R"(([0-9])(-))");
  std::string line;
  for (size_t i = 0; i < input.size(); ++i) {
    if (input.compare(i, 9, "<skipped>") == 0) {
      i += 8;
    } else if (input.compare(i, 2, "-\n") == 0) {
      i += 1;
    } else {
      line += input[i] == '\n' ? ' ' : input[i];
    }
  }
  if (line.find('&') != std::string::npos) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"&quot;", "\""}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}}) {
      for (size_t p = line.find(from); p != std::string::npos; p = line.find(from, p + to.size())) {
        line.replace(p, from.size(), to);
      }
    }
  }
  line = " " + line + " ";
  line = std::regex_replace(line, symbols, " $1 ");
  line = std::regex_replace(line, period_after, "$1 $2 ");
  line = std::regex_replace(line, period_before, " $1 $2");
  line = std::regex_replace(line, dash, "$1 $2 ");
  return split_python_whitespace(line);
}

namespace {

/// Whether Python's str.isspace() holds for code point c: what str.split() splits on.
bool python_space(uint32_t c) {
  switch (c) {
    case 0x09:
    case 0x0a:
    case 0x0b:
    case 0x0c:
    case 0x0d:
    case 0x1c:
    case 0x1d:
    case 0x1e:
    case 0x1f:
    case 0x20:
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200a;
  }
}

/// The code point of the UTF-8 sequence at s[i] and its length; an invalid byte is itself.
std::pair<uint32_t, size_t> next_code_point(const std::string& s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
  if (n <= 1 || i + n > s.size())
    return {b, 1};
  uint32_t c = b & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto cb = static_cast<unsigned char>(s[i + k]);
    if ((cb >> 6) != 2)
      return {b, 1};
    c = (c << 6) | (cb & 0x3f);
  }
  return {c, n};
}

} // namespace

std::vector<std::string> split_python_whitespace(const std::string& line) {
  std::vector<std::string> tokens;
  std::string token;
  for (size_t i = 0; i < line.size();) {
    const auto [c, n] = next_code_point(line, i);
    if (python_space(c)) {
      if (!token.empty())
        tokens.push_back(std::move(token));
      token.clear();
    } else {
      token.append(line, i, n);
    }
    i += n;
  }
  if (!token.empty())
    tokens.push_back(std::move(token));
  return tokens;
}

namespace {

using Ngrams = std::map<std::vector<std::string>, long>;

Ngrams count_ngrams(const std::vector<std::string>& tokens, size_t n) {
  Ngrams counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) {
    ++counts[std::vector<std::string>(tokens.begin() + i, tokens.begin() + i + n)];
  }
  return counts;
}

} // namespace

BleuScore corpus_bleu(
    const std::vector<std::string>& hypotheses,
    const std::vector<std::vector<std::string>>& references, bool lowercase) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument(
        "corpus_bleu: " + std::to_string(hypotheses.size()) + " hypotheses but " +
        std::to_string(references.size()) + " reference sets");
  }
  long matches[4] = {}, totals[4] = {};
  BleuScore result;
  for (size_t s = 0; s < hypotheses.size(); ++s) {
    if (references[s].empty()) {
      throw std::invalid_argument(
          "corpus_bleu: hypothesis " + std::to_string(s) + " has no reference");
    }
    auto prep = [&](const std::string& x) { return tokenize_13a(lowercase ? utf8_lower(x) : x); };
    const auto hyp = prep(hypotheses[s]);
    std::vector<std::vector<std::string>> refs;
    for (const auto& r : references[s])
      refs.push_back(prep(r));
    const long h = static_cast<long>(hyp.size());
    // The closest reference length; the shorter one on a tie.
    long best = -1;
    for (const auto& r : refs) {
      const long len = static_cast<long>(r.size());
      if (best < 0 || std::labs(len - h) < std::labs(best - h) ||
          (std::labs(len - h) == std::labs(best - h) && len < best)) {
        best = len;
      }
    }
    result.hyp_len += h;
    result.ref_len += best;
    for (size_t n = 1; n <= 4; ++n) {
      Ngrams max_ref;
      for (const auto& r : refs) {
        for (const auto& [g, c] : count_ngrams(r, n))
          max_ref[g] = std::max(max_ref[g], c);
      }
      for (const auto& [g, c] : count_ngrams(hyp, n)) {
        const auto it = max_ref.find(g);
        matches[n - 1] += std::min(c, it == max_ref.end() ? 0L : it->second);
      }
      totals[n - 1] += std::max(0L, h - static_cast<long>(n) + 1);
    }
  }
  double log_sum = 0;
  double smooth = 1;
  bool zero = false;
  for (int n = 0; n < 4; ++n) {
    if (totals[n] == 0) {
      zero = true;
      result.precisions[n] = 0;
      continue;
    }
    double p;
    if (matches[n] == 0) {
      smooth *= 2; // sacreBLEU's 'exp' smoothing
      p = 100.0 / (smooth * static_cast<double>(totals[n]));
    } else {
      p = 100.0 * static_cast<double>(matches[n]) / static_cast<double>(totals[n]);
    }
    result.precisions[n] = p;
    log_sum += std::log(p / 100.0);
  }
  if (result.hyp_len == 0 || zero) {
    result.brevity_penalty = result.hyp_len == 0 ? 0 : 1;
    return result;
  }
  result.brevity_penalty =
      result.hyp_len < result.ref_len
          ? std::exp(
                1.0 - static_cast<double>(result.ref_len) / static_cast<double>(result.hyp_len))
          : 1.0;
  result.score = 100.0 * result.brevity_penalty * std::exp(log_sum / 4.0);
  return result;
}

} // namespace translate
