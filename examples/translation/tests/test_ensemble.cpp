// Ensembles of translation models (ensemble.h): a step averages the members' probabilities,
// decoding takes an ensemble as it takes one model, and members must share vocabularies.

#include <decode.h>
#include <ensemble.h>
#include <trainer.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

using namespace translate;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using translate::testing::TempDir;
using translate::testing::toy_config;
using translate::testing::write_toy_corpus;

namespace {

/// A Transformer (seed 1) and a GRU (seed 2) trained on the same toy corpus in `dir`.
std::pair<std::string, std::string> train_two(const fs::path& dir) {
  write_toy_corpus(dir, 300, 4);
  TrainConfig a = toy_config(dir, "transformer");
  a.out_dir = (dir / "a").string();
  train(a);
  TrainConfig b = toy_config(dir, "gru");
  b.out_dir = (dir / "b").string();
  b.seed = 2;
  train(b);
  return {a.out_dir, b.out_dir};
}

} // namespace

TEST_CASE("an ensemble's step is the log of its members' mean probability", "[translation]") {
  TempDir dir("ensemble_step");
  const auto [a, b] = train_two(dir.path);
  const Translator ta = load_translator(a), tb = load_translator(b);
  const Translator te = load_ensemble({a, b});
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> rows;
  for (const char* s : {"red cat sees dog", "tom likes big mary"})
    rows.push_back(torch::tensor(ta.src_vocab.encode(tokenize(s)), torch::kLong));
  const torch::Tensor src = torch::stack(rows);
  const torch::Tensor pad = src.eq(Vocab::kPad);
  auto sa = ta.model->encode(src, pad), sb = tb.model->encode(src, pad);
  auto se = te.model->encode(src, pad);
  torch::Tensor tokens = torch::full({2}, Vocab::kBos, torch::kLong);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    torch::Tensor att_a, att_b, att_e;
    const torch::Tensor la = ta.model->step(*sa, tokens, &att_a);
    const torch::Tensor lb = tb.model->step(*sb, tokens, &att_b);
    const torch::Tensor le = te.model->step(*se, tokens, &att_e);
    // By the formula: log((p_a + p_b) / 2), in float64.
    const torch::Tensor expected =
        ((la.to(torch::kDouble).exp() + lb.to(torch::kDouble).exp()) / 2).log();
    CHECK(torch::allclose(le.to(torch::kDouble), expected, 1e-5, 1e-6));
    CHECK(torch::allclose(att_e, (att_a + att_b) / 2, 1e-5, 1e-6));
    CHECK(le.exp().sum(-1).sub(1).abs().max().item<double>() < 1e-4);
    tokens = le.argmax(-1);
    if (step == 1) { // beam search reorders rows: every member's state follows
      const torch::Tensor index = torch::tensor({1, 1}, torch::kLong);
      sa->select(index);
      sb->select(index);
      se->select(index);
      tokens = tokens.index_select(0, index);
    }
  }
  // Decoding takes it as one model: greedy and beam 4 give a translation per sentence.
  const std::vector<std::string> sentences = {"red cat", "tom sees mary", "blue dog likes cat"};
  Translator::Options beam4;
  beam4.beam = 4;
  for (const Translator::Options& o : {Translator::Options{}, beam4}) {
    const auto out = te.translate(sentences, o);
    REQUIRE(out.size() == sentences.size());
    for (const auto& r : out)
      CHECK(!r.tokens.empty());
  }
}

TEST_CASE("an ensemble of one model is that model", "[translation]") {
  TempDir dir("ensemble_one");
  write_toy_corpus(dir.path, 300, 4);
  TrainConfig c = toy_config(dir.path, "transformer");
  train(c);
  const std::vector<std::string> sentences = {"red cat sees dog", "tom", "blue likes"};
  const auto one = load_translator(c.out_dir).translate(sentences, {});
  const auto ens = load_ensemble({c.out_dir}).translate(sentences, {});
  for (size_t i = 0; i < sentences.size(); ++i)
    CHECK(one[i].text == ens[i].text);
}

TEST_CASE("an ensemble's models must share their vocabularies", "[translation]") {
  TempDir dir("ensemble_vocab");
  const auto [a, b] = train_two(dir.path);
  CHECK_THROWS_WITH(load_ensemble({}), ContainsSubstring("no model directory"));
  CHECK_THROWS_WITH(
      load_ensemble({a, (dir.path / "none").string()}), ContainsSubstring("does not exist"));
  // Same sizes, two target tokens swapped: the ids would mean other words.
  const fs::path c = dir.path / "c";
  fs::copy(b, c, fs::copy_options::recursive);
  std::vector<std::string> lines;
  {
    std::ifstream in(c / "tgt.vocab");
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
  }
  REQUIRE(lines.size() > 6);
  std::swap(lines[4], lines[5]);
  {
    std::ofstream out(c / "tgt.vocab");
    for (const auto& line : lines)
      out << line << '\n';
  }
  CHECK_NOTHROW(load_translator(c.string()));
  CHECK_THROWS_WITH(load_ensemble({a, c.string()}), ContainsSubstring("other vocabularies"));
  CHECK_THROWS_WITH(load_ensemble({a, c.string()}), ContainsSubstring(c.string()));
  CHECK_THROWS_AS(EnsembleImpl({}), std::invalid_argument);
}
