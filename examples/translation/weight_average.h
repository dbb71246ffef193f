#pragma once

// An exponential moving average of a model's parameters (Polyak averaging): `train --ema D`
// evaluates and saves these weights instead of the last step's. On a small corpus the last
// step's weights wander with each batch; their average sits nearer the minimum.

#include "model.h"

#include <memory>

namespace translate {

class WeightAverage {
 public:
  /// `shadow` is a model of the same options; it starts as a copy of `model`, whose parameters
  /// it keeps reading (the model must outlive the average).
  WeightAverage(std::shared_ptr<Seq2SeqImpl> shadow, const Seq2SeqImpl& model, double decay);

  /// After optimizer step `step` (from 1) of the model given to the constructor:
  /// shadow = d * shadow + (1 - d) * model, with d = min(decay, (1 + step) / (10 + step)) so
  /// that the first steps do not keep the initial weights.
  void update(int64_t step);

  /// The averaged model, always in eval mode.
  const std::shared_ptr<Seq2SeqImpl>& model() const { return shadow_; }

 private:
  std::shared_ptr<Seq2SeqImpl> shadow_;
  std::vector<torch::Tensor> from_, to_;
  double decay_;
};

} // namespace translate
