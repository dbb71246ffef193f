#pragma once

// The processes that train one model: this process alone, or the ranks of a c10d process group
// under a launcher (torchrun, scripts/launch.sh), each training on its share of every global
// batch with gradients averaged by torchattn::distributed::GradientAllReduce.

#include <torchattn/distributed/data_parallel.h>

#include <torch/nn/module.h>

#include <memory>
#include <vector>

namespace translate {

class Ranks {
 public:
  /// `group` null: one process, and every call below is local.
  explicit Ranks(c10::intrusive_ptr<c10d::ProcessGroup> group = {});

  bool distributed() const { return static_cast<bool>(group_); }
  int rank() const { return group_ ? group_->getRank() : 0; }
  int size() const { return group_ ? group_->getSize() : 1; }
  /// Rank 0, which writes the model directory, evaluates and prints.
  bool leader() const { return rank() == 0; }

  /// This rank's share of a global batch: every size()-th pair from rank().
  std::vector<size_t> shard(const std::vector<size_t>& global) const;

  /// Hooks `model`'s gradients for averaging and gives every rank rank 0's weights.
  void attach(torch::nn::Module& model);
  /// After backward: the gradients averaged over the ranks (nothing with one process).
  void reduce_gradients();
  /// Seconds spent waiting for gradient all-reduces after backward.
  double reduce_wait_seconds() const { return reducer_ ? reducer_->wait_seconds() : 0.0; }

  /// Whether `flag` is true on any rank; every rank calls it at the same point.
  bool any(bool flag);
  /// `x` summed over the ranks; every rank calls it at the same point.
  double sum(double x);
  /// Waits until every rank gets here (the group's timeout applies).
  void barrier();

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::unique_ptr<torchattn::distributed::GradientAllReduce> reducer_;
};

} // namespace translate
