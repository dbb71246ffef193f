// Bucketed gradient all-reduce from gradient hooks (include/torchattn/distributed/data_parallel.h).

#include <torchattn/distributed/data_parallel.h>

#include "detail/error_message.h"

#include <torch/torch.h>

#include <chrono>

namespace torchattn::distributed {

namespace {
constexpr const char* kFn = "torchattn::distributed::GradientAllReduce";
}

GradientAllReduce::GradientAllReduce(
    std::vector<torch::Tensor> parameters, c10::intrusive_ptr<c10d::ProcessGroup> group,
    int64_t bucket_bytes)
    : params_(std::move(parameters)), group_(std::move(group)) {
  TORCH_CHECK(group_, kFn, ": group is null, expected a process group");
  TORCH_CHECK(bucket_bytes > 0, kFn, ": bucket_bytes is ", bucket_bytes, ", expected > 0");
  bucket_of_.resize(params_.size());
  slot_of_.resize(params_.size());
  got_.assign(params_.size(), false);
  // Reverse order: backward makes the gradients of the last parameters first. Each bucket's
  // flat buffer is allocated once its parameters are known.
  std::vector<int64_t> numel; // per bucket
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i];
    TORCH_CHECK(
        p.defined() && p.device().is_cpu() && p.is_floating_point(), kFn, ": parameter ", i,
        " is not a floating CPU tensor");
    const bool fits = !buckets_.empty() &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type() &&
                      (numel.back() + p.numel()) * p.element_size() <= bucket_bytes;
    if (!fits) {
      buckets_.emplace_back();
      numel.push_back(0);
    }
    auto& b = buckets_.back();
    b.offsets.push_back(numel.back());
    slot_of_[i] = b.params.size();
    b.params.push_back(i);
    numel.back() += p.numel();
    bucket_of_[i] = buckets_.size() - 1;
  }
  for (size_t j = 0; j < buckets_.size(); ++j) {
    auto& b = buckets_[j];
    b.flat = torch::zeros({numel[j]}, params_[b.params.front()].options().requires_grad(false));
    b.pending = b.params.size();
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    hooks_.push_back(
        params_[i].register_hook([this, i](const torch::Tensor& grad) { on_grad(i, grad); }));
  }
}

GradientAllReduce::~GradientAllReduce() {
  for (size_t i = 0; i < hooks_.size(); ++i)
    params_[i].remove_hook(hooks_[i]);
}

void GradientAllReduce::broadcast_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    auto data = p.detach();
    std::vector<torch::Tensor> t{data.is_contiguous() ? data : data.contiguous()};
    group_->broadcast(t)->wait();
    if (!data.is_contiguous())
      data.copy_(t[0]);
  }
}

void GradientAllReduce::on_grad(size_t i, const torch::Tensor& grad) {
  auto& b = buckets_[bucket_of_[i]];
  const size_t k = slot_of_[i];
  TORCH_CHECK(
      !got_[i], kFn, ": parameter ", i,
      " received two gradients in one step; call finish() "
      "after each backward");
  b.flat.narrow(0, b.offsets[k], grad.numel()).copy_(grad.reshape(-1));
  got_[i] = true;
  if (--b.pending == 0)
    launch_ready();
}

void GradientAllReduce::launch(Bucket& b) {
  std::vector<torch::Tensor> t{b.flat};
  b.work = group_->allreduce(t);
  bytes_reduced_ += static_cast<int64_t>(b.flat.nbytes());
}

void GradientAllReduce::launch_ready() {
  // In bucket order only, so that every rank's k-th all-reduce is the same bucket.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0)
    launch(buckets_[next_launch_++]);
}

void GradientAllReduce::finish() {
  const auto t0 = std::chrono::steady_clock::now();
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    auto& b = buckets_[next_launch_];
    for (size_t k = 0; k < b.params.size(); ++k) {
      if (!got_[b.params[k]])
        b.flat.narrow(0, b.offsets[k], params_[b.params[k]].numel()).zero_();
    }
    launch(b);
  }
  torch::NoGradGuard no_grad;
  const double world = group_->getSize();
  for (auto& b : buckets_) {
    try {
      b.work->wait();
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false, kFn, ": the gradient all-reduce failed on rank ", group_->getRank(),
          " (has another rank died or stalled?): ", detail::error_message(e));
    }
    b.work.reset();
    b.flat.div_(world);
    for (size_t k = 0; k < b.params.size(); ++k) {
      auto& p = params_[b.params[k]];
      auto avg = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(avg);
      else
        p.mutable_grad() = avg.clone();
    }
    b.pending = b.params.size();
  }
  got_.assign(params_.size(), false);
  next_launch_ = 0;
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace torchattn::distributed
