// The training recipe's parts: tied embeddings, the learning rate schedules and the moving
// average of the weights (train --tie-embeddings, --schedule, --ema).

#include <trainer.h>
#include <weight_average.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <filesystem>

using namespace translate;
using Catch::Approx;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using translate::testing::TempDir;
using translate::testing::toy_config;
using translate::testing::write_toy_corpus;

namespace {

ModelOptions small_transformer() {
  ModelOptions o;
  o.src_vocab = 11;
  o.tgt_vocab = 13;
  o.hidden_dim = o.embed_dim = 16;
  o.heads = 2;
  o.layers = 1;
  o.ff_dim = 32;
  o.max_len = 16;
  return o;
}

std::shared_ptr<Seq2SeqImpl> load_weights(const fs::path& dir, const std::string& file) {
  auto m = make_model(ModelOptions::from_map(read_key_values((dir / "options.txt").string())));
  torch::serialize::InputArchive a;
  a.load_from((dir / file).string());
  m->load(a);
  return m;
}

bool same_weights(const Seq2SeqImpl& a, const Seq2SeqImpl& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size())
    return false;
  for (const auto& p : pa) {
    if (!pb.contains(p.key()) || !torch::equal(p.value(), pb[p.key()]))
      return false;
  }
  return true;
}

} // namespace

TEST_CASE("tied embeddings: the output layer's weight is the target embedding", "[translation]") {
  ModelOptions o = small_transformer();
  const auto untied = make_model(o);
  o.tie_embeddings = true;
  const auto tied = make_model(o);
  const auto params = tied->named_parameters();
  CHECK_FALSE(params.contains("out.weight"));
  REQUIRE(params.contains("out_bias"));
  CHECK(params.size() + 1 == untied->named_parameters().size()); // out.weight, out.bias -> out_bias
  const auto out = tied->output_layer();
  CHECK(out->weight.is_same(params["tgt_embedding.weight"]));
  CHECK(out->bias.is_same(params["out_bias"]));

  // Both uses reach the one tensor's gradient: the embedding's rows of the input tokens and
  // the output layer's every row.
  const auto src = torch::tensor({{4, 5, 6}});
  const auto tgt = torch::tensor({{1, 7}});
  tied->forward(src, torch::zeros_like(src, torch::kBool), tgt).sum().backward();
  const auto g = params["tgt_embedding.weight"].grad();
  REQUIRE(g.defined());
  CHECK(g.abs().sum(1).gt(0).all().item<bool>());

  // Saved in options.txt; a directory without the key is untied; a bad value is an error.
  CHECK(o.to_map().at("tie_embeddings") == "1");
  CHECK(ModelOptions::from_map(o.to_map()).tie_embeddings);
  auto m = o.to_map();
  m.erase("tie_embeddings");
  CHECK_FALSE(ModelOptions::from_map(m).tie_embeddings);
  m["tie_embeddings"] = "yes";
  CHECK_THROWS_WITH(ModelOptions::from_map(m), ContainsSubstring("'tie_embeddings'"));
  o.kind = "gru";
  CHECK_THROWS_WITH(make_model(o), ContainsSubstring("tie_embeddings needs the Transformer"));
}

TEST_CASE("learning rate schedules follow their formulas", "[translation]") {
  TrainConfig c;
  c.warmup = 10;
  c.epochs = 5;
  // inverse-sqrt: min(s / w, sqrt(w / s))
  CHECK(lr_factor(c, 5, 0, 20) == Approx(0.5));
  CHECK(lr_factor(c, 10, 0, 20) == Approx(1.0));
  CHECK(lr_factor(c, 40, 0, 20) == Approx(0.5));
  // linear, over epochs * batches = 100 steps: min(s / w, 1 - s / 100)
  c.schedule = "linear";
  CHECK(lr_factor(c, 5, 0, 20) == Approx(0.5));
  CHECK(lr_factor(c, 10, 0, 20) == Approx(0.9));
  CHECK(lr_factor(c, 75, 0, 20) == Approx(0.25));
  CHECK(lr_factor(c, 100, 0, 20) == Approx(0.0));
  CHECK(lr_factor(c, 120, 0, 20) == Approx(0.0));
  // over max_steps = 40 where set
  c.max_steps = 40;
  CHECK(lr_factor(c, 30, 0, 20) == Approx(0.25));
  // over the time budget where set: 1 - elapsed / budget
  c.time_budget = 200;
  CHECK(lr_factor(c, 30, 50, 20) == Approx(0.75));
  CHECK(lr_factor(c, 3, 50, 20) == Approx(0.3));
  CHECK(lr_factor(c, 300, 250, 20) == Approx(0.0));
}

TEST_CASE("the moving average of the weights follows its formula", "[translation]") {
  const ModelOptions o = small_transformer();
  const auto model = make_model(o);
  WeightAverage average(make_model(o), *model, 0.9);
  CHECK(same_weights(*average.model(), *model));
  CHECK_FALSE(average.model()->is_training());
  const auto w0 = model->named_parameters()["out.weight"].detach().clone();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters())
      p.add_(1.0);
  }
  // Step 1: d = min(0.9, 2 / 11); step 100: d = 0.9.
  average.update(1);
  const double d1 = 2.0 / 11.0;
  const auto a1 = average.model()->named_parameters()["out.weight"].detach().clone();
  CHECK(torch::allclose(a1, d1 * w0 + (1 - d1) * (w0 + 1), 1e-6, 1e-6));
  average.update(100);
  const auto a2 = average.model()->named_parameters()["out.weight"];
  CHECK(torch::allclose(a2, 0.9 * a1 + 0.1 * (w0 + 1), 1e-6, 1e-6));
  CHECK_THROWS_WITH(
      WeightAverage(make_model(o), *model, 1.0), ContainsSubstring("decay must be in (0, 1)"));
}

TEST_CASE("train --ema saves the average as model.pt and resumes it", "[translation]") {
  TempDir dir("ema");
  write_toy_corpus(dir.path, 200, 5);
  TrainConfig c = toy_config(dir.path, "transformer");
  c.model.tie_embeddings = true;
  c.ema = 0.9; // inverse-sqrt: a linear schedule over epochs would change with --epochs
  c.epochs = 1;
  train(c);
  const fs::path out = c.out_dir;
  CHECK(read_key_values((out / "train.txt").string()).at("ema") == "0.90000000000000002");
  const auto last = load_weights(out, "checkpoint/weights.pt");
  const auto avg = load_weights(out, "checkpoint/average.pt");
  CHECK(same_weights(*load_weights(out, "model.pt"), *avg)); // epoch 1 is the best so far
  CHECK_FALSE(same_weights(*last, *avg));

  // Resumed, the average goes on from the saved one: the same as a run of two epochs.
  resume(c.out_dir, /*epochs=*/2, /*time_budget=*/0, /*progress=*/false);
  TrainConfig straight = c;
  straight.out_dir = (dir.path / "straight").string();
  straight.epochs = 2;
  train(straight);
  CHECK(same_weights(
      *load_weights(out, "checkpoint/average.pt"),
      *load_weights(straight.out_dir, "checkpoint/average.pt")));

  // A checkpoint without its average is an error that names the file.
  fs::remove(out / "checkpoint" / "average.pt");
  CHECK_THROWS_WITH(
      resume(c.out_dir, 3, 0, false),
      ContainsSubstring("missing weights file") && ContainsSubstring("average.pt"));

  TrainConfig bad = c;
  bad.out_dir = (dir.path / "bad").string();
  bad.ema = 1.0;
  CHECK_THROWS_WITH(train(bad), ContainsSubstring("ema must be in [0, 1)"));
  bad.ema = 0;
  bad.schedule = "cosine";
  CHECK_THROWS_WITH(train(bad), ContainsSubstring("expected inverse-sqrt or linear"));
}

TEST_CASE("word dropout replaces source words, never specials, by <unk>", "[translation]") {
  torch::manual_seed(3);
  // Words 4..99 and every special, 100,000 of each kind.
  const auto words = torch::randint(4, 100, {100000});
  const auto specials = torch::randint(0, 4, {100000});
  const auto src = torch::cat({words, specials});
  CHECK(torch::equal(drop_words(src, 0), src));
  const auto dropped = drop_words(src, 0.25);
  const auto changed = dropped.ne(src);
  CHECK(dropped.masked_select(changed).eq(Vocab::kUnk).all().item<bool>());
  CHECK_FALSE(changed.narrow(0, 100000, 100000).any().item<bool>());
  // Binomial(100000, 0.25): standard deviation 137 words, so 0.25 ± 0.005 is over 9 of them.
  const double fraction = changed.narrow(0, 0, 100000).to(torch::kDouble).mean().item<double>();
  CHECK(fraction == Approx(0.25).margin(0.005));
}
