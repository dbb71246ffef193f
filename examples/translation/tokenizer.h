#pragma once

// How torchattn-translate cuts a sentence into tokens, per language side: whole words (text.h's
// tokenize/detokenize), or SentencePiece subwords from a model trained on the training split.
// Either way the text is lowercased first (BLEU compares lowercased text), and Vocab maps the
// tokens to ids. SentencePiece runs in a link namespace of its own (sentencepiece_shim.cpp).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace translate {

/// The SentencePiece models' file names, in a data directory (prepare) and a model directory.
inline constexpr const char* kSrcSentencePiece = "src.spm.model";
inline constexpr const char* kTgtSentencePiece = "tgt.spm.model";

class Tokenizer {
 public:
  /// Word-level: tokenize() and detokenize().
  Tokenizer() = default;

  /// The SentencePiece model at `path`. Throws std::runtime_error naming the file when it is
  /// missing or not a SentencePiece model.
  static Tokenizer load_sentencepiece(const std::string& path);

  /// Trains a SentencePiece model of `type` ("unigram" or "bpe") with about `vocab_size`
  /// pieces (fewer where the text has fewer) on lowercased `sentences`, and writes it to
  /// `path`. Throws std::runtime_error with SentencePiece's message when training fails.
  static void train_sentencepiece(
      const std::vector<std::string>& sentences, const std::string& path, const std::string& type,
      int64_t vocab_size);

  /// "words" or "sentencepiece", as options.txt records it.
  std::string kind() const { return sp_ ? "sentencepiece" : "words"; }

  /// The tokens of `text` (lowercased): words, or pieces such as "▁bon" "jour".
  std::vector<std::string> encode(const std::string& text) const;
  /// Every piece the SentencePiece model can give, but its <unk>, in id order (words: none).
  std::vector<std::string> pieces() const;
  /// Tokens back to text, its first letter capitalised.
  std::string decode(const std::vector<std::string>& tokens) const;
  /// For each token, the index of the space-separated word of decode(tokens) it belongs to:
  /// a piece that starts with "▁" starts a word; words follow detokenize's spacing.
  std::vector<int64_t> word_index(const std::vector<std::string>& tokens) const;

 private:
  std::shared_ptr<void> sp_; ///< the SentencePiece model (tokenizer.cpp), or null: words
};

} // namespace translate
