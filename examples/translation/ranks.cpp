#include "ranks.h"

#include <torch/torch.h>

#include <stdexcept>

namespace translate {

namespace {

/// Runs a collective, turning a dead rank's timeout into an error that says so.
template <typename F>
void collective(const char* what, F&& f) {
  const std::string head =
      std::string("train: ") + what + " across the ranks failed (has a rank died?): ";
  try {
    f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(head + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(head + e.what());
  }
}

} // namespace

Ranks::Ranks(c10::intrusive_ptr<c10d::ProcessGroup> group) : group_(std::move(group)) {}

std::vector<size_t> Ranks::shard(const std::vector<size_t>& global) const {
  std::vector<size_t> mine;
  for (size_t k = static_cast<size_t>(rank()); k < global.size(); k += static_cast<size_t>(size()))
    mine.push_back(global[k]);
  return mine;
}

void Ranks::attach(torch::nn::Module& model) {
  if (!group_)
    return;
  reducer_ =
      std::make_unique<torchattn::distributed::GradientAllReduce>(model.parameters(), group_);
  collective("sharing rank 0's initial weights", [&] { reducer_->broadcast_parameters(); });
}

void Ranks::reduce_gradients() {
  if (reducer_)
    collective("averaging the gradients", [&] { reducer_->finish(); });
}

bool Ranks::any(bool flag) {
  return sum(flag ? 1.0 : 0.0) > 0.0;
}

double Ranks::sum(double x) {
  if (!group_)
    return x;
  std::vector<torch::Tensor> t{torch::tensor({x}, torch::kDouble)};
  collective("a reduction", [&] { group_->allreduce(t)->wait(); });
  return t[0].item<double>();
}

void Ranks::barrier() {
  if (group_)
    collective("waiting for the other ranks", [&] { group_->barrier()->wait(); });
}

} // namespace translate
