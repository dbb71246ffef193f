#include "data.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <unordered_map>

namespace translate {

std::vector<Example> read_examples(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open data file '" + path + "'");
  std::vector<Example> examples;
  std::unordered_map<std::string, size_t> index;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (line.empty())
      continue;
    auto fail = [&](const std::string& what) {
      throw std::runtime_error("data file '" + path + "', line " + std::to_string(n) + ": " + what);
    };
    if (!utf8_valid(line))
      fail("invalid UTF-8");
    std::vector<std::string> fields;
    size_t start = 0;
    for (size_t p; (p = line.find('\t', start)) != std::string::npos; start = p + 1) {
      fields.push_back(line.substr(start, p - start));
    }
    fields.push_back(line.substr(start));
    if (fields.size() < 2)
      fail("no tab; expected 'source<TAB>translation'");
    for (const auto& f : fields) {
      if (f.empty())
        fail("an empty field");
    }
    auto [it, added] = index.emplace(fields[0], examples.size());
    if (added)
      examples.push_back({fields[0], {}});
    auto& refs = examples[it->second].references;
    for (size_t f = 1; f < fields.size(); ++f) {
      if (std::find(refs.begin(), refs.end(), fields[f]) == refs.end())
        refs.push_back(fields[f]);
    }
  }
  if (in.bad())
    throw std::runtime_error("error reading data file '" + path + "'");
  if (examples.empty())
    throw std::runtime_error("data file '" + path + "' holds no sentence pairs");
  return examples;
}

void write_examples(const std::string& path, const std::vector<Example>& examples) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    for (const auto& e : examples) {
      out << e.source;
      for (const auto& r : e.references)
        out << '\t' << r;
      out << '\n';
    }
    if (!out)
      throw std::runtime_error("cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

Split split_examples(
    std::vector<Example> examples, double dev_fraction, double test_fraction, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::shuffle(examples.begin(), examples.end(), rng);
  const auto count = [&](double f) {
    if (f <= 0)
      return size_t{0};
    return std::max<size_t>(
        1, static_cast<size_t>(std::llround(f * static_cast<double>(examples.size()))));
  };
  const size_t n_test = count(test_fraction), n_dev = count(dev_fraction);
  if (n_test + n_dev >= examples.size()) {
    throw std::runtime_error(
        "split: " + std::to_string(examples.size()) +
        " source sentences are too few for the dev and test fractions");
  }
  Split s;
  s.test.assign(examples.begin(), examples.begin() + n_test);
  s.dev.assign(examples.begin() + n_test, examples.begin() + n_test + n_dev);
  s.train.assign(examples.begin() + n_test + n_dev, examples.end());
  return s;
}

std::pair<Vocab, Vocab> build_vocabs(
    const std::vector<Example>& examples, const Tokenizers& tok, int64_t min_freq,
    int64_t max_size) {
  // SentencePiece: every piece of the model has an id, so that a word never seen in training
  // is cut into pieces the model knows (a piece may appear only inside unseen words); the
  // sentences are not cut for it. Words: the tokens of the sentences.
  auto vocab = [&](const Tokenizer& t, bool source) {
    if (t.kind() == "sentencepiece")
      return Vocab::build({t.pieces()}, 1, 0);
    std::vector<std::vector<std::string>> tokens;
    for (const auto& e : examples) {
      if (source) {
        tokens.push_back(t.encode(e.source));
      } else {
        for (const auto& r : e.references)
          tokens.push_back(t.encode(r));
      }
    }
    return Vocab::build(tokens, min_freq, max_size);
  };
  return {vocab(tok.src, /*source=*/true), vocab(tok.tgt, /*source=*/false)};
}

std::vector<EncodedPair> encode_pairs(
    const std::vector<Example>& examples, const Tokenizers& tok, const Vocab& src, const Vocab& tgt,
    int64_t max_len, size_t* too_long) {
  std::vector<EncodedPair> pairs;
  auto count_long = [&](size_t n) {
    if (too_long != nullptr)
      *too_long += n;
  };
  for (const auto& e : examples) {
    auto s = src.encode(tok.src.encode(e.source));
    if (s.empty())
      continue;
    if (static_cast<int64_t>(s.size()) > max_len) {
      count_long(e.references.size());
      continue;
    }
    for (const auto& r : e.references) {
      auto t = tgt.encode(tok.tgt.encode(r));
      if (t.empty())
        continue;
      if (static_cast<int64_t>(t.size()) + 1 > max_len) {
        count_long(1);
        continue;
      }
      pairs.push_back({s, std::move(t)});
    }
  }
  return pairs;
}

Batch make_batch(const std::vector<EncodedPair>& pairs, const std::vector<size_t>& indices) {
  const auto B = static_cast<int64_t>(indices.size());
  int64_t S = 1, T = 1;
  for (size_t i : indices) {
    S = std::max<int64_t>(S, static_cast<int64_t>(pairs[i].src.size()));
    T = std::max<int64_t>(T, static_cast<int64_t>(pairs[i].tgt.size()) + 1);
  }
  Batch b;
  b.src = torch::zeros({B, S}, torch::kLong);
  b.tgt_in = torch::zeros({B, T}, torch::kLong);
  b.tgt_out = torch::zeros({B, T}, torch::kLong);
  auto src = b.src.accessor<int64_t, 2>();
  auto tin = b.tgt_in.accessor<int64_t, 2>();
  auto tout = b.tgt_out.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& p = pairs[indices[r]];
    for (size_t j = 0; j < p.src.size(); ++j)
      src[r][j] = p.src[j];
    tin[r][0] = Vocab::kBos;
    for (size_t j = 0; j < p.tgt.size(); ++j) {
      tin[r][j + 1] = p.tgt[j];
      tout[r][j] = p.tgt[j];
    }
    tout[r][p.tgt.size()] = Vocab::kEos;
    b.target_tokens += static_cast<int64_t>(p.tgt.size()) + 1;
  }
  b.src_pad = b.src.eq(Vocab::kPad);
  return b;
}

std::vector<std::vector<size_t>> bucket_batches(
    const std::vector<EncodedPair>& pairs, int64_t max_tokens, std::mt19937_64& rng) {
  std::vector<size_t> order(pairs.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(pairs[a].src.size(), pairs[a].tgt.size()) <
           std::make_pair(pairs[b].src.size(), pairs[b].tgt.size());
  });
  std::vector<std::vector<size_t>> batches;
  std::vector<size_t> current;
  size_t longest = 0;
  for (size_t i : order) {
    const size_t len = std::max(pairs[i].src.size(), pairs[i].tgt.size() + 1);
    const size_t l = std::max(longest, len);
    if (!current.empty() && static_cast<int64_t>(l * (current.size() + 1)) > max_tokens) {
      batches.push_back(std::move(current));
      current.clear();
      longest = 0;
    }
    current.push_back(i);
    longest = std::max(longest, len);
  }
  if (!current.empty())
    batches.push_back(std::move(current));
  std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

torch::Tensor drop_words(const torch::Tensor& src, double p) {
  if (!(p > 0))
    return src;
  const torch::Tensor drop = torch::rand(src.sizes()).lt(p).logical_and(src.gt(Vocab::kEos));
  return src.masked_fill(drop, Vocab::kUnk);
}

} // namespace translate
