// Tokenizer, vocabulary and BLEU of the translation example.

#include <bleu.h>
#include <text.h>

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace translate;
using Strings = std::vector<std::string>;

TEST_CASE("tokenize splits words, apostrophes and punctuation", "[translation]") {
  CHECK(tokenize("Va !") == Strings{"va", "!"});
  CHECK(tokenize("J'ai faim.") == Strings{"j'", "ai", "faim", "."});
  CHECK(tokenize("Don't   go,  Tom!") == Strings{"don'", "t", "go", ",", "tom", "!"});
  CHECK(tokenize("Est-ce prêt\u202f?") == Strings{"est-ce", "prêt", "?"});
  CHECK(tokenize("L\u2019ÉTÉ À Paris") == Strings{"l'", "été", "à", "paris"});
  CHECK(tokenize("- Oui -") == Strings{"-", "oui", "-"});
  CHECK(tokenize("Attends\u2026") == Strings{"attends", "..."});
  CHECK(tokenize("").empty());
}

TEST_CASE("detokenize undoes the tokenizer's spacing for display", "[translation]") {
  CHECK(detokenize({"j'", "ai", "faim", "."}) == "J'ai faim.");
  CHECK(detokenize({"été", ",", "hiver", "!"}) == "Été, hiver !");
  CHECK(detokenize({}).empty());
}

TEST_CASE("utf8_lower lowercases Latin letters and keeps everything else", "[translation]") {
  CHECK(utf8_lower("ÀÉÎÕÜ ŒŸ Ab9") == "àéîõü œÿ ab9");
  CHECK(utf8_lower("\xff\xfe ok") == "\xff\xfe ok"); // invalid bytes stay
}

TEST_CASE("Vocab orders by frequency, saves and loads, and rejects broken files", "[translation]") {
  const Vocab v = Vocab::build({{"b", "a", "b"}, {"c", "b", "a"}}, /*min_freq=*/2, /*max_size=*/0);
  REQUIRE(v.size() == 6);
  CHECK(v.token(4) == "b");
  CHECK(v.token(5) == "a");
  CHECK(v.id("c") == Vocab::kUnk);
  CHECK(v.encode({"a", "zz"}) == std::vector<int64_t>{5, Vocab::kUnk});
  CHECK(v.decode({Vocab::kBos, 4, 5, Vocab::kEos, 4}) == Strings{"b", "a"});
  CHECK(Vocab::build({{"x", "y", "z"}}, 1, /*max_size=*/5).size() == 5);

  const auto dir = std::filesystem::temp_directory_path() / "torchattn_vocab_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "v.vocab").string();
  v.save(path);
  const Vocab back = Vocab::load(path);
  CHECK(back.size() == v.size());
  CHECK(back.id("a") == 5);

  std::ofstream(path) << "<pad>\n<unk>\n";
  CHECK_THROWS_WITH(Vocab::load(path), Catch::Matchers::ContainsSubstring("truncated"));
  std::ofstream(path) << "<pad>\nfoo\n<s>\n</s>\n";
  CHECK_THROWS_WITH(Vocab::load(path), Catch::Matchers::ContainsSubstring("line 2 is 'foo'"));
  std::ofstream(path) << "<pad>\n<unk>\n<s>\n</s>\nx\nx\n";
  CHECK_THROWS_WITH(Vocab::load(path), Catch::Matchers::ContainsSubstring("line 6 repeats 'x'"));
  CHECK_THROWS_WITH(
      Vocab::load((dir / "missing").string()), Catch::Matchers::ContainsSubstring("cannot open"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("tokenize_13a splits as sacreBLEU's 13a tokenizer", "[translation]") {
  CHECK(tokenize_13a("Hello, world.") == Strings{"Hello", ",", "world", "."});
  CHECK(
      tokenize_13a("It's 5-6 p.m. (3.14, 1,000)") ==
      Strings{"It's", "5", "-", "6", "p", ".", "m", ".", "(", "3.14", ",", "1,000", ")"});
  CHECK(tokenize_13a("Va !") == Strings{"Va", "!"});
  CHECK(tokenize_13a("a &amp; b<skipped>") == Strings{"a", "&", "b"});
  CHECK(tokenize_13a("l'été \"x\"") == Strings{"l'été", "\"", "x", "\""});
}

TEST_CASE(
    "tokenize_13a splits on Unicode spaces as sacreBLEU's str.split() does", "[translation]") {
  // sacreBLEU splits the tokenised line with Python's str.split(): on every code point whose
  // str.isspace() is true (U+0009-000D, U+001C-001F, U+0020, U+0085, U+00A0, U+1680,
  // U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000), not on zero-width ones. Expected
  // tokens by hand from those rules: "!" and "?" are split off by the 13a regex, then the
  // line splits at the narrow no-break space (U+202F, bytes E2 80 AF) or thin space (U+2009,
  // E2 80 89) that Tatoeba's French puts before them.
  CHECK(tokenize_13a("Je suis repu\u202f!") == Strings{"Je", "suis", "repu", "!"});
  CHECK(tokenize_13a("Vraiment\u2009?") == Strings{"Vraiment", "?"});
  CHECK(tokenize_13a("10\u00a0000 euros") == Strings{"10", "000", "euros"});
  CHECK(
      tokenize_13a("a\u3000b\u2028c\u0085d\x1c"
                   "e") == Strings{"a", "b", "c", "d", "e"});
  // U+200B (zero width space) and U+00AD (soft hyphen) are not whitespace to Python.
  CHECK(tokenize_13a("x\u200by\u00adz") == Strings{"x\u200by\u00adz"});
  // A broken UTF-8 byte is a character of its word, not a separator.
  CHECK(tokenize_13a("ab\xe2\x80 cd") == Strings{"ab\xe2\x80", "cd"});
  // A hypothesis written with ASCII spaces now matches its reference exactly.
  CHECK(corpus_bleu({"Je suis repu !"}, {{"Je suis repu\u202f!"}}).score == 100.0);
}

TEST_CASE("corpus_bleu matches the BLEU formula computed by hand", "[translation]") {
  // Identical: every precision is 1, no brevity penalty.
  CHECK(
      corpus_bleu({"the cat sat on the mat"}, {{"the cat sat on the mat"}}).score ==
      Catch::Approx(100.0));

  // hyp a b c d e, ref a b c d f g: precisions 4/5, 3/4, 2/3, 1/2; c = 5, r = 6.
  const BleuScore s = corpus_bleu({"a b c d e"}, {{"a b c d f g"}});
  const double expected =
      100.0 * std::exp(1.0 - 6.0 / 5.0) * std::pow(4.0 / 5 * 3.0 / 4 * 2.0 / 3 * 1.0 / 2, 0.25);
  CHECK(s.score == Catch::Approx(expected).epsilon(1e-12));
  CHECK(s.precisions[0] == Catch::Approx(80.0));
  CHECK(s.precisions[3] == Catch::Approx(50.0));
  CHECK(s.hyp_len == 5);
  CHECK(s.ref_len == 6);

  // Two references: counts clipped by the larger reference count, the closest length (the
  // shorter on a tie: lengths 3 and 5 for a hypothesis of 4) as r.
  // hyp "x x y z": 1-grams x (2, clip max(1, 2) = 2), y, z -> 4/4; 2-grams xx, xy, yz: xx in ref 2,
  // xy in ref 1, yz in ref 1 -> 3/3; 3-grams xxy (no), xyz (ref 1) -> 1/2; 4-gram xxyz (no) -> 0/1,
  // smoothed to 1 / (2 * 1). r = 3 <= c = 4: no penalty.
  const BleuScore m = corpus_bleu({"x x y z"}, {{"x y z", "x x w v w"}});
  const double expected_m = 100.0 * std::pow(1.0 * 1.0 * 0.5 * 0.5, 0.25);
  CHECK(m.score == Catch::Approx(expected_m).epsilon(1e-12));
  CHECK(m.ref_len == 3);

  // Case-insensitive by default, statistics summed over the corpus before the geometric mean.
  const BleuScore c = corpus_bleu({"A B C D", "e f"}, {{"a b c d"}, {"e g"}});
  // 1-grams 5/6, 2-grams 3/4, 3-grams 2/2, 4-grams 1/1; c = r = 6.
  CHECK(c.score == Catch::Approx(100.0 * std::pow(5.0 / 6 * 3.0 / 4, 0.25)).epsilon(1e-12));
  // Case-sensitive: nothing matches, every precision is smoothed: 1/(2*4), 1/(4*3), 1/(8*2),
  // 1/(16*1).
  CHECK(
      corpus_bleu({"A B C D"}, {{"a b c d"}}, /*lowercase=*/false).score ==
      Catch::Approx(100.0 * std::pow(1.0 / 8 * 1.0 / 12 * 1.0 / 16 * 1.0 / 16, 0.25))
          .epsilon(1e-12));

  CHECK(corpus_bleu({""}, {{"a b"}}).score == 0.0);
  CHECK_THROWS_WITH(
      corpus_bleu({"a"}, {}), Catch::Matchers::ContainsSubstring("1 hypotheses but 0"));
  CHECK_THROWS_WITH(corpus_bleu({"a"}, {{}}), Catch::Matchers::ContainsSubstring("no reference"));
}
