// The heatmap writer of the subspace analysis (svg_heatmap.h).
#include "experiments/replication/svg_heatmap.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace lora::replicate {

namespace {

std::string escape(const std::string& s) {
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

// White (0) to dark blue (1), linear in each channel.
std::string colour(double v) {
  const double t = std::clamp(v, 0.0, 1.0);
  const auto mix = [t](int from, int to) { return static_cast<int>(std::lround(from + (to - from) * t)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(255, 8), mix(255, 48), mix(255, 107));
}

}  // namespace

std::string heatmap_svg(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& o) {
  LORA_CHECK(!panels.empty(), "heatmap: no panel");
  for (const auto& p : panels) {
    LORA_CHECK(!p.values.empty() && !p.values[0].empty(), "heatmap: panel '{}' is empty", p.title);
    for (const auto& row : p.values) {
      LORA_CHECK(row.size() == p.values[0].size(), "heatmap: panel '{}' has rows of different lengths", p.title);
    }
  }
  const int left = 60, top = 56, gap = 50, scale_width = 90;
  std::vector<int> x0;
  int x = left, height = 0;
  for (const auto& p : panels) {
    x0.push_back(x);
    x += static_cast<int>(p.values[0].size()) * o.cell_width + gap;
    height = std::max(height, static_cast<int>(p.values.size()) * o.cell_height);
  }
  const int width = x + scale_width, total_height = top + height + 56;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, total_height, width, total_height);
  svg += fmt::format("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n", width / 2,
                     escape(o.title));
  for (size_t k = 0; k < panels.size(); ++k) {
    const auto& p = panels[k];
    const int rows = static_cast<int>(p.values.size()), cols = static_cast<int>(p.values[0].size());
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n",
                       x0[k] + cols * o.cell_width / 2, top - 10, escape(p.title));
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) {
        const double v = p.values[static_cast<size_t>(i)][static_cast<size_t>(j)];
        svg += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>i={} j={}: {:.3f}</title></rect>\n",
            x0[k] + j * o.cell_width, top + i * o.cell_height, o.cell_width, o.cell_height, colour(v), i + 1, j + 1, v);
      }
      svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", x0[k] - 4,
                         top + i * o.cell_height + o.cell_height / 2 + 4, i + 1);
    }
    const int tick = cols > 16 ? 8 : 1;  // column labels: every 8th of a wide panel
    for (int j = 0; j < cols; ++j) {
      if ((j + 1) % tick != 0 && j != 0) continue;
      svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                         x0[k] + j * o.cell_width + o.cell_width / 2, top + rows * o.cell_height + 14, j + 1);
    }
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x0[k] + cols * o.cell_width / 2,
                       top + rows * o.cell_height + 32, escape(o.x_label));
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>\n",
                       x0[k] - 30, top + rows * o.cell_height / 2, x0[k] - 30, top + rows * o.cell_height / 2,
                       escape(o.y_label));
  }
  // The colour scale: 0 at the bottom, 1 at the top.
  const int sx = x, steps = 10;
  for (int s = 0; s < steps; ++s) {
    const double v = 1.0 - (s + 0.5) / steps;
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"{}\" fill=\"{}\"/>\n", sx,
                       top + s * height / steps, height / steps + 1, colour(v));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\">1</text>\n<text x=\"{}\" y=\"{}\">0</text>\n", sx + 18, top + 8, sx + 18,
                     top + height);
  svg += "</svg>\n";
  return svg;
}

}  // namespace lora::replicate
