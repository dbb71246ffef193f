#pragma once

// The toy corpus of the translation tests: each "French" sentence is its English source
// reversed, each word marked, after "le"; and a model configuration small enough to train on
// it in seconds.

#include <trainer.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace translate::testing {

namespace fs = std::filesystem;

inline void write_toy_corpus(const fs::path& dir, int n, uint64_t seed) {
  static const std::vector<std::string> words = {"red",   "blue", "cat",   "dog", "sees",
                                                 "likes", "big",  "small", "tom", "mary"};
  std::mt19937_64 gen(seed);
  std::ofstream train(dir / "train.tsv"), dev(dir / "dev.tsv");
  for (int i = 0; i < n; ++i) {
    const int len = 2 + static_cast<int>(gen() % 4);
    std::vector<std::string> s;
    for (int k = 0; k < len; ++k)
      s.push_back(words[gen() % words.size()]);
    std::string en, fr = "le";
    for (const auto& w : s)
      en += (en.empty() ? "" : " ") + w;
    for (auto it = s.rbegin(); it != s.rend(); ++it)
      fr += " " + *it + "x";
    (i % 10 == 0 ? dev : train) << en << '\t' << fr << '\n';
  }
}

inline TrainConfig toy_config(const fs::path& dir, const std::string& kind) {
  TrainConfig c;
  c.train_path = (dir / "train.tsv").string();
  c.dev_path = (dir / "dev.tsv").string();
  c.out_dir = (dir / "model").string();
  c.model.kind = kind;
  c.model.embed_dim = 32;
  c.model.hidden_dim = 32;
  c.model.layers = 1;
  c.model.heads = 2;
  c.model.ff_dim = 64;
  c.model.dropout = 0.1;
  c.model.max_len = 32;
  c.epochs = 2;
  c.max_tokens = 256;
  c.warmup = 10;
  c.lr = 3e-3;
  c.progress = false;
  return c;
}

} // namespace translate::testing
