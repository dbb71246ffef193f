#pragma once

// Text handling of torchattn-translate: UTF-8 lowercasing, the word-level tokenizer, its
// inverse for display, and the vocabulary saved with every model.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace translate {

/// Lowercases ASCII, Latin-1 and Latin Extended-A letters of a UTF-8 string (what English and
/// French text needs; other code points are kept as they are). Invalid UTF-8 bytes are kept.
std::string utf8_lower(const std::string& s);

/// Whether `s` is well-formed UTF-8 as utf8_decode reads it (lead bytes, continuation bytes,
/// no sequence cut short).
bool utf8_valid(const std::string& s);

/// `s` as it may be printed in a message: at most `max` bytes, with control bytes, invalid
/// UTF-8 and backslashes written as \xNN escapes, and "..." where it was cut.
std::string printable(const std::string& s, size_t max = 60);

/// The code points of a UTF-8 string; an invalid byte decodes as U+FFFD.
std::vector<uint32_t> utf8_decode(const std::string& s);

/// Splits text into lowercase word tokens:
/// - a word is a run of letters, digits and non-ASCII code points, with inner hyphens
///   ("est-ce", "peut-être");
/// - an apostrophe (' or ’) closes the word it follows and stays attached to it
///   ("j'ai" -> "j'" "ai", "don't" -> "don'" "t"), so detokenize() can undo it;
/// - every other ASCII punctuation mark is a token of its own;
/// - spaces, tabs, no-break spaces (U+00A0, U+202F) separate tokens.
std::vector<std::string> tokenize(const std::string& text);

/// Joins tokens for display: no space after an apostrophe, none before . , ) and a closing
/// quote; French spacing before ! ? : ; is a plain space. Capitalises the first letter.
std::string detokenize(const std::vector<std::string>& tokens);

/// For each token, the index of the space-separated word of detokenize(tokens) it is part of.
std::vector<int64_t> detokenized_words(const std::vector<std::string>& tokens);

/// `s` with its first letter capitalised (Latin-1 and Latin Extended-A too).
std::string capitalize_first(const std::string& s);

/// Token <-> id map. Ids 0..3 are the specials <pad>, <unk>, <s>, </s>.
class Vocab {
 public:
  static constexpr int64_t kPad = 0, kUnk = 1, kBos = 2, kEos = 3;

  Vocab();
  /// The tokens of `sentences` seen at least `min_freq` times, most frequent first (ties in
  /// byte order), at most `max_size` ids in all (0: no cap).
  static Vocab build(
      const std::vector<std::vector<std::string>>& sentences, int64_t min_freq, int64_t max_size);
  /// One token per line, the specials first. Throws std::runtime_error naming the file and
  /// line on a malformed or truncated file.
  static Vocab load(const std::string& path);
  void save(const std::string& path) const;

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t id(const std::string& token) const;
  const std::string& token(int64_t id) const;
  std::vector<int64_t> encode(const std::vector<std::string>& tokens) const;
  /// Ids back to tokens, stopping at </s> and skipping <s> and <pad>.
  std::vector<std::string> decode(const std::vector<int64_t>& ids) const;
  /// The same tokens with the same ids.
  bool operator==(const Vocab& other) const { return tokens_ == other.tokens_; }

 private:
  void add(const std::string& token);
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int64_t> ids_;
};

} // namespace translate
