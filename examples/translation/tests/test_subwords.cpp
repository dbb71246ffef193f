// SentencePiece subwords in the translation example: training the models, the round trip of
// text, words never seen in training, and the tokenizer as part of the model directory.

#include <data.h>
#include <decode.h>
#include <tokenizer.h>
#include <trainer.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

using namespace translate;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using translate::testing::TempDir;

namespace {

/// Sentences over compound words (stems and endings), English and a "French" whose words
/// carry a suffix: enough repeated substrings for subwords to form.
std::vector<Example> compound_corpus(int n, uint64_t seed) {
  static const std::vector<std::string> stems = {"play", "work", "talk", "walk", "jump", "read"};
  static const std::vector<std::string> ends = {"", "s", "ed", "ing", "er", "ers"};
  std::mt19937_64 gen(seed);
  std::vector<Example> out;
  for (int i = 0; i < n; ++i) {
    std::string en, fr = "le";
    const int len = 2 + static_cast<int>(gen() % 4);
    for (int k = 0; k < len; ++k) {
      const std::string w = stems[gen() % stems.size()] + ends[gen() % ends.size()];
      en += (en.empty() ? "" : " ") + w;
      fr += " " + w + "ette";
    }
    out.push_back({en, {fr}});
  }
  return out;
}

void write_tsv(const fs::path& path, const std::vector<Example>& examples) {
  std::ofstream f(path);
  for (const auto& e : examples)
    f << e.source << '\t' << e.references[0] << '\n';
}

/// A data directory as `prepare --subwords unigram` writes it, from the compound corpus.
void prepare_subword_data(const fs::path& dir) {
  const auto all = compound_corpus(300, 3);
  const std::vector<Example> train(all.begin(), all.begin() + 270),
      dev(all.begin() + 270, all.end());
  write_tsv(dir / "train.tsv", train);
  write_tsv(dir / "dev.tsv", dev);
  std::vector<std::string> src, tgt;
  for (const auto& e : train) {
    src.push_back(e.source);
    tgt.push_back(e.references[0]);
  }
  Tokenizer::train_sentencepiece(src, (dir / "src.spm.model").string(), "unigram", 60);
  Tokenizer::train_sentencepiece(tgt, (dir / "tgt.spm.model").string(), "unigram", 60);
}

TrainConfig small_config(const fs::path& dir) {
  TrainConfig c = translate::testing::toy_config(dir, "transformer");
  c.model.max_len = 64;
  c.epochs = 1;
  return c;
}

} // namespace

TEST_CASE("SentencePiece models train, round-trip text and cover unseen words", "[translation]") {
  const std::string type = GENERATE("unigram", "bpe");
  TempDir dir("spm_" + type);
  std::vector<std::string> sentences;
  for (const auto& e : compound_corpus(400, 1))
    sentences.push_back(e.source);
  const std::string path = (dir.path / "en.spm.model").string();
  Tokenizer::train_sentencepiece(sentences, path, type, 50);
  REQUIRE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp.model")); // renamed into place
  CHECK_FALSE(fs::exists(path + ".tmp.vocab"));
  const Tokenizer sp = Tokenizer::load_sentencepiece(path);
  CHECK(sp.kind() == "sentencepiece");

  // Lowercased as the word level is; decoding gives the text back, first letter capitalised.
  for (const std::string s : {"Playing Workers talked", "read jumps walker"}) {
    const auto pieces = sp.encode(s);
    CHECK(pieces.size() >= 3);
    std::string lowered = s;
    for (auto& ch : lowered)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    lowered[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(lowered[0])));
    CHECK(sp.decode(pieces) == lowered);
  }

  // A word the training text never had ("workplayed") is cut into pieces of the model, which
  // train's vocabulary holds: no <unk>, where the word level gives one.
  std::vector<Example> examples;
  for (const auto& s : sentences)
    examples.push_back({s, {s}});
  const Tokenizers words;
  const Vocab piece_vocab = build_vocabs(examples, Tokenizers{sp, sp}, 1, 0).first;
  const Vocab word_vocab = build_vocabs(examples, words, 1, 0).first;
  CHECK(piece_vocab.size() == static_cast<int64_t>(sp.pieces().size()) + 4); // + the specials
  const auto unseen = sp.encode("workplayed talks");
  CHECK(unseen.size() >= 3); // the unseen word is cut into pieces
  for (const int64_t id : piece_vocab.encode(unseen))
    CHECK(id != Vocab::kUnk);
  CHECK(word_vocab.encode(words.src.encode("workplayed talks")).at(0) == Vocab::kUnk);
}

TEST_CASE("SentencePiece errors name the file and the problem", "[translation]") {
  TempDir dir("spm_errors");
  CHECK_THROWS_WITH(
      Tokenizer::load_sentencepiece((dir.path / "none.model").string()),
      ContainsSubstring("none.model' is missing"));
  std::ofstream(dir.path / "junk.model") << "not a model";
  CHECK_THROWS_WITH(
      Tokenizer::load_sentencepiece((dir.path / "junk.model").string()),
      ContainsSubstring("junk.model' is not a SentencePiece model"));
  CHECK_THROWS_WITH(
      Tokenizer::train_sentencepiece({"a b"}, (dir.path / "x.model").string(), "wordpiece", 50),
      ContainsSubstring("expected unigram or bpe"));
  CHECK_THROWS_WITH(
      Tokenizer::train_sentencepiece({}, (dir.path / "x.model").string(), "bpe", 50),
      ContainsSubstring("no sentences"));
}

TEST_CASE("subword training keeps its tokenizer in the model directory", "[translation]") {
  TempDir dir("spm_train");
  prepare_subword_data(dir.path);
  TrainConfig c = small_config(dir.path);
  train(c);
  const fs::path m = c.out_dir;
  CHECK(fs::exists(m / "src.spm.model"));
  CHECK(fs::exists(m / "tgt.spm.model"));
  const Translator t = load_translator(m.string());
  CHECK(t.options.tokenizer == "sentencepiece");
  CHECK(t.tok.src.kind() == "sentencepiece");
  // The source is cut into pieces, and the output is detokenised text, not pieces.
  const auto r = t.translate({"workers played"}, {}).at(0);
  CHECK(r.source_tokens.size() >= 2);
  CHECK(r.source_tokens.at(0).rfind("\u2581", 0) == 0); // "▁" starts a word's first piece
  CHECK(r.text.find("\u2581") == std::string::npos);

  // --words: the same data at the word level, without the SentencePiece files.
  TrainConfig w = small_config(dir.path);
  w.out_dir = (dir.path / "words").string();
  w.words = true;
  train(w);
  CHECK_FALSE(fs::exists(fs::path(w.out_dir) / "src.spm.model"));
  const Translator tw = load_translator(w.out_dir);
  CHECK(tw.options.tokenizer == "words");
  CHECK(
      tw.translate({"workers played"}, {}).at(0).source_tokens ==
      std::vector<std::string>{"workers", "played"});

  // A missing or broken tokenizer file, or an unknown tokenizer, is named.
  fs::rename(m / "tgt.spm.model", dir.path / "saved.model");
  CHECK_THROWS_WITH(
      load_translator(m.string()), ContainsSubstring("model directory '" + m.string() + "': '") &&
                                       ContainsSubstring("tgt.spm.model' is missing"));
  std::ofstream(m / "tgt.spm.model") << "garbage";
  CHECK_THROWS_WITH(
      load_translator(m.string()),
      ContainsSubstring("tgt.spm.model' is not a SentencePiece model"));
  fs::copy_file(
      dir.path / "saved.model", m / "tgt.spm.model", fs::copy_options::overwrite_existing);
  CHECK_NOTHROW(load_translator(m.string()));
  std::string options;
  {
    std::ifstream in(m / "options.txt");
    options.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = options.find("tokenizer=sentencepiece");
  REQUIRE(at != std::string::npos);
  std::ofstream(m / "options.txt") << options.replace(at, 23, "tokenizer=wordpiece");
  CHECK_THROWS_WITH(
      load_translator(m.string()),
      ContainsSubstring("tokenizer is 'wordpiece', expected words or sentencepiece"));
}
