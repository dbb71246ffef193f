#include "attention_views.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace translate {

AttentionMaps attention_maps_of(const Translator& t, const Translator::Result& r) {
  torch::NoGradGuard no_grad;
  t.model->eval();
  const auto src_ids = t.src_vocab.encode(r.source_tokens);
  std::vector<int64_t> tgt_in{Vocab::kBos};
  for (const int64_t id : t.tgt_vocab.encode(r.tokens))
    tgt_in.push_back(id);
  // Up to max_len positions, as decoding had (the last step produced </s> or was cut).
  if (static_cast<int64_t>(tgt_in.size()) > t.options.max_len)
    tgt_in.resize(static_cast<size_t>(t.options.max_len));
  return t.model->attention_maps(
      torch::tensor(src_ids, torch::kLong).unsqueeze(0),
      torch::tensor(tgt_in, torch::kLong).unsqueeze(0));
}

torch::Tensor encoder_rollout(const std::vector<torch::Tensor>& encoder_self) {
  if (encoder_self.empty())
    throw std::invalid_argument("rollout: the model has no encoder self-attention");
  const int64_t S = encoder_self[0].size(-1);
  const torch::Tensor eye = torch::eye(S, torch::kFloat);
  torch::Tensor rollout = eye;
  for (const auto& layer : encoder_self) {
    torch::Tensor a = 0.5 * layer.to(torch::kFloat).mean(0) + 0.5 * eye;
    a = a / a.sum(-1, /*keepdim=*/true);
    rollout = a.matmul(rollout);
  }
  return rollout;
}

std::vector<HeatmapPanel> attention_panels(
    const AttentionMaps& maps, const Translator::Result& r, const PanelChoice& choice,
    int& per_row) {
  // Decoder rows: the step that produced each output token; its inputs are <s> and the
  // tokens before.
  std::vector<std::string> out_rows = r.tokens, dec_inputs{"<s>"};
  dec_inputs.insert(dec_inputs.end(), r.tokens.begin(), r.tokens.end());
  const int64_t layers = static_cast<int64_t>(maps.cross.size());
  const int64_t heads = maps.cross.empty() ? 0 : maps.cross[0].size(0);
  if (choice.layer < 0 || choice.layer > layers) {
    throw std::invalid_argument(fmt::format(
        "plot: --layer {} is not a layer of this model (1 to {})", choice.layer, layers));
  }
  if (choice.head < 0 || choice.head > heads) {
    throw std::invalid_argument(
        fmt::format("plot: --head {} is not a head of this model (1 to {})", choice.head, heads));
  }
  struct Kind {
    const char* name;
    const std::vector<torch::Tensor>* maps;
    const std::vector<std::string>* columns;
  };
  const Kind kinds[] = {
      {"encoder self-attention", &maps.encoder_self, &r.source_tokens},
      {"decoder self-attention", &maps.decoder_self, &dec_inputs},
      {"cross-attention", &maps.cross, &r.source_tokens}};
  std::vector<HeatmapPanel> panels;
  per_row = 1;
  for (const Kind& k : kinds) {
    for (int64_t l = 0; l < static_cast<int64_t>(k.maps->size()); ++l) {
      if (choice.layer != 0 && l + 1 != choice.layer)
        continue;
      const torch::Tensor& w = (*k.maps)[static_cast<size_t>(l)];
      const int64_t rows = w.size(1);
      std::vector<std::string> row_labels =
          k.maps == &maps.encoder_self ? r.source_tokens : out_rows;
      if (k.maps != &maps.encoder_self && static_cast<int64_t>(row_labels.size()) < rows)
        row_labels.push_back("</s>");
      int in_row = 0;
      for (int64_t h = 0; h < w.size(0); ++h) {
        if (choice.head != 0 && h + 1 != choice.head)
          continue;
        panels.push_back(
            {fmt::format("{}, layer {}, head {}", k.name, l + 1, h + 1), w[h].narrow(0, 0, rows),
             *k.columns, row_labels});
        ++in_row;
      }
      per_row = std::max(per_row, in_row);
    }
  }
  if (choice.rollout && !maps.encoder_self.empty()) {
    panels.push_back(
        {"encoder attention rollout", encoder_rollout(maps.encoder_self), r.source_tokens,
         r.source_tokens});
  }
  return panels;
}

std::string pharaoh_alignment(const Tokenizers& tok, const Translator::Result& r) {
  if (!r.attention.defined() || r.tokens.empty() || r.source_tokens.empty())
    return "";
  const auto src_word = tok.src.word_index(r.source_tokens);
  const auto out_word = tok.tgt.word_index(r.tokens);
  const int64_t S = src_word.back() + 1, T = out_word.back() + 1;
  // score[j, i]: the attention of output word j's tokens on source word i's, summed.
  const torch::Tensor a =
      r.attention.narrow(0, 0, static_cast<int64_t>(r.tokens.size())).to(torch::kFloat);
  torch::Tensor by_src = torch::zeros({a.size(0), S});
  by_src.index_add_(1, torch::tensor(src_word, torch::kLong), a);
  torch::Tensor score = torch::zeros({T, S});
  score.index_add_(0, torch::tensor(out_word, torch::kLong), by_src);
  const torch::Tensor best = score.argmax(1);
  std::vector<std::pair<int64_t, int64_t>> links;
  for (int64_t j = 0; j < T; ++j)
    links.emplace_back(best[j].item<int64_t>(), j);
  std::sort(links.begin(), links.end());
  std::string out;
  for (const auto& [i, j] : links)
    out += (out.empty() ? "" : " ") + std::to_string(i) + "-" + std::to_string(j);
  return out;
}

} // namespace translate
