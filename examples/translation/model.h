#pragma once

// The two translation models of torchattn-translate, both composed from torchattn modules:
// a GRU encoder-decoder with one of five attention scores, and a pre-norm Transformer built
// on torchattn::nn::MultiheadAttention.

#include "packed.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>

namespace translate {

/// Architecture options, saved as `options.txt` in every model directory.
struct ModelOptions {
  std::string kind = "transformer";   ///< "gru" or "transformer"
  std::string attention = "additive"; ///< GRU: dot | scaled | cosine | additive | general
  int64_t src_vocab = 0;
  int64_t tgt_vocab = 0;
  int64_t embed_dim = 256;
  int64_t hidden_dim = 256; ///< GRU hidden size; Transformer model width (= embed_dim)
  int64_t layers = 2;       ///< Transformer encoder and decoder layers (GRU: 1)
  int64_t heads = 4;
  int64_t ff_dim = 512;
  double dropout = 0.1;
  int64_t max_len = 128; ///< longest sentence the positional table covers
  /// Transformer: the output layer's weight is the target embedding (Press & Wolf, 2017).
  /// Absent in older directories: untied.
  bool tie_embeddings = false;
  /// How sentences become tokens (tokenizer.h): "words", or "sentencepiece" with the models
  /// src.spm.model and tgt.spm.model beside options.txt. Absent in older directories: words.
  std::string tokenizer = "words";

  std::map<std::string, std::string> to_map() const;
  /// Throws std::runtime_error on an unknown key, a bad value or an invalid combination.
  static ModelOptions from_map(const std::map<std::string, std::string>& m);
  void validate() const;
};

/// What a decoder carries between steps; select() keeps the rows of `index` (beam search).
class DecoderState {
 public:
  virtual ~DecoderState() = default;
  virtual void select(const torch::Tensor& index) = 0;
};

/// Every attention map of one sentence pair (plot, translate --align): per layer, weights
/// [heads, rows, columns]. Rows of the decoder's maps are the steps that produce each output
/// token; columns are source tokens (encoder self- and cross-attention) or the decoder's
/// inputs (<s> and the output tokens). The GRU model has one cross-attention map of one head.
struct AttentionMaps {
  std::vector<torch::Tensor> encoder_self, decoder_self, cross;
};

class Seq2SeqImpl : public torch::nn::Module {
 public:
  explicit Seq2SeqImpl(ModelOptions options) : options(std::move(options)) {}
  // src [B, S], src_pad [B, S] (true at padding), tgt_in [B, T] -> logits [B, T, V]
  torch::Tensor forward(
      const torch::Tensor& src, const torch::Tensor& src_pad, const torch::Tensor& tgt_in) {
    return output_layer()(features(src, src_pad, tgt_in));
  }
  // src [B, S], src_pad [B, S], tgt_in [B, T] -> the input of the output layer [B, T, H]
  virtual torch::Tensor features(
      const torch::Tensor& src, const torch::Tensor& src_pad, const torch::Tensor& tgt_in) = 0;
  /// The last layer, H -> target vocabulary logits.
  virtual torch::nn::Linear output_layer() const = 0;
  // src [B, S], src_pad [B, S] -> the state before the first target token
  virtual std::unique_ptr<DecoderState> encode(
      const torch::Tensor& src, const torch::Tensor& src_pad) = 0;
  // A packed batch (packed.h) -> the input of the output layer [T, H], every sentence
  // attending only to itself; the Transformer only (others throw std::invalid_argument)
  virtual torch::Tensor features_packed(const PackedBatch& batch);
  // src [1, S], tgt_in [1, T] (<s> and the output tokens) -> the maps of one teacher-forced
  // pass, without dropout
  virtual AttentionMaps attention_maps(const torch::Tensor& src, const torch::Tensor& tgt_in) = 0;
  // tokens [B] -> log-probabilities [B, V]; attention [B, S] over the source when asked
  virtual torch::Tensor step(
      DecoderState& state, const torch::Tensor& tokens, torch::Tensor* attention = nullptr) = 0;

  ModelOptions options;
};

std::shared_ptr<Seq2SeqImpl> make_model(const ModelOptions& options);

} // namespace translate
