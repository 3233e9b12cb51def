// replicate_lora's analyses of finished runs: the subspace similarity of the r = 8 and r = 64 adapters (the
// paper's section 7.2), and the step-time measurement of full fine-tuning against LoRA (claim 3), which is
// run on its own (--step-timing) on a quiet machine.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <numeric>

#include "backends/backend.h"
#include "core/random.h"
#include "experiments/replication/replication_internal.h"
#include "experiments/replication/subspace.h"
#include "experiments/replication/svg_heatmap.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "train/train_step.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

namespace {

json matrix_json(const Matrix& m) {
  json rows = json::array();
  for (int64_t i = 0; i < m.rows; ++i) {
    json row = json::array();
    for (int64_t j = 0; j < m.cols; ++j) row.push_back(m.at(i, j));
    rows.push_back(row);
  }
  return rows;
}

// Each adapted layer's A per slice ("q", "v"): [r, in] in double.
std::vector<std::pair<std::string, Matrix>> adapter_a_matrices(models::CausalLM& model) {
  std::vector<std::pair<std::string, Matrix>> out;
  for (const auto& [path, layer] : nn::lora_layers(model)) {
    const std::vector<float> a = layer->lora_A.to(Device::cpu()).to_vector<float>();  // [S r, in]
    const int64_t r = layer->rank(), in = layer->in_features(), S = static_cast<int64_t>(layer->slices().size());
    const int64_t width = layer->out_features() / 3;  // GPT-2's fused c_attn: q, k, v of n_embd each
    for (int64_t s = 0; s < S; ++s) {
      const int64_t offset = layer->slices()[static_cast<size_t>(s)].offset;
      const std::string slice = offset == 0 ? "q" : offset == width ? "k" : "v";
      Matrix m{r, in, std::vector<double>(a.begin() + s * r * in, a.begin() + (s + 1) * r * in)};
      out.emplace_back(path + "." + slice, std::move(m));
    }
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// phi(A_r8, A_r64, i, j) for every adapted layer and slice, beside two random Gaussian matrices of the same
// shapes (the baseline at this width); the heatmap shows the last layer's q and v.

int stage_subspace(const Options& o) {
  const fs::path done = fs::path(o.out) / "subspace.json";
  const RunSpec r8{"lora_qv_r8", true, "q,v", 8}, r64{"lora_qv_r64", true, "q,v", 64};
  if (chosen_dir(o, r8.name).empty() || chosen_dir(o, r64.name).empty()) {
    return fmt::print("subspace: skipped (needs the lora_qv_r8 and lora_qv_r64 runs)\n"), 0;
  }
  const json inputs = {chosen_dir(o, r8.name).string(), chosen_dir(o, r64.name).string()};
  if (stage_current(done, inputs)) return fmt::print("subspace: done\n"), 0;
  auto m8 = load_run_model(o, r8), m64 = load_run_model(o, r64);
  const auto a8 = adapter_a_matrices(*m8), a64 = adapter_a_matrices(*m64);
  LORA_CHECK(a8.size() == a64.size() && !a8.empty(), "subspace: the r = 8 and r = 64 adapters adapt different layers");
  json layers = json::array();
  for (size_t k = 0; k < a8.size(); ++k) {
    const Matrix phi = subspace_similarity(a8[k].second, a64[k].second);
    double mean = 0;
    for (double v : phi.v) mean += v;
    layers.push_back({{"matrix", a8[k].first},
                      {"phi", matrix_json(phi)},
                      {"phi_1_1", phi.at(0, 0)},
                      {"phi_1_64", phi.at(0, phi.cols - 1)},
                      {"phi_8_64", phi.at(phi.rows - 1, phi.cols - 1)},
                      {"mean", mean / static_cast<double>(phi.v.size())}});
  }
  const int64_t d = a8[0].second.cols;
  Generator gen(o.seed + 1);
  auto random_matrix = [&](int64_t rows) {
    Matrix m{rows, d, std::vector<double>(static_cast<size_t>(rows * d))};
    for (double& v : m.v) v = gen.normal();
    return m;
  };
  const Matrix baseline = subspace_similarity(random_matrix(8), random_matrix(64));
  json result = {{"width", d},
                       {"layers", layers},
                       {"random_baseline", matrix_json(baseline)},
                       {"random_baseline_phi_1_64", baseline.at(0, 63)},
                       {"definition",
                        "phi(A1, A2, i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j), U the right-singular "
                        "vectors of A (Hu et al. 2021, section 7.2)"}};
  // The heatmap: the last layer's q and v, and the random baseline.
  std::vector<HeatmapPanel> panels;
  auto rows_of = [](const json& m) { return m.get<std::vector<std::vector<double>>>(); };
  for (size_t k = layers.size() - 2; k < layers.size(); ++k) {
    panels.push_back({layers[k]["matrix"].get<std::string>(), rows_of(layers[k]["phi"])});
  }
  panels.push_back({"two random matrices (baseline)", rows_of(result["random_baseline"])});
  write_text_atomically(
      fs::path(o.report_dir) / "subspace_similarity.svg",
      heatmap_svg(panels, {.title = "phi(A_r=8, A_r=64, i, j): subspace similarity of the adapters' A",
                           .x_label = "j (r = 64)",
                           .y_label = "i (r = 8)",
                           .cell_width = 5}));
  fmt::print("subspace: last layer q phi(1, 64) = {:.3f}, v {:.3f}; random baseline {:.3f}\n",
             layers[layers.size() - 2]["phi_1_64"].get<double>(), layers.back()["phi_1_64"].get<double>(),
             baseline.at(0, 63));
  result["inputs"] = inputs;
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Step time of full fine-tuning against LoRA, measured apart from the long run: the variants take turns
// (the order rotated every round), `steps_per_turn` steps each on the same fixed batch, and the medians are
// compared. Run it through a quiet-machine wrapper; the load average at start and end is recorded.

namespace {
std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one;
}
}  // namespace

// The model the step times are taken on: the pre-trained base, or, before pre-training has finished, the
// seeded initialisation of the same shape (a step's time does not depend on the weights' values).
std::shared_ptr<models::CausalLM> timing_model(const Options& o, const Data& d, std::string& weights) {
  if (!o.weights.empty() || fs::exists(fs::path(o.out) / "pretrain" / "model")) {
    weights = "the pre-trained base";
    return load_base(o);
  }
  weights = "the seeded initialisation (pre-training not finished; the shapes are the same)";
  auto model = models::create_model({model_config(o, d), "replicate_lora"}, o.seed);
  model->to(Device::parse(o.device));
  return model;
}

int stage_step_timing(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "step_timing.json";
  struct Variant {
    std::string name;
    std::shared_ptr<models::CausalLM> model;
    std::unique_ptr<optim::AdamW> optimizer;
    std::vector<double> times;
  };
  std::string weights;
  auto make_variant = [&](const RunSpec& spec) {
    Variant v{spec.name, timing_model(o, d, weights), nullptr, {}};
    if (spec.lora) {
      nn::LoRAConfig c;
      c.options.rank = spec.rank, c.options.alpha = o.lora_alpha, c.options.seed = o.seed;
      c.targets = nn::LoRAConfig::parse_targets(spec.targets);
      models::apply_lora(*v.model, c);
    }
    v.optimizer =
        std::make_unique<optim::AdamW>(v.model->parameters(true), optim::AdamOptions{.lr = 1e-4, .weight_decay = 0.0});
    v.model->train();
    return v;
  };
  std::vector<RunSpec> specs;
  for (const auto& spec : all_runs()) {
    if (spec.name == "full" || spec.name == "lora_qv_r8" || spec.name == "lora_all_r8") specs.push_back(spec);
  }
  std::vector<int64_t> rows(static_cast<size_t>(o.ft_batch));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  auto step = [&](Variant& v, const Tensor& x, const Tensor& y) {  // the runs' step: train::train_step
    train::Batch batch;
    batch.ids = x, batch.targets = y, batch.trained_tokens = count_targets(d.train, rows);
    batch.sequences = static_cast<int64_t>(rows.size());
    const train::StepResult r = train::train_step(*v.model, *v.optimizer, {batch}, {.grad_clip = 1.0});
    LORA_CHECK(r.applied, "step timing, {}: {}", v.name, r.nonfinite);
  };
  // Memory, by the allocator: each variant alone (its model the only one alive), two steps, the peak.
  json memory;
  for (const auto& spec : specs) {
    Variant v = make_variant(spec);
    Tensor x, y;
    make_lm_batch(d.train, rows, d.eot, x, y, v.model->device());
    MemoryTracker::instance().reset_peaks();
    for (int s = 0; s < 2; ++s) step(v, x, y);
    memory[spec.name] = memory_json(MemoryTracker::instance().stats(v.model->device()));
  }
  // Time: the variants side by side, taking turns.
  std::vector<Variant> variants;
  for (const auto& spec : specs) variants.push_back(make_variant(spec));
  Tensor x, y;
  make_lm_batch(d.train, rows, d.eot, x, y, variants[0].model->device());
  const std::string load_before = loadavg();
  const int steps_per_turn = 3;
  const auto t_start = Clock::now();
  for (int64_t round = 0; round <= o.timing_rounds; ++round) {  // round 0 warms up and is not counted
    for (size_t k = 0; k < variants.size(); ++k) {
      Variant& v = variants[(k + static_cast<size_t>(round)) % variants.size()];
      for (int s = 0; s < steps_per_turn; ++s) {
        const auto t0 = Clock::now();
        step(v, x, y);
        if (round > 0) v.times.push_back(seconds_since(t0));
      }
    }
  }
  json result = {{"rounds", o.timing_rounds},
                 {"steps_per_turn", steps_per_turn},
                 {"batch", o.ft_batch},
                 {"tokens_per_step", x.shape()[0] * x.shape()[1]},
                 {"threads", num_threads()},
                 {"load_average_before", load_before},
                 {"load_average_after", loadavg()},
                 {"seconds", seconds_since(t_start)},
                 {"weights", weights},
                 {"memory", memory}};
  double full_median = 0;
  for (auto& v : variants) {
    std::vector<double> t = v.times;
    std::sort(t.begin(), t.end());
    const double median = t[t.size() / 2], q1 = t[t.size() / 4], q3 = t[3 * t.size() / 4];
    if (v.name == "full") full_median = median;
    result["variants"][v.name] = {{"median_s", median},
                                  {"p25_s", q1},
                                  {"p75_s", q3},
                                  {"steps", t.size()},
                                  {"peak_bytes", memory[v.name]["global_peak_bytes"]}};
  }
  for (auto& v : variants) {
    result["variants"][v.name]["vs_full"] = result["variants"][v.name]["median_s"].get<double>() / full_median;
    fmt::print("step time {}: median {:.4f} s (p25 {:.4f}, p75 {:.4f}), {:.3f} x full\n", v.name,
               result["variants"][v.name]["median_s"].get<double>(), result["variants"][v.name]["p25_s"].get<double>(),
               result["variants"][v.name]["p75_s"].get<double>(), result["variants"][v.name]["vs_full"].get<double>());
  }
  write_json_atomically(done, result);
  return 0;
}

}  // namespace lora::replicate
