#pragma once

// torch::optim::Adam whose step is one pass over each parameter. LibTorch's Adam::step runs
// about eight tensor ops per parameter (two moment updates, sqrt, a division, an add, addcdiv)
// and allocates two temporaries; for the translation models, whose embeddings and output
// layer hold millions of parameters, that is several percent of a training step. Here one
// vectorised loop reads the parameter, its gradient and both moments once and writes the
// parameter and the moments. The state (AdamParamState) and its serialisation are Adam's, so
// checkpoints load into either; options it does not fuse (amsgrad, non-float32 or
// non-contiguous parameters, sparse gradients) run Adam::step unchanged.

#include <torch/optim/adam.h>

#include <memory>
#include <vector>

namespace translate {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// The trainer's optimizer: FusedAdam, or torch::optim::Adam where the adam speed-up is off
/// (speedups/speedups.h).
std::unique_ptr<torch::optim::Adam> make_adam(
    const std::vector<torch::Tensor>& parameters, const torch::optim::AdamOptions& options);

} // namespace translate
