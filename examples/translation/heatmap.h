#pragma once

// Attention heatmaps: rows are output tokens, columns source tokens, darker is less weight.

#include <torch/types.h>

#include <string>
#include <vector>

namespace translate {

/// One heatmap of a grid: weights [rows, columns] in [0, 1], labelled, with a title above it
/// (none if empty).
struct HeatmapPanel {
  std::string title;
  torch::Tensor weights;
  std::vector<std::string> columns, rows;
};

/// `panels` in a grid of `per_row` panels a row, as SVG (each panel a <g class="panel">, its
/// title a <text class="title">) and as PNG (labels as write_heatmap_png draws them).
void write_heatmap_grid_svg(
    const std::string& path, const std::vector<HeatmapPanel>& panels, int per_row);
void write_heatmap_grid_png(
    const std::string& path, const std::vector<HeatmapPanel>& panels, int per_row);

/// weights [rows, columns] in [0, 1]; labels name the columns (source) and rows (output).
void write_heatmap_svg(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows);

/// The same as a PNG (stb_image_write), labels drawn with stb_truetype in DejaVu Sans
/// (Debian's fonts-dejavu-core; TORCHATTN_FONT names another TrueType file). Without a font
/// the cells are drawn and a warning says the labels are missing.
void write_heatmap_png(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows);

} // namespace translate
