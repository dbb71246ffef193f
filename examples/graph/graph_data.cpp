#include "graph_data.h"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace graph_example {

namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw std::runtime_error("cannot read " + path);
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') {
      lines.push_back(line);
    }
  }
  return lines;
}

[[noreturn]] void malformed(const std::string& path, size_t row, const std::string& what) {
  throw std::runtime_error(path + ": data row " + std::to_string(row + 1) + ": " + what);
}

} // namespace

torch::Tensor row_normalize(const torch::Tensor& x) {
  auto sum = x.sum(1, /*keepdim=*/true);
  return x / torch::where(sum > 0, sum, torch::ones_like(sum));
}

NodeDataset load_cora(const std::string& dir) {
  constexpr int64_t kWords = 1433;
  const std::string nodes_path = dir + "/nodes.tsv", edges_path = dir + "/edges.tsv";
  const auto nodes = lines_of(nodes_path);
  const int64_t N = static_cast<int64_t>(nodes.size());
  NodeDataset d;
  d.name = "Cora";
  d.x = torch::zeros({N, kWords});
  d.y = torch::empty({N}, torch::kLong);
  d.train_mask = torch::zeros({N}, torch::kBool);
  d.val_mask = torch::zeros({N}, torch::kBool);
  d.test_mask = torch::zeros({N}, torch::kBool);
  auto x = d.x.accessor<float, 2>();
  auto y = d.y.accessor<int64_t, 1>();
  for (size_t r = 0; r < nodes.size(); ++r) {
    std::istringstream in(nodes[r]);
    int64_t node = -1, label = -1;
    std::string split, words;
    if (!(in >> node >> label >> split) || node != static_cast<int64_t>(r) || label < 0) {
      malformed(nodes_path, r, "expected `node label split words`, with nodes 0, 1, ... in order");
    }
    y[node] = label;
    d.num_classes = std::max(d.num_classes, label + 1);
    if (split == "train") {
      d.train_mask[node] = true;
    } else if (split == "val") {
      d.val_mask[node] = true;
    } else if (split == "test") {
      d.test_mask[node] = true;
    } else if (split != "-") {
      malformed(nodes_path, r, "split `" + split + "`, expected train, val, test or -");
    }
    for (int64_t w; in >> w;) {
      if (w < 0 || w >= kWords) {
        malformed(nodes_path, r, "word index " + std::to_string(w) + " outside [0, 1433)");
      }
      x[node][w] = 1.0f;
    }
  }
  const auto edges = lines_of(edges_path);
  auto ei = torch::empty({2, static_cast<int64_t>(edges.size())}, torch::kLong);
  auto e = ei.accessor<int64_t, 2>();
  for (size_t r = 0; r < edges.size(); ++r) {
    std::istringstream in(edges[r]);
    int64_t s = -1, t = -1;
    if (!(in >> s >> t) || s < 0 || t < 0 || s >= N || t >= N) {
      malformed(
          edges_path, r, "expected `source target`, two nodes in [0, " + std::to_string(N) + ")");
    }
    e[0][r] = s;
    e[1][r] = t;
  }
  d.edge_index = ei;
  d.x = row_normalize(d.x);
  return d;
}

NodeDataset make_sbm(
    uint64_t seed, int64_t nodes, int64_t classes, double degree, double homophily,
    int64_t features) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  NodeDataset d;
  d.name = "SBM";
  d.num_classes = classes;
  d.y = torch::randint(classes, {nodes}, gen, torch::kLong);
  // Links: nodes * degree / 2 pairs, each inside a class with probability `homophily`.
  const int64_t links = static_cast<int64_t>(nodes * degree / 2);
  auto src = torch::randint(nodes, {links}, gen, torch::kLong);
  auto same = torch::rand({links}, gen) < homophily;
  auto by_class = std::get<1>(torch::sort(d.y));
  auto counts = torch::bincount(d.y, {}, classes);
  auto starts =
      torch::cat({torch::zeros({1}, torch::kLong), counts.cumsum(0).narrow(0, 0, classes - 1)});
  auto cls = d.y.index_select(0, src);
  auto pick = (torch::rand({links}, gen) * counts.index_select(0, cls)).to(torch::kLong);
  auto inside = by_class.index_select(0, starts.index_select(0, cls) + pick);
  auto anywhere = torch::randint(nodes, {links}, gen, torch::kLong);
  auto dst = torch::where(same, inside, anywhere);
  auto keep = src != dst;
  src = src.masked_select(keep);
  dst = dst.masked_select(keep);
  d.edge_index = torch::stack({torch::cat({src, dst}), torch::cat({dst, src})});
  // Features: each class owns a block of words used with probability 0.05; any word 0.01.
  const int64_t block = features / classes;
  auto own = (torch::arange(features).div(block, "floor").unsqueeze(0) == d.y.unsqueeze(1));
  auto p = torch::full({nodes, features}, 0.01).masked_fill(own, 0.05);
  d.x = row_normalize(torch::bernoulli(p, gen));
  // Planetoid's split: 20 per class for training, then 500 validation and 1000 test nodes.
  auto order = torch::randperm(nodes, gen, torch::kLong);
  d.train_mask = torch::zeros({nodes}, torch::kBool);
  d.val_mask = torch::zeros({nodes}, torch::kBool);
  d.test_mask = torch::zeros({nodes}, torch::kBool);
  std::vector<int64_t> taken(classes, 0);
  std::vector<int64_t> rest;
  auto o = order.accessor<int64_t, 1>();
  auto y = d.y.accessor<int64_t, 1>();
  for (int64_t i = 0; i < nodes; ++i) {
    if (taken[y[o[i]]] < 20) {
      ++taken[y[o[i]]];
      d.train_mask[o[i]] = true;
    } else {
      rest.push_back(o[i]);
    }
  }
  for (size_t i = 0; i < rest.size() && i < 1500; ++i) {
    (i < 500 ? d.val_mask : d.test_mask)[rest[i]] = true;
  }
  return d;
}

} // namespace graph_example
