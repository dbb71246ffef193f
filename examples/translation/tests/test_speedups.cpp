// The translation example's speed-ups (examples/translation/speedups/) against their plain
// LibTorch twins inside the models: the same loss and the same gradients with every speed-up
// on and with every one off. Each speed-up's own test against its twin is in test_training.cpp.

#include <data.h>
#include <model.h>
#include <speedups/speedups.h>
#include <trainer.h>

#include <torchattn/autocast.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace {

using namespace translate;

/// Restores the process's speed-ups when a test ends.
struct SpeedupsGuard {
  Speedups saved = speedups();
  ~SpeedupsGuard() { speedups() = saved; }
};

/// Loss and gradients of one training step of `model` on `batch` (dropout 0: the two dropouts
/// draw different masks).
std::pair<double, std::vector<torch::Tensor>> step(Seq2SeqImpl& model, const Batch& batch) {
  model.zero_grad();
  auto loss = training_loss(model, batch, /*label_smoothing=*/0.1);
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.parameters()) {
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  }
  return {loss.item<double>(), grads};
}

/// Three toy pairs as one batch.
Batch toy_batch() {
  const std::vector<EncodedPair> pairs{
      {{5, 6, 7, 8, 2}, {9, 10, 2}}, {{5, 7, 2}, {11, 12, 13, 14, 2}}, {{8, 8, 6, 2}, {9, 2}}};
  return make_batch(pairs, {0, 1, 2});
}

/// A tiny model of `kind` from seed 4, dropout off (two dropouts would draw different masks),
/// in training mode.
std::shared_ptr<Seq2SeqImpl> tiny_model(const std::string& kind) {
  ModelOptions o;
  o.kind = kind;
  o.src_vocab = 20;
  o.tgt_vocab = 20;
  o.embed_dim = o.hidden_dim = 16;
  o.ff_dim = 32;
  o.heads = 2;
  o.dropout = 0.0;
  torch::manual_seed(4);
  auto model = make_model(o);
  model->train();
  return model;
}

} // namespace

TEST_CASE(
    "the models train the same with the speed-ups and with their plain twins", "[translation]") {
  SpeedupsGuard guard;
  const Batch batch = toy_batch();
  for (const std::string kind : {"gru", "transformer"}) {
    auto model = tiny_model(kind);
    speedups() = Speedups{};
    auto [fast_loss, fast_grads] = step(*model, batch);
    speedups() = speedups_without("all");
    auto [plain_loss, plain_grads] = step(*model, batch);
    CAPTURE(kind);
    CHECK(std::abs(fast_loss - plain_loss) <= 1e-5 * std::abs(plain_loss));
    REQUIRE(fast_grads.size() == plain_grads.size());
    for (size_t i = 0; i < fast_grads.size(); ++i) {
      CAPTURE(i);
      CHECK(torch::allclose(fast_grads[i], plain_grads[i], 1e-4, 1e-6));
    }
  }
}

TEST_CASE(
    "under bfloat16 autocast the speed-ups train as their plain twins do, in float32 gradients",
    "[translation]") {
  // train --precision bf16: the forward and loss under CPU autocast. The fused loss runs its
  // matmuls in bfloat16 as Linear does there; the fused GRU keeps its recurrence in float32 as
  // torch::gru does. Both twins round differently (bfloat16 has 8 significant bits), so they
  // agree to a few percent, not to float32's 1e-4, and both differ from float32 training.
  SpeedupsGuard guard;
  const Batch batch = toy_batch();
  for (const std::string kind : {"gru", "transformer"}) {
    auto model = tiny_model(kind);
    auto autocast_step = [&] {
      torchattn::AutocastCpu autocast(torch::kBFloat16);
      return step(*model, batch);
    };
    speedups() = Speedups{};
    auto [fast_loss, fast_grads] = autocast_step();
    const auto float32_grads = step(*model, batch).second;
    speedups() = speedups_without("all");
    auto [plain_loss, plain_grads] = autocast_step();
    CAPTURE(kind);
    CHECK(std::abs(fast_loss - plain_loss) <= 2e-2 * std::abs(plain_loss));
    REQUIRE(fast_grads.size() == plain_grads.size());
    bool differs_from_float32 = false;
    for (size_t i = 0; i < fast_grads.size(); ++i) {
      CAPTURE(i);
      CHECK(fast_grads[i].scalar_type() == torch::kFloat);
      const double norm = plain_grads[i].norm().item<double>();
      // (The floor: a few gradients are ~1e-4 in all, where bfloat16 rounding is ~1e-6.)
      CHECK((fast_grads[i] - plain_grads[i]).norm().item<double>() <= 5e-2 * norm + 1e-5);
      differs_from_float32 |= !torch::equal(fast_grads[i], float32_grads[i]);
    }
    CHECK(differs_from_float32);
  }
}

TEST_CASE("TORCHATTN_TRANSLATE_PLAIN names speed-ups, and refuses unknown ones", "[translation]") {
  const auto s = speedups_without("gru,adam");
  CHECK_FALSE(s.gru);
  CHECK(s.loss);
  CHECK(s.dropout);
  CHECK_FALSE(s.adam);
  const auto none = speedups_without("all");
  CHECK_FALSE((none.gru || none.loss || none.dropout || none.adam));
  CHECK_THROWS_WITH(
      speedups_without("gru,fast"), Catch::Matchers::ContainsSubstring("unknown speed-up 'fast'"));
}

TEST_CASE("the speed-ups' row loops run on every thread", "[translation]") {
  // at::parallel_for runs its whole range on the caller unless the file that instantiates it
  // is compiled with OpenMP: the example's library was not, and its loss, dropout, Adam and
  // GRU loops ran on one thread whatever the thread count.
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  CHECK(speedup_threads(64) == 2);
  at::set_num_threads(1);
  CHECK(speedup_threads(64) == 1);
  at::set_num_threads(saved);
}
