#include "heatmap.h"

#include "text.h"

#include <stb_image_write.h>
#include <stb_truetype.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace translate {
namespace {

constexpr int kCell = 32;
constexpr int kPad = 8;
constexpr float kFontPx = 16.0f;

// Viridis at five anchors, interpolated.
std::array<unsigned char, 3> colour(float v) {
  static const float anchors[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  v = std::clamp(v, 0.0f, 1.0f) * 4.0f;
  const int i = std::min(3, static_cast<int>(v));
  const float f = v - static_cast<float>(i);
  std::array<unsigned char, 3> c{};
  for (int k = 0; k < 3; ++k) {
    c[k] =
        static_cast<unsigned char>(anchors[i][k] + f * (anchors[i + 1][k] - anchors[i][k]) + 0.5f);
  }
  return c;
}

void check(
    const torch::Tensor& w, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows) {
  if (w.dim() != 2 || w.size(0) != static_cast<int64_t>(rows.size()) ||
      w.size(1) != static_cast<int64_t>(columns.size())) {
    throw std::invalid_argument(fmt::format(
        "heatmap: weights of shape [{}] do not match {} rows x {} columns",
        fmt::join(w.sizes(), ", "), rows.size(), columns.size()));
  }
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A greyscale text renderer over stb_truetype.
class Font {
 public:
  bool load() {
    const char* env = std::getenv("TORCHATTN_FONT");
    for (const std::string& path :
         {env ? std::string(env) : std::string(),
          std::string("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")}) {
      if (path.empty())
        continue;
      std::ifstream in(path, std::ios::binary);
      if (!in)
        continue;
      std::ostringstream s;
      s << in.rdbuf();
      data_ = s.str();
      const auto* bytes = reinterpret_cast<const unsigned char*>(data_.data());
      if (stbtt_InitFont(&font_, bytes, stbtt_GetFontOffsetForIndex(bytes, 0)) != 0) {
        scale_ = stbtt_ScaleForPixelHeight(&font_, kFontPx);
        int descent = 0, gap = 0;
        stbtt_GetFontVMetrics(&font_, &ascent_, &descent, &gap);
        height_ = static_cast<int>((static_cast<float>(ascent_ - descent)) * scale_) + 2;
        return true;
      }
    }
    return false;
  }

  // Pen start: glyphs such as 'j' reach left of their origin.
  static constexpr int kMargin = 2;

  int width(const std::string& text) const {
    float x = 2 * kMargin;
    for (uint32_t cp : utf8_decode(text)) {
      int advance = 0, lsb = 0;
      stbtt_GetCodepointHMetrics(&font_, static_cast<int>(cp), &advance, &lsb);
      x += static_cast<float>(advance) * scale_;
    }
    return static_cast<int>(x) + 1;
  }
  int height() const { return height_; }

  // Renders `text` into a width(text) x height() coverage bitmap.
  std::vector<unsigned char> render(const std::string& text) const {
    const int w = width(text), h = height_;
    std::vector<unsigned char> bitmap(static_cast<size_t>(w) * h, 0);
    const int baseline = static_cast<int>(static_cast<float>(ascent_) * scale_);
    float x = kMargin;
    for (uint32_t cp : utf8_decode(text)) {
      int advance = 0, lsb = 0, x0 = 0, y0 = 0, x1 = 0, y1 = 0;
      stbtt_GetCodepointHMetrics(&font_, static_cast<int>(cp), &advance, &lsb);
      stbtt_GetCodepointBitmapBox(&font_, static_cast<int>(cp), scale_, scale_, &x0, &y0, &x1, &y1);
      const int gx = static_cast<int>(x) + x0, gy = baseline + y0;
      const int gw = x1 - x0, gh = y1 - y0;
      if (gw > 0 && gh > 0 && gx >= 0 && gy >= 0 && gx + gw <= w && gy + gh <= h) {
        std::vector<unsigned char> glyph(static_cast<size_t>(gw) * gh);
        stbtt_MakeCodepointBitmap(
            &font_, glyph.data(), gw, gh, gw, scale_, scale_, static_cast<int>(cp));
        for (int r = 0; r < gh; ++r) {
          for (int c = 0; c < gw; ++c) {
            auto& px = bitmap[static_cast<size_t>(gy + r) * w + gx + c];
            px = std::max(px, glyph[static_cast<size_t>(r) * gw + c]);
          }
        }
      }
      x += static_cast<float>(advance) * scale_;
    }
    return bitmap;
  }

 private:
  std::string data_;
  stbtt_fontinfo font_{};
  float scale_ = 1;
  int ascent_ = 0, height_ = 0;
};

} // namespace

void write_heatmap_svg(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows) {
  check(weights, columns, rows);
  const torch::Tensor w = weights.to(torch::kFloat).contiguous();
  const auto acc = w.accessor<float, 2>();
  size_t longest_row = 1, longest_col = 1;
  for (const auto& r : rows)
    longest_row = std::max(longest_row, utf8_decode(r).size());
  for (const auto& c : columns)
    longest_col = std::max(longest_col, utf8_decode(c).size());
  const int left = static_cast<int>(longest_row) * 9 + 2 * kPad;
  const int top = static_cast<int>(longest_col) * 9 + 2 * kPad;
  const int width = left + kCell * static_cast<int>(columns.size()) + kPad;
  const int height = top + kCell * static_cast<int>(rows.size()) + kPad;
  std::ostringstream svg;
  svg << fmt::format(
             R"svg(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="DejaVu Sans, sans-serif" font-size="14">)svg",
             width, height)
      << "\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < columns.size(); ++c) {
      const float v = acc[static_cast<int64_t>(r)][static_cast<int64_t>(c)];
      const auto rgb = colour(v);
      svg << fmt::format(
                 R"svg(<rect x="{}" y="{}" width="{}" height="{}" fill="rgb({},{},{})"><title>{} -> {}: {:.3f}</title></rect>)svg",
                 left + kCell * static_cast<int>(c), top + kCell * static_cast<int>(r), kCell,
                 kCell, rgb[0], rgb[1], rgb[2], xml_escape(rows[r]), xml_escape(columns[c]), v)
          << "\n";
    }
    svg << fmt::format(
               R"svg(<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>)svg",
               left - kPad, top + kCell * static_cast<int>(r) + kCell / 2, xml_escape(rows[r]))
        << "\n";
  }
  for (size_t c = 0; c < columns.size(); ++c) {
    const int x = left + kCell * static_cast<int>(c) + kCell / 2;
    svg << fmt::format(
               R"svg(<text x="{}" y="{}" transform="rotate(-90 {} {})" dominant-baseline="middle">{}</text>)svg",
               x, top - kPad, x, top - kPad, xml_escape(columns[c]))
        << "\n";
  }
  svg << "</svg>\n";
  std::ofstream out(path, std::ios::binary);
  out << svg.str();
  if (!out)
    throw std::runtime_error("cannot write '" + path + "'");
}

void write_heatmap_png(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows) {
  check(weights, columns, rows);
  const torch::Tensor w = weights.to(torch::kFloat).contiguous();
  const auto acc = w.accessor<float, 2>();
  Font font;
  const bool labels = font.load();
  if (!labels) {
    fmt::print(
        stderr,
        "plot: warning: no TrueType font (install fonts-dejavu-core or set TORCHATTN_FONT); "
        "'{}' has no labels\n",
        path);
  }
  int row_label = 0, col_label = 0;
  if (labels) {
    for (const auto& r : rows)
      row_label = std::max(row_label, font.width(r));
    for (const auto& c : columns)
      col_label = std::max(col_label, font.width(c));
  }
  const int left = row_label + 2 * kPad, top = col_label + 2 * kPad;
  const int width = left + kCell * static_cast<int>(columns.size()) + kPad;
  const int height = top + kCell * static_cast<int>(rows.size()) + kPad;
  std::vector<unsigned char> img(static_cast<size_t>(width) * height * 3, 255);
  auto put = [&](int x, int y, std::array<unsigned char, 3> c) {
    if (x < 0 || y < 0 || x >= width || y >= height)
      return;
    std::copy(c.begin(), c.end(), img.begin() + (static_cast<size_t>(y) * width + x) * 3);
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < columns.size(); ++c) {
      const auto rgb = colour(acc[static_cast<int64_t>(r)][static_cast<int64_t>(c)]);
      for (int y = 1; y < kCell; ++y) {
        for (int x = 1; x < kCell; ++x) {
          put(left + kCell * static_cast<int>(c) + x, top + kCell * static_cast<int>(r) + y, rgb);
        }
      }
    }
  }
  if (labels) {
    auto ink = [&](int x, int y, unsigned char coverage) {
      if (coverage == 0)
        return;
      const auto v = static_cast<unsigned char>(255 - coverage);
      put(x, y, {v, v, v});
    };
    for (size_t r = 0; r < rows.size(); ++r) { // right-aligned beside the row
      const auto bm = font.render(rows[r]);
      const int tw = font.width(rows[r]), th = font.height();
      const int x0 = left - kPad - tw, y0 = top + kCell * static_cast<int>(r) + (kCell - th) / 2;
      for (int y = 0; y < th; ++y) {
        for (int x = 0; x < tw; ++x)
          ink(x0 + x, y0 + y, bm[static_cast<size_t>(y) * tw + x]);
      }
    }
    for (size_t c = 0; c < columns.size(); ++c) { // rotated a quarter turn, reading upwards
      const auto bm = font.render(columns[c]);
      const int tw = font.width(columns[c]), th = font.height();
      const int x0 = left + kCell * static_cast<int>(c) + (kCell - th) / 2, y_bottom = top - kPad;
      for (int y = 0; y < th; ++y) {
        for (int x = 0; x < tw; ++x)
          ink(x0 + y, y_bottom - x, bm[static_cast<size_t>(y) * tw + x]);
      }
    }
  }
  if (stbi_write_png(path.c_str(), width, height, 3, img.data(), width * 3) == 0) {
    throw std::runtime_error("cannot write '" + path + "'");
  }
}

} // namespace translate
