// A small heatmap writer: one or more panels of a matrix of values in [0, 1] side by side as a standalone
// SVG, one cell per entry (white 0 to dark blue 1), with axis labels, tick labels and a colour scale.
#pragma once

#include <string>
#include <vector>

namespace lora::replicate {

struct HeatmapPanel {
  std::string title;
  std::vector<std::vector<double>> values;  // values[row][column], every row the same length, each in [0, 1]
};

struct HeatmapOptions {
  std::string title, x_label, y_label;
  int cell_width = 7, cell_height = 18;
};

// Row i and column j are labelled i + 1 and j + 1 (ranks). Throws lora::Error on an empty or ragged panel.
std::string heatmap_svg(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& options);

}  // namespace lora::replicate
