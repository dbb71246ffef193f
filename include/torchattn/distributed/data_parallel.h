#pragma once

/// Data-parallel training for LibTorch's C++ frontend, which has no DistributedDataParallel:
/// gradients averaged over a c10d::ProcessGroup by bucketed all-reduce, launched from gradient
/// hooks while backward is still running, as PyTorch's DDP does.
///
/// Example (each rank computes the loss of its share of the global batch):
/// ```
/// auto group = torchattn::distributed::init_process_group();
/// torchattn::distributed::GradientAllReduce reducer(model->parameters(), group);
/// reducer.broadcast_parameters(); // every rank starts from rank 0's weights
/// for (...) {
///   optimizer.zero_grad();
///   loss.backward();   // buckets are all-reduced as their gradients become ready
///   reducer.finish();  // waits for them; each .grad is now the average over the ranks
///   optimizer.step();
/// }
/// ```

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdint>
#include <vector>

namespace torchattn::distributed {

class GradientAllReduce {
 public:
  /// Groups `parameters` into buckets of about `bucket_bytes`, in reverse order (backward
  /// produces the last layers' gradients first), and hooks each parameter's gradient.
  /// Parameters of one dtype per bucket; every rank must pass the same parameters in the same
  /// order.
  GradientAllReduce(
      std::vector<torch::Tensor> parameters, c10::intrusive_ptr<c10d::ProcessGroup> group,
      int64_t bucket_bytes = int64_t{4} << 20);
  ~GradientAllReduce();
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  /// Copies rank 0's parameters into every rank's.
  void broadcast_parameters();

  /// After backward: all-reduces the buckets not launched yet (a parameter without a gradient
  /// this step counts as zeros), waits for every bucket, and writes the average over the
  /// ranks into each parameter's gradient. A rank that died or stalled makes it throw after
  /// the group's timeout. Buckets are launched in the same order on every rank.
  void finish();

  /// Seconds finish() spent waiting for all-reduces (the part backward did not hide), and
  /// bytes all-reduced, since construction.
  double wait_seconds() const { return wait_seconds_; }
  int64_t bytes_reduced() const { return bytes_reduced_; }
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_grad(size_t param, const torch::Tensor& grad);
  void launch_ready();
  void launch(Bucket& b);

  std::vector<torch::Tensor> params_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_; // each parameter's bucket and its index there
  std::vector<bool> got_;
  std::vector<unsigned> hooks_;
  size_t next_launch_ = 0;
  double wait_seconds_ = 0;
  int64_t bytes_reduced_ = 0;
};

} // namespace torchattn::distributed
