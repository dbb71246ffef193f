#pragma once

// Node-classification datasets for the graph example: Cora with the Planetoid split (read from
// a directory such as ../shared/data/cora; never bundled), or a stochastic block model that the
// example generates itself, with planted classes and class-correlated features.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace graph_example {

struct NodeDataset {
  std::string name;
  torch::Tensor x;          // [N, F] float32, each row summing to 1 (PyG's NormalizeFeatures)
  torch::Tensor y;          // [N] int64 classes
  torch::Tensor edge_index; // [2, E] int64, both directions of each link, no self-loops
  torch::Tensor train_mask, val_mask, test_mask; // [N] bool
  int64_t num_classes = 0;
};

/// Reads nodes.tsv and edges.tsv (the format of ../shared/data/cora/README.md). Throws with
/// the file and line of anything malformed.
NodeDataset load_cora(const std::string& dir);

/// A stochastic block model: `nodes` nodes in `classes` planted classes, an average degree of
/// about `degree` with a fraction `homophily` of the edges inside a class, and `features`
/// binary features of which each class favours its own block. Split as Planetoid: 20 training
/// nodes per class, 500 validation and 1000 test nodes.
NodeDataset make_sbm(
    uint64_t seed, int64_t nodes = 2708, int64_t classes = 7, double degree = 4.0,
    double homophily = 0.8, int64_t features = 700);

/// Divides each row by its sum (rows of zeros stay zero).
torch::Tensor row_normalize(const torch::Tensor& x);

} // namespace graph_example
