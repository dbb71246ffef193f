#include "weight_average.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

namespace translate {

WeightAverage::WeightAverage(
    std::shared_ptr<Seq2SeqImpl> shadow, const Seq2SeqImpl& model, double decay)
    : shadow_(std::move(shadow)), decay_(decay) {
  if (!(decay > 0 && decay < 1))
    throw std::invalid_argument("ema: the decay must be in (0, 1)");
  const auto src = model.named_parameters();
  const auto dst = shadow_->named_parameters();
  if (src.size() != dst.size())
    throw std::invalid_argument("ema: the models have different parameters");
  torch::NoGradGuard no_grad;
  for (const auto& p : src) {
    const torch::Tensor* t = dst.find(p.key());
    if (t == nullptr || !t->sizes().equals(p.value().sizes()))
      throw std::invalid_argument("ema: the models differ in '" + p.key() + "'");
    t->copy_(p.value());
    from_.push_back(p.value());
    to_.push_back(*t);
  }
  for (auto& t : to_)
    t.set_requires_grad(false);
  shadow_->eval();
}

void WeightAverage::update(int64_t step) {
  const double s = static_cast<double>(step);
  const double d = std::min(decay_, (1 + s) / (10 + s));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < to_.size(); ++i)
    to_[i].lerp_(from_[i], 1 - d);
}

} // namespace translate
