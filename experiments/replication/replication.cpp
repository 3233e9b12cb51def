// Replication pieces: progress, atomic stage files, resumable pre-training (train::train_step per step), held-out
// losses, greedy generation, weight snapshots.
#include "experiments/replication/replication.h"
#include "core/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "core/stopwatch.h"
#include "models/generate.h"
#include "optim/adam.h"
#include "optim/lr_schedule.h"
#include "train/train_step.h"

namespace lora::tools {

void Progress::update(int64_t done, const std::string& detail) const {
  const double elapsed = elapsed_s();
  const double eta =
      done > first_ ? elapsed / static_cast<double>(done - first_) * static_cast<double>(total_ - done) : 0.0;
  fmt::print("{} {:>5}/{} | {} | {:.0f} s elapsed | ETA {:.0f} s\n", label_, done, total_, detail, elapsed, eta);
  std::fflush(stdout);
}

void write_json_atomically(const fs::path& path, const nlohmann::json& j) {
  write_text_atomically(path, j.dump(2) + "\n");
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  write_file_atomically(path.string(), [&](std::ostream& out) { out << text; });
}

nlohmann::json read_json(const fs::path& path) {
  return read_json_file(path.string(), "file");
}

int64_t directory_bytes(const fs::path& dir) {
  int64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += static_cast<int64_t>(entry.file_size());
  }
  return total;
}

// ---------------------------------------------------------------------------------------------------
// Pre-training

std::vector<int64_t> pretrain_windows(int64_t n_windows, int64_t batch, int64_t step, uint64_t seed) {
  LORA_CHECK(n_windows > 0, "pre-training: the corpus holds no whole window");
  std::vector<int64_t> out;
  std::vector<int64_t> perm;
  int64_t perm_epoch = -1;
  for (int64_t i = step * batch; i < (step + 1) * batch; ++i) {
    const int64_t epoch = i / n_windows;
    if (epoch != perm_epoch) {
      perm.resize(static_cast<size_t>(n_windows));
      std::iota(perm.begin(), perm.end(), int64_t{0});
      Generator gen(seed + static_cast<uint64_t>(epoch));
      for (int64_t k = n_windows - 1; k > 0; --k) {  // Fisher-Yates
        std::swap(perm[static_cast<size_t>(k)], perm[gen.next_u64() % static_cast<uint64_t>(k + 1)]);
      }
      perm_epoch = epoch;
    }
    out.push_back(perm[static_cast<size_t>(i % n_windows)]);
  }
  return out;
}

namespace {

void window_batch(const std::vector<int32_t>& tokens, const std::vector<int64_t>& windows, int64_t seq, Tensor& x,
                  Tensor& y, Device device) {
  const int64_t B = static_cast<int64_t>(windows.size());
  std::vector<int32_t> xs(static_cast<size_t>(B * seq)), ys(static_cast<size_t>(B * seq));
  for (int64_t b = 0; b < B; ++b) {
    const auto start = tokens.begin() + windows[static_cast<size_t>(b)] * seq;
    std::copy(start, start + seq, xs.begin() + b * seq);
    std::copy(start + 1, start + seq + 1, ys.begin() + b * seq);
  }
  x = Tensor::from_vector(xs, {B, seq}, device);
  y = Tensor::from_vector(ys, {B, seq}, device);
}

// The latest complete checkpoint dir/ckpt-N (N largest), or "" when none.
fs::path latest_checkpoint(const fs::path& dir) {
  fs::path best;
  int64_t best_step = -1;
  if (!fs::exists(dir)) return best;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("ckpt-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    int64_t step = -1;  // ckpt-<step>; another name under dir is not ours
    const char* digits = name.c_str() + 5;
    const auto [end, error] = std::from_chars(digits, name.c_str() + name.size(), step);
    if (error != std::errc() || end != name.c_str() + name.size() || step < 0) continue;
    if (step > best_step) best_step = step, best = entry.path();
  }
  return best;
}

void save_checkpoint(const models::CausalLM& model, const optim::Optimizer& optimizer, const nlohmann::json& state,
                     const fs::path& dir, int64_t step) {
  const fs::path final_dir = dir / fmt::format("ckpt-{}", step), tmp = dir / fmt::format("ckpt-{}.tmp", step);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const auto sd = model.state_dict();
  save_safetensors((tmp / "model.safetensors").string(), sd);
  optimizer.save_state((tmp / "optimizer.safetensors").string());
  write_json_atomically(tmp / "state.json", state);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  // Older checkpoints are no longer needed once this one is complete.
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0 && entry.path() != final_dir) fs::remove_all(entry.path());
  }
}

void load_weights(models::CausalLM& model, const fs::path& file) {
  const SafeTensorsFile f = SafeTensorsFile::open(file.string());
  std::map<std::string, Tensor> state;
  for (const auto& name : f.names()) state[name] = f.load(name);
  model.load_state_dict(state, /*strict=*/true);
}

}  // namespace

nlohmann::json pretrain(models::CausalLM& model, const std::vector<int32_t>& train, const std::vector<int32_t>& val,
                        const PretrainOptions& o, const fs::path& dir) {
  fs::create_directories(dir);
  const int64_t n_windows = (static_cast<int64_t>(train.size()) - 1) / o.seq;
  auto named = model.named_parameters(true);
  std::vector<Tensor> params;
  std::vector<std::string> names;
  for (auto& [n, p] : named) names.push_back(n), params.push_back(p);
  optim::AdamW optimizer(params, {.lr = o.lr, .weight_decay = 0.0}, names);
  optim::LRSchedule schedule{optim::ScheduleKind::Cosine, o.lr, o.warmup, o.steps, o.min_lr};
  schedule.validate();

  nlohmann::json log = {{"losses", nlohmann::json::array()},
                        {"evals", nlohmann::json::array()},
                        {"train_seconds", 0.0},
                        {"resumed_from", 0}};
  int64_t start = 0;
  if (const fs::path ckpt = latest_checkpoint(dir); !ckpt.empty()) {
    load_weights(model, ckpt / "model.safetensors");
    optimizer.load_state((ckpt / "optimizer.safetensors").string());
    log = read_json(ckpt / "state.json");
    start = log.at("step").get<int64_t>();
    log["resumed_from"] = start;
    fmt::print("pre-training: resuming from {} (step {})\n", ckpt.string(), start);
  }
  model.train();
  double seconds = log["train_seconds"].get<double>();
  Progress progress("pre-train step", o.steps, start);
  auto t_checkpoint = Clock::now();
  int64_t done_here = 0;
  for (int64_t step = start; step < o.steps; ++step) {
    const auto t0 = Clock::now();
    Tensor x, y;
    window_batch(train, pretrain_windows(n_windows, o.batch, step, o.seed), o.seq, x, y, model.device());
    optimizer.set_lr(schedule.lr_at(step));
    train::Batch batch;
    batch.ids = x, batch.targets = y, batch.trained_tokens = o.batch * o.seq, batch.sequences = o.batch;
    const train::StepResult result = train::train_step(model, optimizer, {batch}, {.grad_clip = o.grad_clip});
    LORA_CHECK(result.applied, "pre-training step {}: {}; nothing was updated (a lower --pretrain-lr may help)",
               step + 1, result.nonfinite);
    const double value = result.loss, dt = seconds_since(t0);
    seconds += dt;
    log["losses"].push_back(value);
    ++done_here;
    const bool last = step + 1 == o.steps, stop = o.stop_after > 0 && done_here >= o.stop_after;
    if ((step + 1) % o.eval_every == 0 || last) {
      const double v = heldout_window_loss(model, val, o.batch, o.seq, o.eval_batches);
      log["evals"].push_back({step + 1, v});
      fmt::print("pre-train held-out loss at step {}: {:.4f}\n", step + 1, v);
      if (o.side_eval) {
        const double side = o.side_eval(model);
        if (!log.contains("side_evals")) log["side_evals"] = nlohmann::json::array();
        log["side_evals"].push_back({step + 1, side});
        fmt::print("pre-train side evaluation at step {}: {:.4f} ({:.3f} x the held-out loss)\n", step + 1, side,
                   side / v);
      }
    }
    if ((step + 1) % 10 == 0 || last || step == start) {
      progress.update(step + 1, fmt::format("loss {:.4f} | lr {:.2e} | {:.0f} tokens/s", value, optimizer.lr(),
                                            static_cast<double>(o.batch * o.seq) / dt));
    }
    log["step"] = step + 1;
    log["train_seconds"] = seconds;
    if (last || stop || seconds_since(t_checkpoint) > 60.0 * o.checkpoint_minutes) {
      save_checkpoint(model, optimizer, log, dir, step + 1);
      t_checkpoint = Clock::now();
    }
    if (stop && !last) {
      log["stopped_at"] = step + 1;
      return log;
    }
  }
  const int64_t total_steps = static_cast<int64_t>(log["losses"].size());
  log["tokens_per_s"] = seconds > 0 ? static_cast<double>(total_steps * o.batch * o.seq) / seconds : 0.0;
  return log;
}

double heldout_window_loss(models::CausalLM& model, const std::vector<int32_t>& tokens, int64_t batch, int64_t seq,
                           int64_t batches) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t n_windows = (static_cast<int64_t>(tokens.size()) - 1) / seq, wanted = batch * batches;
  LORA_CHECK(n_windows >= 1, "held-out text: {} tokens is less than one window of {}", tokens.size(), seq + 1);
  double total = 0;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<int64_t> windows;
    for (int64_t i = b * batch; i < (b + 1) * batch; ++i) windows.push_back(i * n_windows / wanted % n_windows);
    Tensor x, y;
    window_batch(tokens, windows, seq, x, y, model.device());
    total += model.loss(x, y).item();
  }
  model.train(was_training);
  return total / static_cast<double>(batches);
}

// ---------------------------------------------------------------------------------------------------
// Masked examples, generation

double heldout_example_loss(models::CausalLM& model, const std::vector<LMExample>& examples, int64_t batch,
                            int32_t pad) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(examples.size()); i += batch) {
    std::vector<int64_t> rows;
    for (int64_t r = i; r < std::min<int64_t>(i + batch, static_cast<int64_t>(examples.size())); ++r) rows.push_back(r);
    Tensor x, y;
    make_lm_batch(examples, rows, pad, x, y, model.device());
    const int64_t n = count_targets(examples, rows);
    total += model.loss(x, y).item() * static_cast<double>(n);  // loss is the mean over the batch's targets
    count += n;
  }
  model.train(was_training);
  return total / static_cast<double>(std::max<int64_t>(count, 1));
}

std::vector<std::vector<int32_t>> greedy_generate(models::CausalLM& model,
                                                  const std::vector<std::vector<int32_t>>& prompts,
                                                  int64_t max_new_tokens, bool stop_at_eos) {
  models::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = max_new_tokens;
  options.stop_at_eos = stop_at_eos;
  std::vector<std::vector<int32_t>> out;
  for (const auto& p : prompts) {
    std::vector<int32_t> ids = models::generate(model, p, options);
    const auto eos = model.eos_token_ids();
    if (!ids.empty() && std::find(eos.begin(), eos.end(), ids.back()) != eos.end()) ids.pop_back();
    out.push_back(std::move(ids));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Checks

std::vector<std::pair<std::string, std::vector<float>>> snapshot_weights(const models::CausalLM& model) {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const auto& [name, t] : model.hf_state()) out.emplace_back(name, t.to_vector<float>());
  return out;
}

double max_abs_difference(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                          const std::vector<std::pair<std::string, std::vector<float>>>& b) {
  if (a.size() != b.size()) return -1;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || a[i].second.size() != b[i].second.size()) return -1;
    for (size_t k = 0; k < a[i].second.size(); ++k) {
      worst = std::max(worst, static_cast<double>(std::abs(a[i].second[k] - b[i].second[k])));
    }
  }
  return worst;
}

}  // namespace lora::tools
