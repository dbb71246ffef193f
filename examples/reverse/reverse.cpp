// Trains a one-layer attention model to reverse sequences of digits, then shows what it
// attends to. Output position i must learn to look at input position L-1-i; the attention
// weights show whether it did.
//
// Usage: torchattn-reverse [--attention dot|scaled|cosine|additive|general] [--steps N]
//                          [--length L] [--seed S]

#include <torchattn/torchattn.h>

#include <fmt/core.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace {

namespace tnn = torchattn::nn;

struct Args {
  std::string attention = "scaled";
  int64_t steps = 400;
  int64_t length = 8;
  uint64_t seed = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      fmt::print(
          "usage: torchattn-reverse [--attention dot|scaled|cosine|additive|general] "
          "[--steps N] [--length L] [--seed S]\n");
      std::exit(0);
    }
    if (i + 1 >= argc) {
      throw std::invalid_argument(flag + " needs a value");
    }
    const std::string value = argv[++i];
    if (flag == "--attention") {
      a.attention = value;
    } else if (flag == "--steps") {
      a.steps = std::stoll(value);
    } else if (flag == "--length") {
      a.length = std::stoll(value);
    } else if (flag == "--seed") {
      a.seed = std::stoull(value);
    } else {
      throw std::invalid_argument("unknown option " + flag);
    }
  }
  if (a.steps < 1 || a.length < 2 || a.length > 64) {
    throw std::invalid_argument("--steps must be >= 1 and --length in [2, 64]");
  }
  return a;
}

torch::nn::AnyModule make_attention(const std::string& kind, int64_t dim) {
  if (kind == "dot")
    return torch::nn::AnyModule(tnn::DotProductAttention());
  if (kind == "scaled")
    return torch::nn::AnyModule(tnn::ScaledDotProductAttention());
  if (kind == "cosine")
    return torch::nn::AnyModule(
        tnn::CosineAttention(tnn::CosineAttentionOptions().learnable(true)));
  if (kind == "additive")
    return torch::nn::AnyModule(tnn::AdditiveAttention(dim, dim, dim));
  if (kind == "general")
    return torch::nn::AnyModule(tnn::GeneralAttention(dim));
  throw std::invalid_argument(
      "unknown --attention " + kind + " (dot|scaled|cosine|additive|general)");
}

constexpr int64_t kVocab = 10;

// Queries are learned per output position; keys and values are input tokens plus positions.
struct ReverserImpl : torch::nn::Module {
  ReverserImpl(int64_t length, int64_t dim, const std::string& kind)
      : tokens(register_module("tokens", torch::nn::Embedding(kVocab, dim))),
        positions(register_module("positions", torch::nn::Embedding(length, dim))),
        queries(register_module("queries", torch::nn::Embedding(length, dim))),
        out(register_module("out", torch::nn::Linear(2 * dim, kVocab))),
        attention(make_attention(kind, dim)) {
    register_module("attention", attention.ptr());
  }

  // src [B, L] digits -> (logits [B, L, 10], weights [B, L, L])
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& src) {
    const int64_t batch = src.size(0), length = src.size(1);
    auto pos = torch::arange(length);
    auto tok = tokens(src);
    auto memory = tok + positions(pos);
    auto q = queries(pos).unsqueeze(0).expand({batch, length, -1});
    auto [context, weights] = attention.forward<std::tuple<torch::Tensor, torch::Tensor>>(
        q, memory, tok, torch::Tensor(), torch::Tensor(), /*need_weights=*/true,
        /*is_causal=*/false);
    return {out(torch::cat({context, q}, -1)), weights};
  }

  torch::nn::Embedding tokens, positions, queries;
  torch::nn::Linear out;
  torch::nn::AnyModule attention;
};
TORCH_MODULE(Reverser);

void print_heatmap(const torch::Tensor& src, const torch::Tensor& weights) {
  static const char* shades[] = {" ", "\u2591", "\u2592", "\u2593", "\u2588"};
  fmt::print("\n  attention weights (rows: output positions, columns: input digits)\n      ");
  for (int64_t j = 0; j < src.size(0); ++j)
    fmt::print(" {} ", src[j].item<int64_t>());
  fmt::print("\n");
  for (int64_t i = 0; i < weights.size(0); ++i) {
    fmt::print("  {:>2}  ", i);
    for (int64_t j = 0; j < weights.size(1); ++j) {
      const int shade = std::min(4, static_cast<int>(weights[i][j].item<double>() * 5));
      fmt::print("{0}{0}{0}", shades[shade]);
    }
    fmt::print("\n");
  }
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  torch::manual_seed(args.seed);
  const int64_t dim = 32, batch = 64;
  Reverser model(args.length, dim, args.attention);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
  fmt::print(
      "torchattn {}: reversing {} digits with {} attention\n", TORCHATTN_VERSION, args.length,
      args.attention);
  fmt::print("{}\n", [&] {
    std::ostringstream s;
    s << *model;
    return s.str();
  }());

  auto batch_of = [&](int64_t n) {
    auto src = torch::randint(kVocab, {n, args.length}, torch::kLong);
    return std::make_pair(src, src.flip({1}));
  };
  for (int64_t step = 1; step <= args.steps; ++step) {
    auto [src, tgt] = batch_of(batch);
    auto [logits, weights] = model(src);
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, kVocab}), tgt.reshape(-1));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 50 == 0 || step == args.steps) {
      fmt::print("step {:>4}  loss {:.4f}\n", step, loss.item<double>());
    }
  }

  torch::NoGradGuard no_grad;
  model->eval();
  auto [src, tgt] = batch_of(1000);
  auto [logits, weights] = model(src);
  auto pred = logits.argmax(-1);
  const double token_acc = pred.eq(tgt).to(torch::kDouble).mean().item<double>();
  const double seq_acc = pred.eq(tgt).all(1).to(torch::kDouble).mean().item<double>();
  fmt::print(
      "\nheld-out accuracy: {:.1f}% of digits, {:.1f}% of whole sequences\n", 100 * token_acc,
      100 * seq_acc);
  auto show = [](const torch::Tensor& t) {
    std::string s;
    for (int64_t i = 0; i < t.size(0); ++i)
      s += std::to_string(t[i].item<int64_t>());
    return s;
  };
  for (int64_t i = 0; i < 3; ++i) {
    fmt::print("  {} -> {}  (expected {})\n", show(src[i]), show(pred[i]), show(tgt[i]));
  }
  print_heatmap(src[0], weights[0]);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "torchattn-reverse: {}\n", e.what());
  return 1;
}
