// replicate_lora's fine-tuning runs: one run per (configuration, learning rate) of the sweep, the choice of
// each configuration's run on the E2E validation loss (never the test set), the chosen run's evaluation
// (greedy generations for the test MRs, BLEU, ROUGE-L), and the style adapter for the switching stage.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <optional>

#include "backends/backend.h"
#include "experiments/replication/replication_internal.h"
#include "experiments/replication/text_metrics.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/lr_schedule.h"
#include "tools/train_report.h"
#include "train/train_step.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

json memory_json(const DeviceMemoryStats& s) {
  json at_peak, own_peak;
  for (int c = 0; c < kNumMemoryCategories; ++c) {
    const auto cat = static_cast<MemoryCategory>(c);
    at_peak[std::string(category_name(cat))] = s.live_at_peak[cat];
    own_peak[std::string(category_name(cat))] = s.peak[cat];
  }
  return {{"global_peak_bytes", s.global_peak}, {"at_global_peak", at_peak}, {"category_peaks", own_peak}};
}

namespace {

// Bytes of the adapter's tensors in PEFT's layout: per layer with S adapted slices, A [S r, in] and
// B [out, S r] (a sliced layer's B carries zero rows for the slices it does not adapt), 4 bytes each.
int64_t expected_adapter_data_bytes(const models::CausalLM& model) {
  int64_t n = 0;
  for (const auto& [path, layer] : nn::lora_layers(model)) {
    const int64_t S = static_cast<int64_t>(layer->slices().size()), r = layer->rank();
    n += S * r * layer->in_features() + layer->out_features() * S * r;
  }
  return 4 * n;
}

// The data section of a safetensors file: its size less the 8-byte length and the header.
int64_t safetensors_data_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  LORA_CHECK(in.good(), "'{}': no safetensors header", file.string());
  return static_cast<int64_t>(fs::file_size(file)) - 8 - static_cast<int64_t>(header);
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

bool bit_identical(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                   const std::vector<std::pair<std::string, std::vector<float>>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || a[i].second.size() != b[i].second.size()) return false;
    if (std::memcmp(a[i].second.data(), b[i].second.data(), a[i].second.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

fs::path run_dir(const Options& o, const std::string& name) {
  return fs::path(o.out) / "runs" / name;
}

std::string lr_text(double lr) {
  return fmt::format("{:.1e}", lr);
}

fs::path sweep_dir(const Options& o, const std::string& name, double lr) {
  return run_dir(o, name) / ("lr-" + lr_text(lr));
}

// The configured grid, then one learning rate at a time past whichever edge holds the lowest validation loss
// (twice the top, half the bottom) until the loss turns inside the sweep or --sweep-extensions rates were
// added. It reads only finished runs, so a resumed experiment extends its sweeps exactly as before.
std::vector<double> sweep_lrs(const Options& o, const RunSpec& spec) {
  std::vector<double> lrs = spec.lora ? o.lora_lrs : o.full_lrs;
  for (int64_t added = 0; added < o.sweep_extensions && !lrs.empty(); ++added) {
    std::optional<double> best_lr;
    double best = 0;
    for (double lr : lrs) {
      const fs::path f = sweep_dir(o, spec.name, lr) / "train.json";
      if (!fs::exists(f)) return lrs;  // not finished: the rest of the sweep decides
      const json loss = read_json(f).at("heldout_loss");
      if (loss.is_null()) continue;  // diverged
      if (!best_lr || loss.get<double>() < best) best = loss.get<double>(), best_lr = lr;
    }
    const auto [lowest, highest] = std::minmax_element(lrs.begin(), lrs.end());
    if (!best_lr || lrs.size() < 2) return lrs;  // nothing to follow (every run diverged, or one rate asked)
    if (*best_lr == *highest) {
      lrs.push_back(*highest * 2);
    } else if (*best_lr == *lowest) {
      lrs.push_back(*lowest / 2);
    } else {
      return lrs;  // the loss turned inside the sweep
    }
  }
  return lrs;
}

bool stage_current(const fs::path& done, const json& inputs) {
  return fs::exists(done) && read_json(done).value("inputs", json()) == inputs;
}

fs::path chosen_dir(const Options& o, const std::string& name) {
  const fs::path chosen = run_dir(o, name) / "chosen.json";
  if (!fs::exists(chosen)) return {};
  const json folder = read_json(chosen).at("folder");
  return folder.is_null() ? fs::path() : run_dir(o, name) / folder.get<std::string>();  // null: every run diverged
}

nn::LoRAConfig lora_config(const Options& o, const std::string& targets, int64_t rank) {
  nn::LoRAConfig c;
  c.options.rank = rank;
  c.options.alpha = o.lora_alpha;  // constant in r: the scale alpha / r falls as the rank grows (the paper's choice)
  c.options.seed = o.seed;
  c.targets = nn::LoRAConfig::parse_targets(targets);
  return c;
}

// ---------------------------------------------------------------------------------------------------
// One run of a configuration's sweep. Every run takes the same steps over the same examples in the same
// order (a seeded permutation of the training set per epoch), so runs differ only in what they train.

int stage_finetune(const Options& o, const Data& d, const RunSpec& spec, double lr) {
  const fs::path dir = sweep_dir(o, spec.name, lr), done = dir / "train.json";
  if (fs::exists(done)) return fmt::print("fine-tune {} lr {}: done\n", spec.name, lr_text(lr)), 0;
  fmt::print("== fine-tune {} at lr {}: {}\n", spec.name, lr_text(lr),
             spec.lora ? fmt::format("LoRA r={} alpha={} on {}", spec.rank, o.lora_alpha, spec.targets)
                       : std::string("all parameters"));
  auto model = load_base(o);
  const auto before = snapshot_weights(*model);
  if (spec.lora) models::apply_lora(*model, lora_config(o, spec.targets, spec.rank));
  optim::AdamW optimizer(model->parameters(true), {.lr = lr, .weight_decay = 0.0});
  // The paper's schedule: linear decay to zero after a warm-up.
  optim::LRSchedule schedule{optim::ScheduleKind::Linear, lr, std::max<int64_t>(1, o.ft_steps / 10), o.ft_steps};
  schedule.validate();
  const int32_t pad = d.eot;
  const int64_t n = static_cast<int64_t>(d.train.size());

  json curve = json::array(), losses = json::array(), step_times = json::array();
  curve.push_back({0, heldout_example_loss(*model, d.valid, o.ft_batch, pad)});
  // Memory of the training steps alone: the peaks are read before each held-out evaluation and reset after
  // it, and the largest training-time figures are kept.
  DeviceMemoryStats memory;
  const Device device = model->device();
  auto absorb_peaks = [&memory, device] {
    const DeviceMemoryStats s = MemoryTracker::instance().stats(device);
    if (s.global_peak > memory.global_peak) memory.global_peak = s.global_peak, memory.live_at_peak = s.live_at_peak;
    for (size_t c = 0; c < memory.peak.bytes.size(); ++c)
      memory.peak.bytes[c] = std::max(memory.peak.bytes[c], s.peak.bytes[c]);
  };
  MemoryTracker::instance().reset_peaks();
  Progress progress(fmt::format("fine-tune {} lr {} step", spec.name, lr_text(lr)), o.ft_steps);
  model->train();
  std::vector<int64_t> order;
  int64_t trained_tokens = 0;
  for (int64_t step = 0; step < o.ft_steps; ++step) {
    std::vector<int64_t> rows;
    for (int64_t i = step * o.ft_batch; i < (step + 1) * o.ft_batch; ++i) {
      if (i % n == 0 || order.empty()) {  // a new epoch: its own seeded permutation
        order.resize(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), int64_t{0});
        Generator gen(o.seed + 7919 * static_cast<uint64_t>(i / n));
        for (int64_t k = n - 1; k > 0; --k)
          std::swap(order[static_cast<size_t>(k)], order[gen.next_u64() % static_cast<uint64_t>(k + 1)]);
      }
      rows.push_back(order[static_cast<size_t>(i % n)]);
    }
    trained_tokens += count_targets(d.train, rows);
    const auto t0 = Clock::now();
    Tensor x, y;
    make_lm_batch(d.train, rows, pad, x, y, device);
    optimizer.set_lr(schedule.lr_at(step));
    train::Batch batch;
    batch.ids = x, batch.targets = y, batch.trained_tokens = count_targets(d.train, rows);
    batch.sequences = static_cast<int64_t>(rows.size());
    for (int64_t r : rows) batch.padding -= static_cast<int64_t>(d.train[static_cast<size_t>(r)].ids.size()) - 1;
    batch.padding += x.numel();
    // The one training step every program takes (train/): forward, loss on the reference tokens, backward,
    // the non-finite guard, clipping at 1, AdamW.
    const train::StepResult result = train::train_step(*model, optimizer, {batch}, {.grad_clip = 1.0});
    const double value = result.applied ? result.loss : std::numeric_limits<double>::quiet_NaN();
    step_times.push_back(seconds_since(t0));
    if (!std::isfinite(value)) {
      // A learning rate too high for this configuration: the run is recorded as diverged (the sweep's choice
      // skips it) rather than stopping the whole experiment, which would stop again at the same step on a rerun.
      fmt::print("fine-tune {} at lr {}: the loss is {} at step {}: diverged\n", spec.name, lr_text(lr), value,
                 step + 1);
      write_json_atomically(done, {{"name", spec.name},
                                   {"mode", spec.lora ? "lora" : "full"},
                                   {"lr", lr},
                                   {"diverged_at_step", step + 1},
                                   {"heldout_loss", nullptr},
                                   {"curve", curve},
                                   {"train_losses", losses}});
      return 0;
    }
    losses.push_back(value);
    if ((step + 1) % o.eval_every == 0 || step + 1 == o.ft_steps) {
      absorb_peaks();
      curve.push_back({step + 1, heldout_example_loss(*model, d.valid, o.ft_batch, pad)});
      MemoryTracker::instance().reset_peaks();
    }
    if ((step + 1) % 10 == 0 || step + 1 == o.ft_steps) {
      progress.update(step + 1, fmt::format("loss {:.4f} | validation {:.4f} | {:.2f} s/step", value,
                                            curve.back()[1].get<double>(), step_times.back().get<double>()));
    }
  }
  json result = {{"name", spec.name},
                 {"mode", spec.lora ? "lora" : "full"},
                 {"targets", spec.targets},
                 {"rank", spec.rank},
                 {"alpha", spec.lora ? o.lora_alpha : 0.0},
                 {"scale", spec.lora ? o.lora_alpha / static_cast<double>(spec.rank) : 0.0},
                 {"lr", lr},
                 {"steps", o.ft_steps},
                 {"batch", o.ft_batch},
                 {"examples_seen", o.ft_steps * o.ft_batch},
                 {"train_examples", n},
                 {"epochs", static_cast<double>(o.ft_steps * o.ft_batch) / static_cast<double>(n)},
                 {"trained_tokens", trained_tokens},
                 {"trainable_params", model->num_parameters(true)},
                 {"total_params", model->num_parameters()},
                 {"heldout_loss", curve.back()[1]},
                 {"curve", curve},
                 {"train_losses", losses},
                 {"step_times_s", step_times},
                 {"memory", memory_json(memory)},
                 {"process_peak_rss_bytes_so_far", process_peak_rss_bytes()}};
  std::vector<double> times = step_times.get<std::vector<double>>();
  if (times.size() > 1) times.erase(times.begin());  // the first step allocates
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  result["median_step_s"] = times[times.size() / 2];

  if (spec.lora) {
    // The frozen base must be bit-identical after training (LoRA never writes it).
    result["base_bit_identical"] = bit_identical(before, snapshot_weights(*model));
    const fs::path adapter = dir / "adapter";
    models::save_adapter(*model, adapter.string(), o.weights.empty() ? "replicate_lora/pretrain" : o.weights);
    result["saved_bytes"] = directory_bytes(adapter);
    result["adapter_data_bytes"] = safetensors_data_bytes(adapter / "adapter_model.safetensors");
    result["expected_adapter_data_bytes"] = expected_adapter_data_bytes(*model);
    result["saved_path"] = adapter.string();
  } else {
    const fs::path ckpt = dir / "model";
    models::save_hf_checkpoint(*model, ckpt.string());
    result["saved_bytes"] = directory_bytes(ckpt);
    result["saved_path"] = ckpt.string();
  }
  write_json_atomically(done, result);
  return 0;
}

// The configuration's run: the lowest E2E validation loss after the last step, over its sweep.
int stage_choose(const Options& o, const RunSpec& spec) {
  const fs::path done = run_dir(o, spec.name) / "chosen.json";
  const std::vector<double> lrs = sweep_lrs(o, spec);
  if (stage_current(done, lrs)) return 0;
  json sweep = json::array();
  double best = 0, chosen_lr = 0;
  std::string folder;
  for (double lr : lrs) {
    const fs::path f = sweep_dir(o, spec.name, lr) / "train.json";
    if (!fs::exists(f)) return 0;  // the sweep is not finished
    const json held_out = read_json(f).at("heldout_loss");
    sweep.push_back({{"lr", lr}, {"heldout_loss", held_out}});
    if (held_out.is_null()) continue;  // diverged
    const double loss = held_out.get<double>();
    if (folder.empty() || loss < best)
      best = loss, chosen_lr = lr, folder = sweep_dir(o, spec.name, lr).filename().string();
  }
  if (folder.empty()) {
    fmt::print("{}: every learning rate of the sweep diverged; no run chosen\n", spec.name);
    write_json_atomically(done,
                          {{"folder", nullptr}, {"sweep", sweep}, {"chosen_on", "every run diverged"}, {"inputs", lrs}});
    return 0;
  }
  const bool at_edge = lrs.size() > 1 && (chosen_lr == *std::min_element(lrs.begin(), lrs.end()) ||
                                          chosen_lr == *std::max_element(lrs.begin(), lrs.end()));
  fmt::print("{}: lr {} chosen on the validation set (loss {:.4f}){}\n", spec.name, lr_text(chosen_lr), best,
             at_edge ? ", at the edge of the sweep" : "");
  write_json_atomically(done, {{"folder", folder},
                               {"lr", chosen_lr},
                               {"heldout_loss", best},
                               {"sweep", sweep},
                               {"at_edge_of_sweep", at_edge},
                               {"chosen_on", "E2E validation loss after the last step"},
                               {"inputs", lrs}});
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Evaluation: greedy generations for the test MRs, BLEU and ROUGE-L.

std::shared_ptr<models::CausalLM> load_run_model(const Options& o, const RunSpec& spec) {
  const fs::path dir = chosen_dir(o, spec.name);
  LORA_CHECK(!dir.empty(), "{}: no run chosen yet", spec.name);
  if (!spec.lora) {
    auto model = models::load_model((dir / "model").string(), "");
    model->to(Device::parse(o.device));
    return model;
  }
  auto model = load_base(o);
  nn::load_adapter(*model, (dir / "adapter").string());
  return model;
}

json evaluate_generations(const Options& o, const Data& d, models::CausalLM& model, const std::string& name) {
  std::vector<std::string> hyps;
  Progress progress("generate " + name, static_cast<int64_t>(d.test_prompts.size()));
  for (size_t i = 0; i < d.test_prompts.size(); ++i) {
    const auto ids = greedy_generate(model, {d.test_prompts[i]}, o.max_new_tokens)[0];
    hyps.push_back(one_line(d.tok->decode(ids, {.skip_special_tokens = true})));
    if ((i + 1) % 25 == 0 || i + 1 == d.test_prompts.size()) progress.update(static_cast<int64_t>(i + 1), "greedy");
  }
  std::vector<std::vector<std::string>> refs;
  for (const auto& g : d.test) refs.push_back(g.refs);
  const BleuScore bleu = corpus_bleu_text(hyps, refs);
  const double rouge = corpus_rouge_l(hyps, refs);
  std::string text;
  for (const auto& h : hyps) text += h + "\n";
  const std::string gen_file = "generations/" + name + ".txt";
  write_text_atomically(fs::path(o.report_dir) / gen_file, text);
  fmt::print("evaluate {}: BLEU {:.4f}, ROUGE-L {:.4f}\n", name, bleu.bleu, rouge);
  return {{"bleu", bleu.bleu},
          {"bleu_precisions", bleu.precisions},
          {"brevity_penalty", bleu.brevity_penalty},
          {"hyp_length", bleu.hyp_length},
          {"ref_length", bleu.ref_length},
          {"rouge_l", rouge},
          {"generations_file", gen_file},
          {"decoding", fmt::format("greedy, at most {} new tokens, stop at <|endoftext|>", o.max_new_tokens)}};
}

int stage_evaluate(const Options& o, const Data& d, const RunSpec& spec) {
  const fs::path done = run_dir(o, spec.name) / "eval.json";
  const fs::path chosen = chosen_dir(o, spec.name);
  if (chosen.empty()) return 0;
  if (stage_current(done, chosen.string())) return fmt::print("evaluate {}: done\n", spec.name), 0;
  auto model = load_run_model(o, spec);
  json result = evaluate_generations(o, d, *model, spec.name);
  result["inputs"] = chosen.string();
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The second task: LoRA (q, v, r = 8, the learning rate chosen for lora_qv_r8) on the held-out book.

int stage_style(const Options& o, const Data& d) {
  const fs::path done = run_dir(o, "style_r8") / "train.json";
  const fs::path chosen = run_dir(o, "lora_qv_r8") / "chosen.json";
  if (!fs::exists(chosen) || !read_json(chosen).contains("lr"))
    return fmt::print("style adapter: skipped (needs lora_qv_r8's learning rate)\n"), 0;
  const double lr = read_json(chosen).at("lr").get<double>();
  if (stage_current(done, lr)) return fmt::print("style adapter: done\n"), 0;
  fmt::print("== style adapter: LoRA r=8 on q,v at lr {}, continuing {}\n", lr_text(lr), o.style_text);
  auto model = load_base(o);
  models::apply_lora(*model, lora_config(o, "q,v", 8));
  const int64_t seq = std::min<int64_t>(o.pre.seq, model->dims().context_length);
  const int64_t eval_batches = o.quick ? 2 : 8;
  const double before = heldout_window_loss(*model, d.style_val, o.ft_batch, seq, eval_batches);
  PretrainOptions p = o.pre;
  p.steps = o.style_steps, p.batch = o.ft_batch, p.seq = seq, p.lr = lr, p.min_lr = lr / 10;
  p.warmup = std::max<int64_t>(1, o.style_steps / 10), p.eval_every = o.style_steps, p.eval_batches = eval_batches;
  p.stop_after = 0;
  p.checkpoint_minutes = 1e9;  // short: no intermediate checkpoints
  const fs::path dir = run_dir(o, "style_r8");
  fs::remove_all(dir / "train");
  const json log = pretrain(*model, d.style_train, d.style_val, p, dir / "train");
  fs::remove_all(dir / "train");
  models::save_adapter(*model, (dir / "adapter").string(), "replicate_lora/pretrain");
  write_json_atomically(done,
                        {{"text", o.style_text},
                         {"steps", o.style_steps},
                         {"lr", lr},
                         {"heldout_loss_before", before},
                         {"heldout_loss_after", log["evals"].back()[1]},
                         {"median_step_s", log["train_seconds"].get<double>() / static_cast<double>(o.style_steps)},
                         {"inputs", lr}});
  return 0;
}

}  // namespace lora::replicate
