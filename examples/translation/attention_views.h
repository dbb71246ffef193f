#pragma once

// Attention you can read: every layer and head of a translation's attention as heatmap panels,
// attention rollout over the encoder, and word alignments from the cross-attention.

#include "decode.h"
#include "heatmap.h"

#include <torch/types.h>

#include <string>
#include <vector>

namespace translate {

/// The maps of translation `r` (from Translator::translate) in one teacher-forced pass over
/// its source and output tokens.
AttentionMaps attention_maps_of(const Translator& t, const Translator::Result& r);

/// Attention rollout (Abnar & Zuidema, 2020) over the encoder's self-attention layers
/// [heads, S, S]: each layer's mean over heads, with the residual as 0.5 A + 0.5 I and rows
/// renormalised, multiplied from the first layer up -> [S, S]: how much each position's
/// final representation draws on each input token.
torch::Tensor encoder_rollout(const std::vector<torch::Tensor>& encoder_self);

/// What plot draws.
struct PanelChoice {
  int64_t layer = 0; ///< 1-based; 0: every layer
  int64_t head = 0;  ///< 1-based; 0: every head
  bool rollout = true;
};

/// The panels of `maps` for translation `r`: encoder self-attention, decoder self-attention
/// and cross-attention, a row per layer and a panel per head ("cross-attention, layer 2,
/// head 3"), as `choice` selects, then the encoder rollout. `per_row` gets the panels per
/// grid row. Throws std::invalid_argument for a layer or head the model does not have.
std::vector<HeatmapPanel> attention_panels(
    const AttentionMaps& maps, const Translator::Result& r, const PanelChoice& choice,
    int& per_row);

/// Word alignments of translation `r` in the Pharaoh format ("i-j" pairs, source word i and
/// output word j from 0, separated by spaces, sorted): each output word aligned to the source
/// word its tokens attend to most, from the last layer's cross-attention averaged over heads
/// (r.attention), mapped from tokens (subwords) to space-separated words.
std::string pharaoh_alignment(const Tokenizers& tok, const Translator::Result& r);

} // namespace translate
