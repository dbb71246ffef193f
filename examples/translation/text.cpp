#include "text.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <stdexcept>

namespace translate {
namespace {

// Decodes the code point at s[i], advancing i; an invalid byte decodes as itself (len 1).
uint32_t next_code_point(const std::string& s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return 0xFFFD0000u | b0; // marks an invalid byte; append_code_point writes it back
  }
  uint32_t cp = len == 1 ? b0 : b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b >> 6) != 0x2) {
      ++i;
      return 0xFFFD0000u | b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i += len;
  return cp;
}

void append_code_point(std::string& out, uint32_t cp) {
  if ((cp & 0xFFFF0000u) == 0xFFFD0000u) {
    out += static_cast<char>(cp & 0xFF);
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint32_t lower(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z')
    return cp + 32;
  if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)
    return cp + 0x20;
  if (cp == 0x178)
    return 0xFF; // Ÿ
  const bool even_upper = (cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177);
  const bool odd_upper = (cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E);
  if (cp == 0x130)
    return 'i'; // İ
  if ((even_upper && cp % 2 == 0) || (odd_upper && cp % 2 == 1))
    return cp + 1;
  return cp;
}

uint32_t upper_first(uint32_t cp) {
  if (cp >= 'a' && cp <= 'z')
    return cp - 32;
  if (cp >= 0xE0 && cp <= 0xFE && cp != 0xF7)
    return cp - 0x20;
  return cp;
}

bool is_space(uint32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f' || cp == '\v' ||
         cp == 0xA0 || cp == 0x202F || cp == 0x2009 || cp == 0x200B || cp == 0xFEFF;
}

bool is_apostrophe(uint32_t cp) {
  return cp == '\'' || cp == 0x2019;
}

// Letters, digits and every non-ASCII code point that is not a space or a quote mark.
bool is_word(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
  }
  if ((cp & 0xFFFF0000u) == 0xFFFD0000u)
    return true;
  return !is_space(cp) && !is_apostrophe(cp) && cp != 0xAB && cp != 0xBB && cp != 0x2026 &&
         !(cp >= 0x2010 && cp <= 0x201F);
}

} // namespace

std::string utf8_lower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();)
    append_code_point(out, lower(next_code_point(s, i)));
  return out;
}

bool utf8_valid(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    if ((next_code_point(s, i) & 0xFFFF0000u) == 0xFFFD0000u)
      return false;
  }
  return true;
}

std::string printable(const std::string& s, size_t max) {
  std::string out;
  auto escape = [&](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
  size_t i = 0;
  while (i < s.size() && out.size() < max) {
    const size_t start = i;
    const uint32_t cp = next_code_point(s, i);
    if ((cp & 0xFFFF0000u) == 0xFFFD0000u) {
      for (size_t j = start; j < i; ++j)
        escape(static_cast<unsigned char>(s[j]));
    } else if (cp < 0x20 || cp == 0x7f || cp == '\\') {
      escape(static_cast<unsigned char>(cp));
    } else {
      out.append(s, start, i - start);
    }
  }
  if (i < s.size())
    out += "...";
  return out;
}

std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = next_code_point(s, i);
    cps.push_back((cp & 0xFFFF0000u) == 0xFFFD0000u ? 0xFFFD : cp);
  }
  return cps;
}

std::vector<std::string> tokenize(const std::string& text) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < text.size();)
    cps.push_back(lower(next_code_point(text, i)));
  std::vector<std::string> tokens;
  std::string word;
  auto flush = [&] {
    if (!word.empty())
      tokens.push_back(std::move(word));
    word.clear();
  };
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t cp = cps[i];
    if (is_word(cp)) {
      append_code_point(word, cp);
    } else if (cp == '-' && !word.empty() && i + 1 < cps.size() && is_word(cps[i + 1])) {
      word += '-';
    } else if (is_apostrophe(cp)) {
      word += '\'';
      flush();
    } else if (is_space(cp)) {
      flush();
    } else {
      flush();
      std::string punct;
      append_code_point(punct, cp == 0x2026 ? '.' : cp);
      if (cp == 0x2026)
        punct = "...";
      tokens.push_back(punct);
    }
  }
  flush();
  return tokens;
}

namespace {

/// Whether detokenize puts a space before tokens[i].
bool space_before(const std::vector<std::string>& tokens, size_t i) {
  const std::string& t = tokens[i];
  const bool glue_left = t == "." || t == "," || t == ")" || t == "..." || t == "\u00bb";
  const bool after_glue =
      i > 0 && (tokens[i - 1].back() == '\'' || tokens[i - 1] == "(" || tokens[i - 1] == "\u00ab");
  return i > 0 && !glue_left && !after_glue;
}

} // namespace

std::string detokenize(const std::vector<std::string>& tokens) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (space_before(tokens, i))
      out += ' ';
    out += tokens[i];
  }
  return capitalize_first(out);
}

std::vector<int64_t> detokenized_words(const std::vector<std::string>& tokens) {
  std::vector<int64_t> words;
  int64_t w = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    w += space_before(tokens, i) ? 1 : 0;
    words.push_back(w);
  }
  return words;
}

std::string capitalize_first(const std::string& s) {
  if (s.empty())
    return s;
  size_t i = 0;
  const uint32_t first = next_code_point(s, i);
  std::string head;
  append_code_point(head, upper_first(first));
  return head + s.substr(i);
}

Vocab::Vocab() {
  for (const char* s : {"<pad>", "<unk>", "<s>", "</s>"})
    add(s);
}

void Vocab::add(const std::string& token) {
  ids_.emplace(token, static_cast<int64_t>(tokens_.size()));
  tokens_.push_back(token);
}

Vocab Vocab::build(
    const std::vector<std::vector<std::string>>& sentences, int64_t min_freq, int64_t max_size) {
  std::map<std::string, int64_t> counts;
  for (const auto& s : sentences) {
    for (const auto& t : s)
      ++counts[t];
  }
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second > b.second;
  });
  Vocab v;
  for (const auto& [token, n] : sorted) {
    if (n < min_freq || (max_size > 0 && v.size() >= max_size))
      break;
    if (v.ids_.count(token) == 0)
      v.add(token);
  }
  return v;
}

Vocab Vocab::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open vocabulary file '" + path + "'");
  Vocab v;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    if (n < 4) {
      if (line != v.tokens_[n]) {
        throw std::runtime_error(
            "vocabulary file '" + path + "': line " + std::to_string(n + 1) + " is '" + line +
            "', expected the special token '" + v.tokens_[n] + "'");
      }
    } else {
      if (line.empty() || v.ids_.count(line) != 0) {
        throw std::runtime_error(
            "vocabulary file '" + path + "': line " + std::to_string(n + 1) +
            (line.empty() ? " is empty" : " repeats '" + line + "'"));
      }
      v.add(line);
    }
    ++n;
  }
  if (n < 4) {
    throw std::runtime_error(
        "vocabulary file '" + path + "' is truncated: " + std::to_string(n) +
        " lines, expected at least the 4 special tokens");
  }
  return v;
}

void Vocab::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  for (const auto& t : tokens_)
    out << t << '\n';
  if (!out)
    throw std::runtime_error("cannot write vocabulary file '" + path + "'");
}

int64_t Vocab::id(const std::string& token) const {
  const auto it = ids_.find(token);
  return it == ids_.end() ? kUnk : it->second;
}

const std::string& Vocab::token(int64_t id) const {
  if (id < 0 || id >= size())
    throw std::out_of_range("token id " + std::to_string(id) + " out of range");
  return tokens_[id];
}

std::vector<int64_t> Vocab::encode(const std::vector<std::string>& tokens) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens)
    ids.push_back(id(t));
  return ids;
}

std::vector<std::string> Vocab::decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> out;
  for (int64_t i : ids) {
    if (i == kEos)
      break;
    if (i == kBos || i == kPad)
      continue;
    out.push_back(token(i));
  }
  return out;
}

} // namespace translate
