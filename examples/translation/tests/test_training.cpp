// Training, checkpoints, decoding and heatmaps of the translation example, on a toy corpus
// written here: each "French" sentence is its English source reversed, with a marker word.

#include <decode.h>
#include <heatmap.h>
#include <speedups/fused_adam.h>
#include <speedups/fused_gru.h>
#include <speedups/fused_loss.h>
#include <trainer.h>

#include "temp_dir.h"
#include "toy_corpus.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace translate;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using translate::testing::TempDir;
using translate::testing::toy_config;
using translate::testing::write_toy_corpus;

namespace {

std::vector<double> history_column(const fs::path& dir, int column) {
  std::ifstream in(dir / "history.tsv");
  std::string line;
  std::getline(in, line);
  std::vector<double> values;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string field;
    for (int i = 0; i <= column; ++i)
      std::getline(s, field, '\t');
    values.push_back(std::stod(field));
  }
  return values;
}

} // namespace

TEST_CASE("a tiny training run lowers the loss, for both models", "[translation]") {
  const std::string kind = GENERATE("gru", "transformer");
  TempDir dir("train_" + kind);
  write_toy_corpus(dir.path, 400, 1);
  TrainConfig c = toy_config(dir.path, kind);
  c.epochs = 4;
  const TrainSummary s = train(c);
  CHECK(s.epochs_done == 4);
  const auto train_loss = history_column(dir.path / "model", 1);
  const auto dev_loss = history_column(dir.path / "model", 2);
  REQUIRE(train_loss.size() == 4);
  CHECK(train_loss.back() < 0.8 * train_loss.front());
  CHECK(dev_loss.back() < dev_loss.front());
  // The directory loads and translates.
  const Translator t = load_translator(c.out_dir);
  const auto r = t.translate({"red cat", ""}, {});
  REQUIRE(r.size() == 2);
  CHECK(!r[0].text.empty());
  CHECK(r[1].text.empty());
}

TEST_CASE("train --precision bf16 trains under autocast and resumes in bf16", "[translation]") {
  const std::string kind = GENERATE("gru", "transformer");
  TempDir dir("bf16_" + kind);
  write_toy_corpus(dir.path, 400, 1);
  TrainConfig c = toy_config(dir.path, kind);
  c.epochs = 3;
  c.precision = "bf16";
  train(c);
  CHECK(read_key_values((dir.path / "model" / "train.txt").string()).at("precision") == "bf16");
  const auto loss = history_column(dir.path / "model", 1);
  REQUIRE(loss.size() == 3);
  // The same run in float32: other losses (the flag reaches the training step), and bf16
  // learns as fast, within a few percent.
  TrainConfig f = c;
  f.precision = "fp32";
  f.out_dir = (dir.path / "fp32").string();
  train(f);
  const auto fp32_loss = history_column(dir.path / "fp32", 1);
  REQUIRE(fp32_loss.size() == 3);
  CHECK(fp32_loss.front() != loss.front());
  CHECK(loss.back() < 0.85 * loss.front());
  CHECK(std::abs(loss.back() - fp32_loss.back()) <= 0.05 * fp32_loss.back());
  // Resuming keeps bf16: its fourth epoch is an uninterrupted bf16 run's fourth epoch.
  resume(c.out_dir, 4, 0, false);
  TrainConfig straight = c;
  straight.out_dir = (dir.path / "straight").string();
  straight.epochs = 4;
  train(straight);
  const auto resumed = history_column(dir.path / "model", 1);
  REQUIRE(resumed.size() == 4);
  CHECK(resumed.back() == history_column(dir.path / "straight", 1).back());
  auto bad = read_key_values((dir.path / "model" / "train.txt").string());
  bad["precision"] = "fp8";
  CHECK_THROWS_WITH(TrainConfig::from_map(bad), ContainsSubstring("bad precision 'fp8'"));
}

#if defined(TORCHATTN_TRANSLATE_BIN) && defined(TORCHATTN_LAUNCH_SH)
TEST_CASE(
    "data-parallel: two ranks train and resume to the weights one process trains",
    "[translation]") {
  // The same seed and global batches, dropout off: rank 0's initial weights, each rank's share
  // of every batch weighted by its tokens, gradients averaged by bucketed all-reduce. After 20
  // steps, and 10 more after both resume, the weights agree with one process's within float32
  // summation order.
  const std::string kind = GENERATE("transformer", "gru");
  TempDir dir("ddp_" + kind);
  write_toy_corpus(dir.path, 400, 5);
  const std::string args =
      " train --data " + dir.path.string() + " --model " + kind +
      " --embed-dim 32 --hidden-dim 32 --layers 1 --heads 2 --ff-dim 64 --dropout 0 --epochs 100"
      " --max-steps 20 --max-tokens 256 --warmup 10 --lr 3e-3 --quiet --out ";
  const auto one = dir.path / "one", two = dir.path / "two";
  // The translator in one process with two threads, and on two ranks with one thread each.
  auto one_process = [&](const std::string& a) {
    return std::system(("OMP_NUM_THREADS=2 " TORCHATTN_TRANSLATE_BIN + a + one.string()).c_str());
  };
  auto two_ranks = [&](const std::string& a) {
    return std::system(("OMP_NUM_THREADS=1 bash " TORCHATTN_LAUNCH_SH
                        " 2 " TORCHATTN_TRANSLATE_BIN +
                        a + two.string())
                           .c_str());
  };
  REQUIRE(one_process(args) == 0);
  REQUIRE(two_ranks(args) == 0);
  auto weights = [](const fs::path& d) {
    auto m = make_model(ModelOptions::from_map(read_key_values((d / "options.txt").string())));
    torch::serialize::InputArchive a;
    a.load_from((d / "checkpoint" / "weights.pt").string());
    m->load(a);
    return m->named_parameters();
  };
  // Both resume from their checkpoints (the two ranks from the same one) to step 30.
  const std::string more = " train --resume --max-steps 30 --quiet --out ";
  REQUIRE(one_process(more) == 0);
  REQUIRE(two_ranks(more) == 0);
  const auto w1 = weights(one), w2 = weights(two);
  REQUIRE(w1.size() == w2.size());
  CHECK(read_key_values((one / "checkpoint" / "progress.txt").string()).at("step") == "30");
  CHECK(read_key_values((two / "checkpoint" / "progress.txt").string()).at("step") == "30");
  double worst = 0;
  for (const auto& p : w1) {
    auto a = p.value(), b = w2[p.key()];
    // Softmax ignores a shift of every score of a row: the gradients of the keys' bias and of
    // the additive score's bias are zero in exact arithmetic, rounding noise in practice, and
    // Adam turns any noise into steps of about lr whose signs are the noise's. Those entries
    // follow summation order, not the data; every other weight must agree.
    if (p.key().find("score_proj.bias") != std::string::npos)
      continue;
    if (p.key().find("in_proj_bias") != std::string::npos) {
      const int64_t E = a.size(0) / 3; // [q | k | v]
      a = torch::cat({a.narrow(0, 0, E), a.narrow(0, 2 * E, E)});
      b = torch::cat({b.narrow(0, 0, E), b.narrow(0, 2 * E, E)});
    }
    const double err =
        (a - b).abs().max().item<double>() / std::max(a.abs().max().item<double>(), 1e-12);
    CAPTURE(p.key(), err);
    CHECK(err <= 1e-5);
    worst = std::max(worst, err);
  }
  // And training moved them: the comparison is not of two initialisations.
  auto init = make_model(ModelOptions::from_map(read_key_values((one / "options.txt").string())));
  CHECK_FALSE(torch::allclose(init->parameters()[0], w1[w1.keys()[0]]));
  UNSCOPED_INFO(kind << ": largest relative difference " << worst);
}
#endif

TEST_CASE("every GRU attention score trains", "[translation]") {
  const std::string attention = GENERATE("dot", "scaled", "cosine", "additive", "general");
  TempDir dir("attn_" + attention);
  write_toy_corpus(dir.path, 200, 2);
  TrainConfig c = toy_config(dir.path, "gru");
  c.model.attention = attention;
  c.epochs = 3;
  train(c);
  const auto loss = history_column(dir.path / "model", 1);
  CHECK(loss.back() < loss.front());
}

TEST_CASE("resuming after an epoch gives the model of an uninterrupted run", "[translation]") {
  const std::string kind = GENERATE("gru", "transformer");
  TempDir dir("resume_" + kind);
  write_toy_corpus(dir.path, 200, 3);
  TrainConfig straight = toy_config(dir.path, kind);
  straight.out_dir = (dir.path / "straight").string();
  train(straight);
  TrainConfig split = toy_config(dir.path, kind);
  split.out_dir = (dir.path / "split").string();
  split.epochs = 1;
  train(split);
  CHECK_THROWS_WITH(train(split), ContainsSubstring("already holds a training run"));
  const TrainSummary s = resume(split.out_dir, /*epochs=*/2, /*time_budget=*/0, /*progress=*/false);
  CHECK(s.epochs_done == 2);
  auto load = [](const std::string& d) {
    auto m = make_model(ModelOptions::from_map(read_key_values(d + "/options.txt")));
    torch::serialize::InputArchive a;
    a.load_from(d + "/checkpoint/weights.pt");
    m->load(a);
    return m;
  };
  const auto a = load(straight.out_dir), b = load(split.out_dir);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& item : pa) {
    INFO(item.key());
    CHECK(torch::equal(item.value(), pb[item.key()]));
  }
  CHECK(history_column(straight.out_dir, 1) == history_column(split.out_dir, 1));
}

TEST_CASE("beam search with one beam is greedy search", "[translation]") {
  const std::string kind = GENERATE("gru", "transformer");
  TempDir dir("beam_" + kind);
  write_toy_corpus(dir.path, 300, 4);
  TrainConfig c = toy_config(dir.path, kind);
  train(c);
  const Translator t = load_translator(c.out_dir);
  const std::vector<std::string> sentences = {
      "red cat sees dog", "tom", "big small big small mary", "blue likes"};
  Translator::Options greedy, beam4;
  greedy.copy_unknown = false;
  beam4.beam = 4;
  const auto g = t.translate(sentences, greedy);
  for (size_t i = 0; i < sentences.size(); ++i) {
    const auto ids = t.src_vocab.encode(tokenize(sentences[i]));
    const torch::Tensor src = torch::tensor(ids, torch::kLong).unsqueeze(0);
    const Hypothesis h = beam_search(*t.model, src, 1, 40, 1.0, false);
    const auto gh = greedy_decode(*t.model, src, src.eq(Vocab::kPad), 40, false).at(0);
    CHECK(h.tokens == gh.tokens);
    CHECK(std::abs(h.log_prob - gh.log_prob) < 1e-4);
    // The translator decodes the sentences as one padded batch: padding changes nothing.
    std::vector<std::string> words;
    for (int64_t id : gh.tokens) {
      if (id == Vocab::kEos)
        break;
      words.push_back(t.tgt_vocab.token(id));
    }
    CHECK(g[i].tokens == words);
  }
  CHECK(t.translate(sentences, beam4).size() == sentences.size());
}

TEST_CASE("batched beam search gives each sentence its own search's result", "[translation]") {
  const std::string kind = GENERATE("gru", "transformer");
  TempDir dir("beam_batch_" + kind);
  write_toy_corpus(dir.path, 300, 4);
  TrainConfig c = toy_config(dir.path, kind);
  train(c);
  const Translator t = load_translator(c.out_dir);
  // Same-length sentences (the translator batches those), beams finishing at different steps.
  const std::vector<std::string> sentences = {
      "red cat sees dog", "tom likes big mary", "blue dog sees tom", "small cat likes cat"};
  std::vector<torch::Tensor> rows;
  for (const auto& s : sentences)
    rows.push_back(torch::tensor(t.src_vocab.encode(tokenize(s)), torch::kLong));
  const auto batch = beam_search_batch(*t.model, torch::stack(rows), 4, 40, 1.0, true);
  REQUIRE(batch.size() == sentences.size());
  for (size_t i = 0; i < sentences.size(); ++i) {
    INFO(sentences[i]);
    const Hypothesis alone = beam_search(*t.model, rows[i].unsqueeze(0), 4, 40, 1.0, true);
    CHECK(batch[i].tokens == alone.tokens);
    CHECK(std::abs(batch[i].log_prob - alone.log_prob) < 1e-4);
    CHECK(batch[i].attention.sizes() == alone.attention.sizes());
  }
}

TEST_CASE("broken model directories give clear errors", "[translation]") {
  TempDir dir("broken");
  write_toy_corpus(dir.path, 100, 5);
  TrainConfig c = toy_config(dir.path, "gru");
  c.epochs = 1;
  train(c);
  const fs::path m = c.out_dir;
  CHECK_THROWS_WITH(
      load_translator((dir.path / "none").string()), ContainsSubstring("does not exist"));
  // Truncated weights.
  const auto size = fs::file_size(m / "model.pt");
  fs::copy_file(m / "model.pt", dir.path / "saved.pt");
  fs::resize_file(m / "model.pt", size / 2);
  CHECK_THROWS_WITH(load_translator(m.string()), ContainsSubstring("is not a weights file"));
  fs::copy_file(dir.path / "saved.pt", m / "model.pt", fs::copy_options::overwrite_existing);
  CHECK_NOTHROW(load_translator(m.string()));
  // Options that do not match the weights, or are not options.
  std::ofstream(m / "options.txt", std::ios::app) << "hidden_dim=48\n";
  CHECK_THROWS_WITH(load_translator(m.string()), ContainsSubstring("has shape ["));
  std::ofstream(m / "options.txt") << "colour=blue\n";
  CHECK_THROWS_WITH(
      load_translator(m.string()), ContainsSubstring("unknown model option 'colour'"));
  fs::remove(m / "options.txt");
  CHECK_THROWS_WITH(load_translator(m.string()), ContainsSubstring("options.txt"));
  CHECK_THROWS_WITH(
      resume((dir.path / "none").string(), 0, 0, false),
      ContainsSubstring("holds no training run"));
}

TEST_CASE("heatmaps are written as PNG and SVG with their labels", "[translation]") {
  TempDir dir("heatmap");
  const torch::Tensor w = torch::softmax(torch::randn({3, 4}), -1);
  const std::vector<std::string> cols = {"the", "cat", "<&>", "."}, rows = {"le", "chat", "</s>"};
  write_heatmap_svg((dir.path / "h.svg").string(), w, cols, rows);
  write_heatmap_png((dir.path / "h.png").string(), w, cols, rows);
  std::ifstream svg(dir.path / "h.svg");
  const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, ContainsSubstring(">chat</text>"));
  CHECK_THAT(text, ContainsSubstring("&lt;&amp;&gt;"));
  std::ifstream png(dir.path / "h.png", std::ios::binary);
  std::string head(8, '\0');
  png.read(head.data(), 8);
  CHECK(head == "\x89PNG\r\n\x1a\n");
  CHECK_THROWS_WITH(
      write_heatmap_png((dir.path / "x.png").string(), w, cols, {"a"}),
      ContainsSubstring("do not match 1 rows x 4 columns"));
}

TEST_CASE(
    "linear_cross_entropy equals linear + cross_entropy with label smoothing, gradients too",
    "[translation]") {
  torch::manual_seed(11);
  const double smoothing = GENERATE(0.0, 0.1);
  const int64_t N = 37, H = 19, V = 1000; // V not a multiple of any vector width
  auto h = torch::randn({N, H}, torch::requires_grad());
  auto w = (torch::randn({V, H}) * 0.5).requires_grad_();
  auto b = torch::randn({V}, torch::requires_grad());
  auto target = torch::randint(1, V, {N}, torch::kLong);
  target.index_put_({torch::tensor({3, 10, 11})}, 0); // ignored rows
  target[5] = V - 1;
  const auto loss = linear_cross_entropy(h, w, b, target, smoothing, /*ignore_index=*/0);
  auto [gh, gw, gb] = [&] {
    auto g = torch::autograd::grad({loss * 3.0}, {h, w, b});
    return std::make_tuple(g[0], g[1], g[2]);
  }();
  auto hd = h.detach().to(torch::kDouble).requires_grad_(),
       wd = w.detach().to(torch::kDouble).requires_grad_(),
       bd = b.detach().to(torch::kDouble).requires_grad_();
  const auto ref = torch::nn::functional::cross_entropy(
      torch::nn::functional::linear(hd, wd, bd), target,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(0).label_smoothing(smoothing));
  auto g = torch::autograd::grad({ref * 3.0}, {hd, wd, bd});
  CHECK(std::abs(loss.item<double>() - ref.item<double>()) < 1e-5 * std::abs(ref.item<double>()));
  CHECK(torch::allclose(gh.to(torch::kDouble), g[0], 1e-4, 1e-6));
  CHECK(torch::allclose(gw.to(torch::kDouble), g[1], 1e-4, 1e-6));
  CHECK(torch::allclose(gb.to(torch::kDouble), g[2], 1e-4, 1e-6));
  CHECK(
      gw.index_select(0, torch::tensor({0})).abs().sum().item<double>() >
      0); // class 0 still gets its softmax share

  CHECK_THROWS_WITH(
      linear_cross_entropy(h, w, b, target.narrow(0, 0, 5), 0.1, 0),
      ContainsSubstring("expected h [N, H], weight [V, H]"));
  auto bad = target.clone();
  bad[0] = V;
  CHECK_THROWS_WITH(linear_cross_entropy(h, w, b, bad, 0.1, 0), ContainsSubstring("out of range"));
}

TEST_CASE(
    "dropout keeps 1 - p of the elements, scaled as torch::dropout, in float32, bfloat16 and "
    "float16, from one draw of the generator",
    "[translation]") {
  const double p = 0.1;
  const int64_t n = int64_t{1} << 16;
  torch::Tensor float_kept;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    CAPTURE(dtype);
    const auto x = torch::ones({4, n / 4}, dtype);
    CHECK(torch::equal(translate::dropout(x, p, /*training=*/false), x));
    torch::manual_seed(11);
    const auto y = translate::dropout(x, p, /*training=*/true);
    REQUIRE(y.scalar_type() == dtype);
    // The kept elements hold 1 / (1 - p) rounded to the dtype (1.1111 in float32, 1.1094 in
    // bfloat16, 1.1113 in float16), as torch::dropout's mask does; the others 0.
    const auto scale = torch::full({}, 1.0 / (1.0 - p), dtype);
    const auto kept = y.ne(0);
    CHECK(torch::equal(y.masked_select(kept), scale.expand({kept.sum().item<int64_t>()})));
    // Binomial(n, 1 - p): within 5 standard deviations (77 elements of 65,536).
    const double fraction = kept.to(torch::kDouble).mean().item<double>();
    CHECK(std::abs(fraction - (1 - p)) <= 5 * std::sqrt(p * (1 - p) / n));
    // One random64() from the default generator seeds a counter hash (ATen's bernoulli_ draws
    // once per element, serially): the generator is where one draw leaves it, and every dtype
    // keeps the same elements.
    torch::manual_seed(11);
    at::detail::getDefaultCPUGenerator().get<at::CPUGeneratorImpl>()->random64();
    const auto next = torch::randint(1 << 30, {4}, torch::kLong);
    torch::manual_seed(11);
    translate::dropout(x, p, /*training=*/true);
    CHECK(torch::equal(torch::randint(1 << 30, {4}, torch::kLong), next));
    if (dtype == torch::kFloat)
      float_kept = kept;
    else
      CHECK(torch::equal(kept, float_kept));
  }
}

TEST_CASE("gru_sequence equals torch::gru, gradients too", "[translation]") {
  torch::manual_seed(5);
  const int64_t H = GENERATE(19, 64); // 19: no vector width divides it
  const int64_t B = 5, T = 7, E = 11;
  auto x = torch::randn({B, T, E}, torch::requires_grad());
  auto h0 = torch::randn({B, H}, torch::requires_grad());
  auto w_ih = (torch::randn({3 * H, E}) * 0.4).requires_grad_();
  auto w_hh = (torch::randn({3 * H, H}) * 0.4).requires_grad_();
  auto b_ih = torch::randn({3 * H}, torch::requires_grad());
  auto b_hh = torch::randn({3 * H}, torch::requires_grad());
  const std::vector<torch::Tensor> leaves{x, h0, w_ih, w_hh, b_ih, b_hh};
  auto out = gru_sequence(torch::linear(x, w_ih, b_ih), h0, w_hh, b_hh);
  auto grad = torch::randn_like(out);
  auto got = torch::autograd::grad({out}, leaves, {grad});

  // The reference: ATen's own GRU in float64.
  std::vector<torch::Tensor> ref_leaves;
  for (const auto& t : leaves)
    ref_leaves.push_back(t.detach().to(torch::kDouble).requires_grad_());
  auto ref = std::get<0>(torch::gru(
      ref_leaves[0], ref_leaves[1].unsqueeze(0),
      {ref_leaves[2], ref_leaves[3], ref_leaves[4], ref_leaves[5]},
      /*has_biases=*/true, /*num_layers=*/1, /*dropout=*/0.0, /*train=*/true,
      /*bidirectional=*/false, /*batch_first=*/true));
  auto want = torch::autograd::grad({ref}, ref_leaves, {grad.to(torch::kDouble)});
  CHECK(torch::allclose(out.to(torch::kDouble), ref, 1e-5, 1e-6));
  for (size_t i = 0; i < leaves.size(); ++i) {
    CAPTURE(i);
    CHECK(torch::allclose(got[i].to(torch::kDouble), want[i], 1e-4, 1e-5));
  }

  // No steps: no outputs, and the initial state's gradient is zero.
  auto empty = gru_sequence(torch::zeros({B, 0, 3 * H}), h0, w_hh, b_hh);
  CHECK(empty.sizes() == torch::IntArrayRef({B, 0, H}));

  CHECK_THROWS_WITH(
      gru_sequence(torch::zeros({B, T, 3 * H + 1}), h0, w_hh, b_hh),
      ContainsSubstring("gru_sequence: shapes disagree"));
  CHECK_THROWS_WITH(
      gru_sequence(torch::zeros({B, T, 3 * H}, torch::kDouble), h0, w_hh, b_hh),
      ContainsSubstring("float32 CPU tensors expected"));
}

TEST_CASE(
    "FusedAdam takes torch::optim::Adam's steps, and their checkpoints are interchangeable",
    "[translation]") {
  torch::manual_seed(2);
  const double weight_decay = GENERATE(0.0, 0.01);
  // Sizes that no vector width divides, one over the parallel grain, and a parameter without
  // a gradient (skipped by both).
  const std::vector<std::vector<int64_t>> shapes{{37, 19}, {70001}, {5}, {3, 3}};
  auto make = [&] {
    std::vector<torch::Tensor> params;
    torch::manual_seed(3);
    for (const auto& s : shapes)
      params.push_back(torch::randn(s).requires_grad_());
    return params;
  };
  auto ours = make(), theirs = make();
  const auto options =
      torch::optim::AdamOptions(1e-2).betas({0.9, 0.98}).eps(1e-9).weight_decay(weight_decay);
  FusedAdam fused(ours, options);
  torch::optim::Adam adam(theirs, options);
  auto take_step = [&](int step) {
    for (size_t i = 0; i + 1 < shapes.size(); ++i) {
      torch::manual_seed(100 + step * 10 + static_cast<int>(i));
      auto g = torch::randn(shapes[i]) *
               (i == 0 ? 1e-3 : 1.0); // small gradients: eps matters less than v
      ours[i].mutable_grad() = g.clone();
      theirs[i].mutable_grad() = g.clone();
    }
    fused.step();
    adam.step();
  };
  for (int step = 0; step < 6; ++step)
    take_step(step);
  for (size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    CHECK(torch::allclose(ours[i], theirs[i], 1e-5, 1e-7));
  }
  CHECK(torch::equal(ours.back(), theirs.back())); // no gradient, no step

  // FusedAdam's state saved, loaded into a fresh Adam: both go on alike.
  torch::serialize::OutputArchive out;
  fused.save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  std::vector<torch::Tensor> copies;
  for (const auto& p : ours)
    copies.push_back(p.detach().clone().requires_grad_());
  torch::optim::Adam reloaded(copies, options);
  reloaded.load(in);
  for (size_t i = 0; i + 1 < shapes.size(); ++i) {
    auto g = torch::randn(shapes[i]);
    ours[i].mutable_grad() = g.clone();
    copies[i].mutable_grad() = g.clone();
  }
  fused.step();
  reloaded.step();
  for (size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    CHECK(torch::allclose(ours[i], copies[i], 1e-5, 1e-7));
  }
}
