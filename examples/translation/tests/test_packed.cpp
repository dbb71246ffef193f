// Packed batches: sentences back to back with no padding, each attending only to itself. A
// packed batch must give every sentence what its padded batch gives it.

#include <model.h>
#include <packed.h>
#include <trainer.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <numeric>
#include <set>

using namespace translate;
using Catch::Matchers::ContainsSubstring;

namespace {

std::vector<EncodedPair> random_pairs(int n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<EncodedPair> pairs;
  for (int i = 0; i < n; ++i) {
    EncodedPair p;
    const int s = 1 + static_cast<int>(gen() % 9), t = 1 + static_cast<int>(gen() % 9);
    for (int k = 0; k < s; ++k)
      p.src.push_back(4 + static_cast<int64_t>(gen() % (vocab - 4)));
    for (int k = 0; k < t; ++k)
      p.tgt.push_back(4 + static_cast<int64_t>(gen() % (vocab - 4)));
    pairs.push_back(p);
  }
  return pairs;
}

std::vector<int64_t> values(const torch::Tensor& t) {
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
}

} // namespace

TEST_CASE("a packed batch puts sentences back to back, positions restarting", "[translation]") {
  // By hand: pairs (src 5 6, tgt 7) and (src 8, tgt 9 10); <s> = 2, </s> = 3.
  const std::vector<EncodedPair> pairs = {{{5, 6}, {7}}, {{8}, {9, 10}}};
  const PackedBatch b = make_packed_batch(pairs, {0, 1});
  CHECK(values(b.src) == std::vector<int64_t>{5, 6, 8});
  CHECK(values(b.src_pos) == std::vector<int64_t>{0, 1, 0});
  CHECK(values(b.cu_src) == std::vector<int64_t>{0, 2, 3});
  CHECK(values(b.tgt_in) == std::vector<int64_t>{2, 7, 2, 9, 10});
  CHECK(values(b.tgt_out) == std::vector<int64_t>{7, 3, 9, 10, 3});
  CHECK(values(b.tgt_pos) == std::vector<int64_t>{0, 1, 0, 1, 2});
  CHECK(values(b.cu_tgt) == std::vector<int64_t>{0, 2, 5});
  CHECK(b.target_tokens == 5);
  // Padded as one batch: sources 2 x 2 positions for 3 tokens, targets 2 x 3 for 5.
  const auto [src_pad, tgt_pad] = padding_fraction(pairs, {{0, 1}});
  CHECK(src_pad == 0.25);
  CHECK(std::abs(tgt_pad - 1.0 / 6.0) < 1e-12);
}

TEST_CASE("packed_batches takes every pair once, within max_tokens a side", "[translation]") {
  const auto pairs = random_pairs(500, 50, 1);
  std::mt19937_64 rng(3);
  const auto batches = packed_batches(pairs, 64, rng);
  std::multiset<size_t> seen;
  for (size_t n = 0; n < batches.size(); ++n) {
    const auto& b = batches[n];
    int64_t src = 0, tgt = 0;
    for (size_t i : b) {
      seen.insert(i);
      src += static_cast<int64_t>(pairs[i].src.size());
      tgt += static_cast<int64_t>(pairs[i].tgt.size()) + 1;
    }
    CHECK(std::max(src, tgt) <= 64);
    if (n + 1 < batches.size())
      CHECK(std::max(src, tgt) > 64 - 10); // the next pair (at most 10 a side) did not fit
  }
  std::vector<size_t> all(pairs.size());
  std::iota(all.begin(), all.end(), 0);
  CHECK(seen == std::multiset<size_t>(all.begin(), all.end()));
}

TEST_CASE(
    "a packed batch gives each sentence its padded batch's features, loss and gradients",
    "[translation]") {
  ModelOptions o;
  o.src_vocab = 50;
  o.tgt_vocab = 60;
  o.hidden_dim = o.embed_dim = 32;
  o.heads = 4;
  o.ff_dim = 64;
  o.layers = 2;
  o.max_len = 32;
  torch::manual_seed(0);
  auto model = make_model(o);
  model->eval(); // no dropout: both layouts compute the same function
  const auto pairs = random_pairs(12, 50, 2);
  std::vector<size_t> idx(pairs.size());
  std::iota(idx.begin(), idx.end(), 0);
  const Batch padded = make_batch(pairs, idx);
  const PackedBatch packed = make_packed_batch(pairs, idx);

  const torch::Tensor hp = model->features(padded.src, padded.src_pad, padded.tgt_in);
  const torch::Tensor hk = model->features_packed(packed);
  REQUIRE(hk.size(0) == packed.target_tokens);
  const auto cu = values(packed.cu_tgt);
  for (size_t r = 0; r < pairs.size(); ++r) {
    const int64_t n = cu[r + 1] - cu[r];
    CHECK(torch::allclose(
        hp[static_cast<int64_t>(r)].narrow(0, 0, n), hk.narrow(0, cu[r], n), 1e-4, 1e-5));
  }

  const torch::Tensor lp = training_loss(*model, padded, 0.1);
  lp.backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) {
    grads.push_back(p.grad().clone());
    p.mutable_grad().zero_();
  }
  const torch::Tensor lk = training_loss(*model, packed, 0.1);
  lk.backward();
  CHECK(std::abs(lp.item<double>() - lk.item<double>()) < 1e-5);
  const auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    CHECK(torch::allclose(params[i].grad(), grads[i], 1e-3, 1e-6));
}

TEST_CASE("packed training runs the Transformer and refuses the GRU", "[translation]") {
  translate::testing::TempDir dir("packed_train");
  translate::testing::write_toy_corpus(dir.path, 200, 9);
  TrainConfig c = translate::testing::toy_config(dir.path, "transformer");
  c.pack = true;
  const auto s = train(c);
  CHECK(s.epochs_done == 2);
  CHECK(TrainConfig::from_map(c.to_map()).pack); // saved for --resume
  TrainConfig g = translate::testing::toy_config(dir.path, "gru");
  g.out_dir = (dir.path / "gru").string();
  g.pack = true;
  CHECK_THROWS_WITH(train(g), ContainsSubstring("--pack needs the Transformer"));
  CHECK_FALSE(std::filesystem::exists(g.out_dir)); // refused before anything was written
}
