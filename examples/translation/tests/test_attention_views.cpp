// Attention you can read: the plot grid, the encoder's attention rollout and Pharaoh word
// alignments, tested by their content.

#include <attention_views.h>
#include <tokenizer.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

using namespace translate;
using Catch::Matchers::ContainsSubstring;
using translate::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

/// Whether an XML parser (Python's, /usr/bin/python3) reads the file.
bool xml_parses(const fs::path& p) {
  const std::string cmd =
      "/usr/bin/python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' '" +
      p.string() + "'";
  return std::system(cmd.c_str()) == 0;
}

} // namespace

TEST_CASE("encoder_rollout follows Abnar and Zuidema's recurrence", "[translation]") {
  // By hand: A1 = [[1, 0], [.5, .5]] -> 0.5 A1 + 0.5 I = [[1, 0], [.25, .75]];
  // A2 = [[.5, .5], [0, 1]] -> [[.75, .25], [0, 1]]; rollout = Â2 Â1 = [[.8125, .1875],
  // [.25, .75]]. Two heads averaged: each layer's heads differ but average to A.
  const auto a1 = torch::tensor({1.0f, 0.0f, 0.5f, 0.5f}).view({1, 2, 2});
  const auto a2 = torch::tensor({0.5f, 0.5f, 0.0f, 1.0f}).view({1, 2, 2});
  const auto delta = torch::tensor({0.25f, -0.25f, -0.25f, 0.25f}).view({1, 2, 2});
  const auto two_heads = [&](const torch::Tensor& a) {
    return torch::cat({a + delta, a - delta}, 0);
  };
  const auto r = encoder_rollout({two_heads(a1), two_heads(a2)});
  const auto expected = torch::tensor({0.8125f, 0.1875f, 0.25f, 0.75f}).view({2, 2});
  CHECK(torch::allclose(r, expected, 1e-6, 1e-6));
  CHECK_THROWS_WITH(encoder_rollout({}), ContainsSubstring("no encoder self-attention"));
}

TEST_CASE("pharaoh_alignment maps token attention to words", "[translation]") {
  // Word level: "j'" "ai" are one word as printed ("J'ai"), "." joins the word before it.
  Translator::Result r;
  r.source_tokens = {"i", "am", "hungry", "."};         // words 0 1 2 2
  r.tokens = {"j'", "ai", "faim", "."};                 // words 0 0 1 1
  r.attention = torch::tensor({0.9f, 0.1f, 0.0f, 0.0f,  // j'   -> i
                               0.0f, 0.7f, 0.3f, 0.0f,  // ai   -> am
                               0.0f, 0.1f, 0.5f, 0.4f,  // faim -> hungry .
                               0.0f, 0.0f, 0.3f, 0.7f,  // .    -> hungry .
                               0.2f, 0.2f, 0.3f, 0.3f}) // </s> (left out)
                    .view({5, 4});
  // Output word 0 ("J'ai"): i 0.9, am 0.8, hungry 0.3 -> i (0).
  // Output word 1 ("faim."): hungry + "." = 1.9 -> source word 2.
  CHECK(pharaoh_alignment(Tokenizers{}, r) == "0-0 2-1");

  // SentencePiece: "▁" starts a word.
  TempDir dir("align_spm");
  const std::vector<std::string> text = {"the black cat", "le chat noir", "cats and dogs"};
  Tokenizer::train_sentencepiece(text, (dir.path / "m.model").string(), "bpe", 40);
  const Tokenizer sp = Tokenizer::load_sentencepiece((dir.path / "m.model").string());
  Translator::Result s;
  s.source_tokens = {"\u2581the", "\u2581black", "\u2581ca", "t"}; // words 0 1 2 2
  s.tokens = {"\u2581le", "\u2581cha", "t", "\u2581noir"};         // words 0 1 1 2
  s.attention = torch::tensor({0.7f, 0.1f, 0.1f, 0.1f,             // le   -> the
                               0.0f, 0.3f, 0.4f, 0.3f,             // cha  -> ca t (0.7) over black
                               0.0f, 0.4f, 0.3f, 0.3f,             // t    -> ca t (0.6)
                               0.1f, 0.8f, 0.1f, 0.0f})            // noir -> black
                    .view({4, 4});
  CHECK(sp.word_index(s.source_tokens) == std::vector<int64_t>{0, 1, 2, 2});
  CHECK(pharaoh_alignment(Tokenizers{sp, sp}, s) == "0-0 1-2 2-1");
}

TEST_CASE("plot's grid has a labelled panel per layer and head, and valid SVG", "[translation]") {
  TempDir dir("plot_grid");
  translate::testing::write_toy_corpus(dir.path, 200, 7);
  TrainConfig c = translate::testing::toy_config(dir.path, "transformer");
  c.model.layers = 2;
  c.epochs = 1;
  train(c);
  const Translator t = load_translator(c.out_dir);
  Translator::Options o;
  o.keep_attention = true;
  const auto r = t.translate({"red cat sees tom"}, o).at(0);
  const auto maps = attention_maps_of(t, r);
  REQUIRE(maps.encoder_self.size() == 2);
  REQUIRE(maps.decoder_self.size() == 2);
  REQUIRE(maps.cross.size() == 2);
  // The last layer's cross-attention, averaged over heads, is what decoding kept.
  CHECK(torch::allclose(
      maps.cross[1].mean(0).narrow(0, 0, r.attention.size(0)), r.attention, 1e-5, 1e-6));
  for (const auto& w : maps.encoder_self) // rows are distributions
    CHECK(torch::allclose(w.sum(-1), torch::ones({2, 4}), 1e-5, 1e-5));

  int per_row = 0;
  const auto all = attention_panels(maps, r, {}, per_row);
  CHECK(all.size() == 3 * 2 * 2 + 1); // three kinds x two layers x two heads + rollout
  CHECK(per_row == 2);
  write_heatmap_grid_svg((dir.path / "grid.svg").string(), all, per_row);
  write_heatmap_grid_png((dir.path / "grid.png").string(), all, per_row);
  const std::string svg = read_file(dir.path / "grid.svg");
  CHECK(count(svg, "<g class=\"panel\"") == 13);
  for (const char* title :
       {"encoder self-attention, layer 1, head 1", "decoder self-attention, layer 2, head 1",
        "cross-attention, layer 2, head 2", "encoder attention rollout"}) {
    CHECK_THAT(svg, ContainsSubstring(std::string(">") + title + "</text>"));
  }
  CHECK_THAT(svg, ContainsSubstring(">sees</text>"));
  CHECK_THAT(svg, ContainsSubstring(">&lt;s&gt;</text>")); // the decoder's first input
  CHECK(xml_parses(dir.path / "grid.svg"));
  CHECK(read_file(dir.path / "grid.png").rfind("\x89PNG\r\n\x1a\n", 0) == 0);

  PanelChoice one;
  one.layer = 2;
  one.head = 1;
  one.rollout = false;
  const auto chosen = attention_panels(maps, r, one, per_row);
  REQUIRE(chosen.size() == 3);
  CHECK(chosen[2].title == "cross-attention, layer 2, head 1");
  CHECK(torch::equal(chosen[2].weights, maps.cross[1][0]));
  one.layer = 3;
  CHECK_THROWS_WITH(
      attention_panels(maps, r, one, per_row),
      ContainsSubstring("--layer 3 is not a layer of this model (1 to 2)"));
  one.layer = 0;
  one.head = 5;
  CHECK_THROWS_WITH(
      attention_panels(maps, r, one, per_row),
      ContainsSubstring("--head 5 is not a head of this model (1 to 2)"));
}
