// train_mlp: rung 2 of the ladder. A small classifier (an nn::Module of three Linear layers) trained on a
// synthetic 2-D problem, once with SGD (momentum) and once with Adam from the same initial weights; prints
// loss and accuracy as they train, and writes an SVG of both decision boundaries over the data.
//
//   train_mlp                                   # 3 interleaved spirals, 2000 full-batch steps each
//   train_mlp --dataset moons --steps 300 --out runs/moons.svg
//
// Read next: nn/module.h (parameters, children, named_parameters), nn/linear.h, optim/sgd.h and
// optim/adam.h (the update rules, written out), autograd/ops/cross_entropy.cpp; then
// examples/train_char_gpt.cpp (rung 3: the same loop on a GPT).
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "nn/linear.h"
#include "optim/adam.h"
#include "optim/sgd.h"

using namespace lora;

namespace {

// ---------------------------------------------------------------------------------------------------
// Data: points [n, 2] and their classes [n]

struct Dataset {
  std::vector<float> points;    // [n, 2], row-major
  std::vector<int32_t> labels;  // [n]
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

// K spirals, as in Stanford's CS231n: point i of class k sits at radius r = i / (n - 1) and angle
// t = 4 k + 4 r + noise (radians), i.e. (r sin t, r cos t): each arm winds once around the origin.
Dataset make_spirals(int64_t classes, int64_t per_class, double noise, Generator& gen) {
  Dataset d;
  for (int64_t k = 0; k < classes; ++k) {
    for (int64_t i = 0; i < per_class; ++i) {
      const double r = static_cast<double>(i) / static_cast<double>(std::max<int64_t>(per_class - 1, 1));
      const double t = 4.0 * static_cast<double>(k) + 4.0 * r + noise * gen.normal();
      d.points.push_back(static_cast<float>(r * std::sin(t)));
      d.points.push_back(static_cast<float>(r * std::cos(t)));
      d.labels.push_back(static_cast<int32_t>(k));
    }
  }
  return d;
}

// Two interleaving half circles (scikit-learn's make_moons): class 0 on (cos a, sin a), class 1 on
// (1 - cos a, 0.5 - sin a), a ~ U[0, pi), plus Gaussian noise on both coordinates.
Dataset make_moons(int64_t per_class, double noise, Generator& gen) {
  Dataset d;
  for (int32_t k = 0; k < 2; ++k) {
    for (int64_t i = 0; i < per_class; ++i) {
      const double a = M_PI * gen.uniform();
      const double px = k == 0 ? std::cos(a) : 1.0 - std::cos(a), py = k == 0 ? std::sin(a) : 0.5 - std::sin(a);
      d.points.push_back(static_cast<float>(px + noise * gen.normal()));
      d.points.push_back(static_cast<float>(py + noise * gen.normal()));
      d.labels.push_back(k);
    }
  }
  return d;
}

// ---------------------------------------------------------------------------------------------------
// The model: logits = fc3(relu(fc2(relu(fc1(x)))))

class MLP : public nn::Module {
 public:
  MLP(int64_t hidden, int64_t classes, Generator& gen)
      : fc1(std::make_shared<nn::Linear>(2, hidden, true, gen)),
        fc2(std::make_shared<nn::Linear>(hidden, hidden, true, gen)),
        fc3(std::make_shared<nn::Linear>(hidden, classes, true, gen)) {
    register_module("fc1", fc1);  // parameters are then named fc1.weight, fc1.bias, ...
    register_module("fc2", fc2);
    register_module("fc3", fc3);
  }
  // x [n, 2] -> logits [n, classes]
  Tensor forward(const Tensor& x) { return fc3->forward(ops::relu(fc2->forward(ops::relu(fc1->forward(x))))); }

  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
};

// The predicted class of each row: argmax over the logits [n, classes].
std::vector<int32_t> predict(MLP& model, const std::vector<float>& points) {
  NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(points.size() / 2);
  const Tensor logits = model.forward(Tensor::from_vector(points, {n, 2}));
  const int64_t classes = logits.size(1);
  const std::vector<float> l = logits.to_vector<float>();
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<int32_t>(std::max_element(l.begin() + i * classes, l.begin() + (i + 1) * classes) -
                                  (l.begin() + i * classes));
  }
  return out;
}

double accuracy(MLP& model, const Dataset& d) {
  const std::vector<int32_t> p = predict(model, d.points);
  int64_t right = 0;
  for (int64_t i = 0; i < d.size(); ++i) right += p[i] == d.labels[i];
  return static_cast<double>(right) / static_cast<double>(d.size());
}

// ---------------------------------------------------------------------------------------------------
// The SVG: one panel per optimizer, the plane coloured by predicted class, the training points on top

struct Panel {
  std::string title;
  std::shared_ptr<MLP> model;
};

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

// A colour a quarter of the way from white: c' = 0.25 c + 0.75 * 255 per channel. Opaque, so the slightly
// overlapping cells of a region show no seams.
std::string light(const char* hex) {
  std::string out = "#";
  for (int i = 0; i < 3; ++i) {
    const int c = std::stoi(std::string(hex + 1 + 2 * i, 2), nullptr, 16);
    out += fmt::format("{:02x}", static_cast<int>(0.25 * c + 0.75 * 255 + 0.5));
  }
  return out;
}

void write_svg(const std::string& path, const std::vector<Panel>& panels, const Dataset& data, int64_t grid) {
  // A square window over the data with a 10% margin.
  float lo_x = 1e30f, hi_x = -1e30f, lo_y = 1e30f, hi_y = -1e30f;
  for (int64_t i = 0; i < data.size(); ++i) {
    lo_x = std::min(lo_x, data.points[2 * i]), hi_x = std::max(hi_x, data.points[2 * i]);
    lo_y = std::min(lo_y, data.points[2 * i + 1]), hi_y = std::max(hi_y, data.points[2 * i + 1]);
  }
  const double span = 1.2 * std::max(hi_x - lo_x, hi_y - lo_y), cx = 0.5 * (lo_x + hi_x), cy = 0.5 * (lo_y + hi_y);
  const double x0 = cx - span / 2, y0 = cy - span / 2;
  const double size = 320, cell = size / static_cast<double>(grid), pad = 30;
  // Pixel (px, py) shows the point (x0 + px / size * span, y0 + (size - py) / size * span): y grows upwards.
  auto to_px = [&](double x) { return (x - x0) / span * size; };
  auto to_py = [&](double y) { return size - (y - y0) / span * size; };

  std::vector<float> centres;  // the centre of every grid cell, row by row from the top
  for (int64_t row = 0; row < grid; ++row) {
    for (int64_t col = 0; col < grid; ++col) {
      centres.push_back(static_cast<float>(x0 + (static_cast<double>(col) + 0.5) / static_cast<double>(grid) * span));
      centres.push_back(
          static_cast<float>(y0 + span - (static_cast<double>(row) + 0.5) / static_cast<double>(grid) * span));
    }
  }
  const double width = pad + static_cast<double>(panels.size()) * (size + pad), height = size + 2 * pad;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" font-family=\"sans-serif\" "
      "font-size=\"13\">\n<!-- train_mlp: the plane coloured by the class each MLP predicts, the training points on "
      "top -->\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height);
  for (size_t p = 0; p < panels.size(); ++p) {
    svg +=
        fmt::format("<g class=\"panel\" transform=\"translate({:.0f},{:.0f})\">\n<text x=\"0\" y=\"-10\">{}</text>\n",
                    pad + static_cast<double>(p) * (size + pad), pad, panels[p].title);
    // Decision regions: each row of cells as runs of one class, one rect per run, grouped by class (the
    // group carries the colour) to keep the file small.
    const std::vector<int32_t> cls = predict(*panels[p].model, centres);
    const int32_t classes = *std::max_element(data.labels.begin(), data.labels.end()) + 1;
    for (int32_t k = 0; k < classes; ++k) {
      svg += fmt::format("<g fill=\"{}\">\n", light(kColors[k % 8]));
      for (int64_t row = 0; row < grid; ++row) {
        for (int64_t col = 0; col < grid;) {
          int64_t end = col;
          while (end < grid && cls[row * grid + end] == cls[row * grid + col]) ++end;
          if (cls[row * grid + col] == k) {
            svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\"/>\n",
                               static_cast<double>(col) * cell, static_cast<double>(row) * cell,
                               static_cast<double>(end - col) * cell + 0.2, cell + 0.2);
          }
          col = end;
        }
      }
      svg += "</g>\n";
    }
    // The training points, coloured by their true class.
    for (int32_t k = 0; k < classes; ++k) {
      svg += fmt::format("<g fill=\"{}\" stroke=\"white\" stroke-width=\"0.5\">\n", kColors[k % 8]);
      for (int64_t i = 0; i < data.size(); ++i) {
        if (data.labels[i] != k) continue;
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\"/>\n", to_px(data.points[2 * i]),
                           to_py(data.points[2 * i + 1]));
      }
      svg += "</g>\n";
    }
    svg += fmt::format("<rect width=\"{0:.0f}\" height=\"{0:.0f}\" fill=\"none\" stroke=\"#444\"/>\n</g>\n", size);
  }
  svg += "</svg>\n";
  const std::filesystem::path out(path);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::ofstream file(out);
  file << svg;
  LORA_CHECK(file.good(), "--out '{}': cannot write the SVG", path);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Train a small MLP classifier on a 2-D problem with SGD and with Adam; write the decision boundaries "
      "as an SVG."};
  std::string dataset = "spirals", out = "runs/train_mlp.svg";
  int64_t classes = 3, per_class = 100, hidden = 64, steps = 2000, grid = 80, log_every = 200, threads = 1;
  double noise = -1, sgd_lr = 0.1, momentum = 0.9, adam_lr = 0.01;
  uint64_t seed = 0;
  bool json = false;
  app.add_option("--dataset", dataset, "spirals or moons")
      ->check(CLI::IsMember({"spirals", "moons"}))
      ->capture_default_str();
  app.add_option("--classes", classes, "spiral arms (spirals only; moons has 2)")
      ->check(CLI::Range(2, 8))
      ->capture_default_str();
  app.add_option("--points", per_class, "training points per class (as many again are held out)")
      ->check(CLI::Range(2, 100000))
      ->capture_default_str();
  app.add_option("--noise", noise, "noise of the points (default: 0.2 rad for spirals, 0.1 for moons)")
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--hidden", hidden, "width of the two hidden layers")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--steps", steps, "full-batch steps per optimizer")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--sgd-lr", sgd_lr, "SGD learning rate")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  app.add_option("--momentum", momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999))->capture_default_str();
  app.add_option("--adam-lr", adam_lr, "Adam learning rate")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  app.add_option("--out", out, "the SVG to write")->capture_default_str();
  app.add_option("--grid", grid, "cells per side of the decision-boundary picture")
      ->check(CLI::Range(2, 400))
      ->capture_default_str();
  app.add_option("--log-every", log_every, "print loss and accuracy every N steps")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--seed", seed, "seed of the data and of the initial weights")->capture_default_str();
  app.add_option("--threads", threads, "threads for the kernels (a problem this small runs fastest on one)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_flag("--json", json, "end with one JSON line of the final accuracies");
  CLI11_PARSE(app, argc, argv);

  try {
    // Each op here works on a few hundred rows: splitting that across threads costs more in synchronisation
    // than it saves (on 2 busy cores, 15 ms a step on two threads against 1.3 ms on one).
    set_num_threads(static_cast<int>(threads));
    if (dataset == "moons") classes = 2;
    if (noise < 0) noise = dataset == "moons" ? 0.1 : 0.2;
    Generator data_gen(seed);
    auto make = [&] {
      return dataset == "moons" ? make_moons(per_class, noise, data_gen)
                                : make_spirals(classes, per_class, noise, data_gen);
    };
    const Dataset train = make(), held_out = make();                        // two draws of the same distribution
    const Tensor X = Tensor::from_vector(train.points, {train.size(), 2});  // [n, 2]
    const Tensor Y = Tensor::from_vector(train.labels, {train.size()});     // [n] class ids
    fmt::print("data: {} ({} classes), {} training points, {} held out, noise {}\n", dataset, classes, train.size(),
               held_out.size(), noise);

    // Both optimizers start from the same weights (the same seed): the difference is the update rule.
    //   SGD with momentum:  buf = mu buf + g;   p -= lr buf
    //   Adam:               m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr m^ / (sqrt(v^) + eps)
    //                       (m^, v^: m and v divided by 1 - b^t, undoing their start at zero)
    std::vector<Panel> panels;
    nlohmann::json results = nlohmann::json::object();
    for (const std::string name : {"sgd", "adam"}) {
      Generator init(seed + 1);
      auto model = std::make_shared<MLP>(hidden, classes, init);
      std::unique_ptr<optim::Optimizer> opt;
      if (name == "sgd")
        opt = std::make_unique<optim::SGD>(model->parameters(), optim::SgdOptions{.lr = sgd_lr, .momentum = momentum});
      else
        opt = std::make_unique<optim::Adam>(model->parameters(), optim::AdamOptions{.lr = adam_lr});
      const std::string label = name == "sgd" ? fmt::format("SGD (lr {:g}, momentum {:g})", sgd_lr, momentum)
                                              : fmt::format("Adam (lr {:g})", adam_lr);
      fmt::print("\n== {}: {} parameters\n", label, model->num_parameters());
      const auto t0 = std::chrono::steady_clock::now();
      double loss_value = 0;
      int64_t step_95 = 0;  // the first step (checked every 10) with 95% of the training points right
      for (int64_t step = 1; step <= steps; ++step) {
        Tensor loss = ops::cross_entropy(model->forward(X), Y);  // mean of -log softmax(logits)[label]
        backward(loss);                                          // fills .grad of the six parameters
        opt->step();
        opt->zero_grad();
        loss_value = loss.item();
        if (step_95 == 0 && step % 10 == 0 && accuracy(*model, train) >= 0.95) step_95 = step;
        if (step % log_every == 0 || step == steps) {
          const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          fmt::print("step {:>6}/{} | loss {:.4f} | train accuracy {:5.1f}% | {:.1f} s | ETA {:.1f} s\n", step, steps,
                     loss_value, 100 * accuracy(*model, train), elapsed,
                     elapsed / static_cast<double>(step) * static_cast<double>(steps - step));
          std::fflush(stdout);
        }
      }
      const double train_acc = accuracy(*model, train), held_acc = accuracy(*model, held_out);
      fmt::print(
          "{}: loss {:.4f}, accuracy {:.1f}% on the training points, {:.1f}% held out; 95% of the training "
          "points right after {}\n",
          label, loss_value, 100 * train_acc, 100 * held_acc,
          step_95 > 0 ? fmt::format("{} steps", step_95) : std::string("never"));
      results[name] = {{"loss", loss_value},
                       {"train_accuracy", train_acc},
                       {"held_out_accuracy", held_acc},
                       {"steps_to_95", step_95}};
      panels.push_back({fmt::format("{}: {:.1f}% held out", label, 100 * held_acc), model});
    }
    write_svg(out, panels, train, grid);
    fmt::print("\nwrote {} (the decision boundaries: left SGD, right Adam)\n", out);
    if (json) fmt::print("{}\n", results.dump());
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
