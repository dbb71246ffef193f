#pragma once

// Attention heatmaps: rows are output tokens, columns source tokens, darker is less weight.

#include <torch/types.h>

#include <string>
#include <vector>

namespace translate {

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
