// A small line-plot writer: several named series of (x, y) points as a standalone SVG with axes, ticks,
// a legend and a title; no dependencies.
#pragma once

#include <string>
#include <vector>

namespace lora::tools {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // equal lengths
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 760, height = 460;
};

// The SVG document. Axis ranges cover every point (y padded by 5%); ticks at 1, 2 or 5 times a power of
// ten. Throws lora::Error when there is no point or a series' x and y differ in length.
std::string line_plot_svg(const std::vector<PlotSeries>& series, const PlotOptions& options);

// "Nice" tick positions covering [lo, hi], about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

}  // namespace lora::tools
