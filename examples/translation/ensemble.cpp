#include "ensemble.h"

#include "trainer.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace translate {

using torch::Tensor;

namespace {

struct EnsembleState : DecoderState {
  std::vector<std::unique_ptr<DecoderState>> members;
  void select(const Tensor& index) override {
    for (auto& m : members)
      m->select(index);
  }
};

} // namespace

EnsembleImpl::EnsembleImpl(std::vector<std::shared_ptr<Seq2SeqImpl>> members)
    : Seq2SeqImpl(members.empty() ? ModelOptions{} : members.front()->options),
      members_(std::move(members)) {
  if (members_.empty())
    throw std::invalid_argument("an ensemble needs at least one model");
  for (size_t i = 0; i < members_.size(); ++i) {
    const ModelOptions& o = members_[i]->options;
    if (o.src_vocab != options.src_vocab || o.tgt_vocab != options.tgt_vocab) {
      throw std::invalid_argument(
          "ensemble member " + std::to_string(i + 1) + " has vocabularies of " +
          std::to_string(o.src_vocab) + " / " + std::to_string(o.tgt_vocab) +
          " tokens, the first one " + std::to_string(options.src_vocab) + " / " +
          std::to_string(options.tgt_vocab));
    }
    register_module("member" + std::to_string(i), members_[i]);
  }
}

std::unique_ptr<DecoderState> EnsembleImpl::encode(const Tensor& src, const Tensor& src_pad) {
  auto state = std::make_unique<EnsembleState>();
  for (auto& m : members_)
    state->members.push_back(m->encode(src, src_pad));
  return state;
}

Tensor EnsembleImpl::step(DecoderState& state, const Tensor& tokens, Tensor* attention) {
  auto& s = dynamic_cast<EnsembleState&>(state);
  std::vector<Tensor> log_probs, attentions;
  for (size_t i = 0; i < members_.size(); ++i) {
    Tensor a;
    log_probs.push_back(members_[i]->step(*s.members[i], tokens, attention ? &a : nullptr));
    if (attention)
      attentions.push_back(a);
  }
  if (attention)
    *attention = torch::stack(attentions).mean(0);
  const double log_n = std::log(static_cast<double>(members_.size()));
  return torch::stack(log_probs).logsumexp(0) - log_n;
}

Tensor EnsembleImpl::features(const Tensor&, const Tensor&, const Tensor&) {
  throw std::invalid_argument("an ensemble of models only decodes; train its members one by one");
}

torch::nn::Linear EnsembleImpl::output_layer() const {
  throw std::invalid_argument("an ensemble of models has no single output layer");
}

AttentionMaps EnsembleImpl::attention_maps(const Tensor&, const Tensor&) {
  throw std::invalid_argument("plot takes one model directory, not an ensemble");
}

Translator load_ensemble(const std::vector<std::string>& dirs) {
  if (dirs.empty())
    throw std::runtime_error("no model directory given");
  Translator first = load_translator(dirs.front());
  if (dirs.size() == 1)
    return first;
  std::vector<std::shared_ptr<Seq2SeqImpl>> members{first.model};
  for (size_t i = 1; i < dirs.size(); ++i) {
    Translator t = load_translator(dirs[i]);
    if (!(t.src_vocab == first.src_vocab) || !(t.tgt_vocab == first.tgt_vocab) ||
        t.options.tokenizer != first.options.tokenizer) {
      throw std::runtime_error(
          "model directory '" + dirs[i] + "' has other vocabularies or another tokenizer than '" +
          dirs.front() + "'; an ensemble's models must be trained on the same prepared data");
    }
    members.push_back(t.model);
  }
  first.model = std::make_shared<EnsembleImpl>(std::move(members));
  first.model->eval();
  return first;
}

} // namespace translate
