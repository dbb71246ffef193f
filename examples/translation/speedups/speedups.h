#pragma once

// The example's speed-ups that are not attention, and the switch between each and its plain
// LibTorch twin. The model and trainer are written with LibTorch's own layers; where a speed-up
// applies they say so and call it when it is on (the default). Each computes what its twin
// computes (the tests compare them), so turning one off changes the speed, not the model:
//
//   gru      speedups/fused_gru.h   one autograd function per GRU direction
//                                   (plain: torch::nn::GRU, the encoder on a packed sequence)
//   loss     speedups/fused_loss.h  the output layer and label-smoothed cross-entropy in one
//                                   function over the real target rows
//                                   (plain: Linear, then cross_entropy over every row)
//   dropout  speedups/fused_loss.h  a parallel dropout mask (plain: torch::dropout)
//   adam     speedups/fused_adam.h  Adam's step in one pass per parameter
//                                   (plain: torch::optim::Adam)
//
// TORCHATTN_TRANSLATE_PLAIN="gru,adam" (or "all") turns the named ones off for a run;
// bench/translation_bench --ablation measures what each buys.

#include <cstdint>
#include <string>

namespace translate {

struct Speedups {
  bool gru = true;
  bool loss = true;
  bool dropout = true;
  bool adam = true;
};

/// `names` ("gru,loss,dropout,adam", "all" or "") turned off; throws on an unknown name.
Speedups speedups_without(const std::string& names);

/// The process's choice, read once from TORCHATTN_TRANSLATE_PLAIN; may be changed (the
/// benchmark does, between runs).
Speedups& speedups();

/// How many threads the speed-ups' row loops run `items` rows on: they split them with
/// at::parallel_for, a header template that runs in parallel only where the including file is
/// compiled with OpenMP (CMakeLists.txt links OpenMP for this); without it, 1, whatever
/// at::get_num_threads() says.
int speedup_threads(int64_t items);

} // namespace translate
