#pragma once

// Training and model directories of torchattn-translate.
//
// A model directory (train --out DIR) holds:
//   options.txt          model options (key=value), read by translate/evaluate/plot
//   src.vocab tgt.vocab  the vocabularies, one token per line
//   src.spm.model        the SentencePiece models of the two sides, when options.txt says
//   tgt.spm.model        tokenizer=sentencepiece (copied from the data directory)
//   model.pt             the weights of the best epoch by dev BLEU
//   train.txt            the training configuration, for --resume
//   history.tsv          epoch, train loss, dev loss, dev BLEU, seconds
//   checkpoint/          the last finished epoch: weights, Adam state, progress; replaced
//                        atomically (written beside it, then renamed) so that an interrupted
//                        run resumes from the last finished epoch

#include "data.h"
#include "decode.h"
#include "model.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace translate {

struct TrainConfig {
  std::string train_path, dev_path, out_dir;
  ModelOptions model;
  int64_t epochs = 30;
  double time_budget = 0;    ///< seconds of training (dev evaluation included); 0: none
  int64_t max_tokens = 1024; ///< padded tokens per batch
  double lr = 1e-3;
  int64_t warmup = 200; ///< steps of linear warm-up, then `schedule`'s decay
  /// After the warm-up: "inverse-sqrt" (lr · sqrt(warmup / step)), or "linear" (down to 0 at
  /// the end of the run: of time_budget where one is set, then of max_steps, then of
  /// epochs). With a time budget, "linear" follows the clock, so two runs are not the same.
  std::string schedule = "inverse-sqrt";
  /// Decay of the exponential moving average of the weights that dev evaluation and model.pt
  /// use (weight_average.h); 0: the last step's weights.
  double ema = 0;
  double clip = 1.0; ///< gradient norm clipping
  double label_smoothing = 0.1;
  double word_dropout = 0; ///< source words replaced by <unk> in training (data.h drop_words)
  int64_t min_freq = 1;    ///< vocabulary: tokens seen at least this often
  int64_t max_vocab = 0;   ///< vocabulary cap per side (0: none)
  /// Word-level vocabularies even where `prepare` trained SentencePiece models beside
  /// train_path (not saved: a resumed run reads options.txt's tokenizer).
  bool words = false;
  /// Packed batches (packed.h): sentences back to back, at most max_tokens a batch, no
  /// padding; the Transformer only.
  bool pack = false;
  uint64_t seed = 1;
  /// "fp32", or "bf16": each step's forward and loss run under CPU autocast in bfloat16
  /// (Linear and attention in bfloat16), while parameters, gradients and Adam stay float32.
  std::string precision = "fp32";
  int64_t max_steps = 0; ///< stop after this many optimizer steps in all (0: none)
  bool progress = true;
  /// Data-parallel training over this group's ranks (not saved; null: one process). Every
  /// rank trains on its share of each global batch of max_tokens; rank 0 writes `out_dir`.
  c10::intrusive_ptr<c10d::ProcessGroup> group;

  std::map<std::string, std::string> to_map() const;
  static TrainConfig from_map(const std::map<std::string, std::string>& m);
};

struct TrainSummary {
  int64_t epochs_done = 0, best_epoch = 0;
  double best_bleu = 0, seconds = 0;
  bool interrupted = false;
};

/// The training loss of a batch: label-smoothed cross-entropy of the output layer over the
/// real (not padding) target tokens, by the fused linear_cross_entropy.
torch::Tensor training_loss(Seq2SeqImpl& model, const Batch& batch, double label_smoothing);
/// The same for a packed batch (the Transformer's features_packed).
torch::Tensor training_loss(Seq2SeqImpl& model, const PackedBatch& batch, double label_smoothing);

/// The learning rate of optimizer step `step` (from 1) over the peak `lr`: linear warm-up,
/// then `c.schedule`'s decay; `elapsed` seconds of training so far, `batches_per_epoch` of
/// this epoch (for a "linear" run that ends after c.epochs).
double lr_factor(const TrainConfig& c, int64_t step, double elapsed, size_t batches_per_epoch);

/// Trains into config.out_dir, which must not hold a run yet.
TrainSummary train(const TrainConfig& config);
/// Continues the run in `out_dir` from its last finished epoch. `epochs`, `time_budget` and
/// `max_steps` replace the saved ones when positive; every rank of `group` resumes from the
/// same checkpoint.
TrainSummary resume(
    const std::string& out_dir, int64_t epochs, double time_budget, bool progress,
    c10::intrusive_ptr<c10d::ProcessGroup> group = {}, int64_t max_steps = 0);

/// Loads a model directory; throws std::runtime_error naming the file that is missing,
/// truncated or not what it should be.
Translator load_translator(const std::string& dir);

/// Makes a model directory from a TorchScript file of bench/translation_models.py's GruSeq2Seq
/// (additive attention; sizes read from its tensors) and the vocabularies it was trained with
/// (`vocab_dir`/src.vocab and tgt.vocab). Throws naming what does not match.
void import_torchscript(
    const std::string& torchscript, const std::string& vocab_dir, const std::string& out_dir);

std::map<std::string, std::string> read_key_values(const std::string& path);
void write_key_values(const std::string& path, const std::map<std::string, std::string>& m);

} // namespace translate
