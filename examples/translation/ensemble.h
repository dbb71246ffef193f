#pragma once

// An ensemble of translation models that share their vocabularies: each decoding step
// averages the members' next-token probabilities (log of the mean, not the mean of the logs),
// and the attention returned is the members' mean. Greedy and beam search take it as they
// take one model, since it is a Seq2SeqImpl whose state holds every member's state.

#include "decode.h"
#include "model.h"

#include <memory>
#include <string>
#include <vector>

namespace translate {

class EnsembleImpl : public Seq2SeqImpl {
 public:
  /// Throws std::invalid_argument when `members` is empty or their vocabulary sizes differ.
  explicit EnsembleImpl(std::vector<std::shared_ptr<Seq2SeqImpl>> members);

  std::unique_ptr<DecoderState> encode(
      const torch::Tensor& src, const torch::Tensor& src_pad) override;
  torch::Tensor step(
      DecoderState& state, const torch::Tensor& tokens, torch::Tensor* attention) override;

  // Training and attention plots take one model; an ensemble throws std::invalid_argument.
  torch::Tensor features(
      const torch::Tensor& src, const torch::Tensor& src_pad, const torch::Tensor& tgt_in) override;
  torch::nn::Linear output_layer() const override;
  AttentionMaps attention_maps(const torch::Tensor& src, const torch::Tensor& tgt_in) override;

  const std::vector<std::shared_ptr<Seq2SeqImpl>>& members() const { return members_; }

 private:
  std::vector<std::shared_ptr<Seq2SeqImpl>> members_;
};

/// The model directories `dirs` as one Translator: one directory loads as load_translator
/// does; several become an EnsembleImpl. Throws std::runtime_error naming the directory whose
/// vocabularies or tokenizer differ from the first one's.
Translator load_ensemble(const std::vector<std::string>& dirs);

} // namespace translate
