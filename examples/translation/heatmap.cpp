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

/// One panel's box: room for its title, row labels (left), column labels (top) and cells.
struct Box {
  int title = 0, left = 0, top = 0, width = 0, height = 0;
};

Box box_of(const HeatmapPanel& p, int title_h, int title_w, int row_label, int col_label) {
  Box b;
  b.title = p.title.empty() ? 0 : title_h + kPad;
  b.left = row_label + 2 * kPad;
  b.top = b.title + col_label + 2 * kPad;
  b.width = b.left + kCell * static_cast<int>(p.columns.size()) + kPad;
  if (!p.title.empty())
    b.width = std::max(b.width, title_w + 3 * kPad); // the title stays clear of its neighbour
  b.height = b.top + kCell * static_cast<int>(p.rows.size()) + kPad;
  return b;
}

/// The grid: panel i at column i % per_row and row i / per_row; each grid column as wide as
/// its widest panel, each grid row as tall as its tallest. Returns the panels' origins.
std::vector<std::pair<int, int>> layout(
    const std::vector<Box>& boxes, int per_row, int& width, int& height) {
  const int n = static_cast<int>(boxes.size());
  per_row = std::max(1, std::min(per_row, n));
  const int grid_rows = (n + per_row - 1) / per_row;
  std::vector<int> col_w(static_cast<size_t>(per_row), 0), row_h(static_cast<size_t>(grid_rows), 0);
  for (int i = 0; i < n; ++i) {
    auto& w = col_w[static_cast<size_t>(i % per_row)];
    auto& h = row_h[static_cast<size_t>(i / per_row)];
    w = std::max(w, boxes[static_cast<size_t>(i)].width);
    h = std::max(h, boxes[static_cast<size_t>(i)].height);
  }
  std::vector<std::pair<int, int>> origins;
  for (int i = 0; i < n; ++i) {
    int x = 0, y = 0;
    for (int c = 0; c < i % per_row; ++c)
      x += col_w[static_cast<size_t>(c)];
    for (int r = 0; r < i / per_row; ++r)
      y += row_h[static_cast<size_t>(r)];
    origins.emplace_back(x, y);
  }
  width = 0;
  height = 0;
  for (int w : col_w)
    width += w;
  for (int h : row_h)
    height += h;
  return origins;
}

void check_panels(const std::vector<HeatmapPanel>& panels) {
  if (panels.empty())
    throw std::invalid_argument("heatmap: no panels to draw");
  for (const auto& p : panels)
    check(p.weights, p.columns, p.rows);
}

size_t longest(const std::vector<std::string>& labels) {
  size_t n = 1;
  for (const auto& l : labels)
    n = std::max(n, utf8_decode(l).size());
  return n;
}

void svg_panel(std::ostringstream& svg, const HeatmapPanel& p, const Box& b, int ox, int oy) {
  const torch::Tensor w = p.weights.to(torch::kFloat).contiguous();
  const auto acc = w.accessor<float, 2>();
  svg << fmt::format(R"svg(<g class="panel" transform="translate({} {})">)svg", ox, oy) << "\n";
  if (!p.title.empty()) {
    svg << fmt::format(
               R"svg(<text class="title" x="{}" y="{}" font-weight="bold">{}</text>)svg", kPad,
               kPad + 14, xml_escape(p.title))
        << "\n";
  }
  const int left = b.left, top = b.top;
  for (size_t r = 0; r < p.rows.size(); ++r) {
    for (size_t c = 0; c < p.columns.size(); ++c) {
      const float v = acc[static_cast<int64_t>(r)][static_cast<int64_t>(c)];
      const auto rgb = colour(v);
      svg << fmt::format(
                 R"svg(<rect x="{}" y="{}" width="{}" height="{}" fill="rgb({},{},{})"><title>{} -> {}: {:.3f}</title></rect>)svg",
                 left + kCell * static_cast<int>(c), top + kCell * static_cast<int>(r), kCell,
                 kCell, rgb[0], rgb[1], rgb[2], xml_escape(p.rows[r]), xml_escape(p.columns[c]), v)
          << "\n";
    }
    svg << fmt::format(
               R"svg(<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>)svg",
               left - kPad, top + kCell * static_cast<int>(r) + kCell / 2, xml_escape(p.rows[r]))
        << "\n";
  }
  for (size_t c = 0; c < p.columns.size(); ++c) {
    const int x = left + kCell * static_cast<int>(c) + kCell / 2;
    svg << fmt::format(
               R"svg(<text x="{}" y="{}" transform="rotate(-90 {} {})" dominant-baseline="middle">{}</text>)svg",
               x, top - kPad, x, top - kPad, xml_escape(p.columns[c]))
        << "\n";
  }
  svg << "</g>\n";
}

/// An RGB image with the font's coverage inked in grey.
struct Canvas {
  int width = 0, height = 0;
  std::vector<unsigned char> img;
  Canvas(int w, int h) : width(w), height(h), img(static_cast<size_t>(w) * h * 3, 255) {}
  void put(int x, int y, std::array<unsigned char, 3> c) {
    if (x < 0 || y < 0 || x >= width || y >= height)
      return;
    std::copy(c.begin(), c.end(), img.begin() + (static_cast<size_t>(y) * width + x) * 3);
  }
  void ink(int x, int y, unsigned char coverage) {
    if (coverage == 0)
      return;
    const auto v = static_cast<unsigned char>(255 - coverage);
    put(x, y, {v, v, v});
  }
  /// `text` with its top left at (x0, y0), or rotated a quarter turn reading upwards with its
  /// start at the bottom (x0, y0).
  void text(const Font& font, const std::string& text, int x0, int y0, bool upwards) {
    const auto bm = font.render(text);
    const int tw = font.width(text), th = font.height();
    for (int y = 0; y < th; ++y) {
      for (int x = 0; x < tw; ++x) {
        const unsigned char v = bm[static_cast<size_t>(y) * tw + x];
        if (upwards)
          ink(x0 + y, y0 - x, v);
        else
          ink(x0 + x, y0 + y, v);
      }
    }
  }
};

void png_panel(
    Canvas& canvas, const Font* font, const HeatmapPanel& p, const Box& b, int ox, int oy) {
  const torch::Tensor w = p.weights.to(torch::kFloat).contiguous();
  const auto acc = w.accessor<float, 2>();
  const int left = ox + b.left, top = oy + b.top;
  for (size_t r = 0; r < p.rows.size(); ++r) {
    for (size_t c = 0; c < p.columns.size(); ++c) {
      const auto rgb = colour(acc[static_cast<int64_t>(r)][static_cast<int64_t>(c)]);
      for (int y = 1; y < kCell; ++y) {
        for (int x = 1; x < kCell; ++x)
          canvas.put(
              left + kCell * static_cast<int>(c) + x, top + kCell * static_cast<int>(r) + y, rgb);
      }
    }
  }
  if (font == nullptr)
    return;
  if (!p.title.empty())
    canvas.text(*font, p.title, ox + kPad, oy + kPad, false);
  const int th = font->height();
  for (size_t r = 0; r < p.rows.size(); ++r) { // right-aligned beside the row
    canvas.text(
        *font, p.rows[r], left - kPad - font->width(p.rows[r]),
        top + kCell * static_cast<int>(r) + (kCell - th) / 2, false);
  }
  for (size_t c = 0; c < p.columns.size(); ++c) // reading upwards
    canvas.text(
        *font, p.columns[c], left + kCell * static_cast<int>(c) + (kCell - th) / 2, top - kPad,
        true);
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  if (!out)
    throw std::runtime_error("cannot write '" + path + "'");
}

} // namespace

void write_heatmap_grid_svg(
    const std::string& path, const std::vector<HeatmapPanel>& panels, int per_row) {
  check_panels(panels);
  std::vector<Box> boxes;
  for (const auto& p : panels) {
    boxes.push_back(box_of(
        p, 16, static_cast<int>(utf8_decode(p.title).size()) * 9,
        static_cast<int>(longest(p.rows)) * 9, static_cast<int>(longest(p.columns)) * 9));
  }
  int width = 0, height = 0;
  const auto origins = layout(boxes, per_row, width, height);
  std::ostringstream svg;
  svg << fmt::format(
             R"svg(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="DejaVu Sans, sans-serif" font-size="14">)svg",
             width, height)
      << "\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (size_t i = 0; i < panels.size(); ++i)
    svg_panel(svg, panels[i], boxes[i], origins[i].first, origins[i].second);
  svg << "</svg>\n";
  write_file(path, svg.str());
}

void write_heatmap_grid_png(
    const std::string& path, const std::vector<HeatmapPanel>& panels, int per_row) {
  check_panels(panels);
  Font font;
  const bool labels = font.load();
  if (!labels) {
    fmt::print(
        stderr,
        "plot: warning: no TrueType font (install fonts-dejavu-core or set TORCHATTN_FONT); "
        "'{}' has no labels\n",
        path);
  }
  std::vector<Box> boxes;
  for (const auto& p : panels) {
    int row_label = 0, col_label = 0;
    if (labels) {
      for (const auto& r : p.rows)
        row_label = std::max(row_label, font.width(r));
      for (const auto& c : p.columns)
        col_label = std::max(col_label, font.width(c));
    }
    boxes.push_back(box_of(
        p, labels ? font.height() : 0, labels ? font.width(p.title) : 0, row_label, col_label));
  }
  int width = 0, height = 0;
  const auto origins = layout(boxes, per_row, width, height);
  Canvas canvas(width, height);
  for (size_t i = 0; i < panels.size(); ++i) {
    png_panel(
        canvas, labels ? &font : nullptr, panels[i], boxes[i], origins[i].first, origins[i].second);
  }
  if (stbi_write_png(path.c_str(), width, height, 3, canvas.img.data(), width * 3) == 0)
    throw std::runtime_error("cannot write '" + path + "'");
}

void write_heatmap_svg(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows) {
  write_heatmap_grid_svg(path, {HeatmapPanel{"", weights, columns, rows}}, 1);
}

void write_heatmap_png(
    const std::string& path, const torch::Tensor& weights, const std::vector<std::string>& columns,
    const std::vector<std::string>& rows) {
  write_heatmap_grid_png(path, {HeatmapPanel{"", weights, columns, rows}}, 1);
}

} // namespace translate
