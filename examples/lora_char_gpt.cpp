// lora_char_gpt: rung 4 of the ladder. Takes the character-level GPT that train_char_gpt saved, freezes it
// and fits LoRA adapters to a second text (Jane Austen), measures what that costs next to full fine-tuning
// (the MemoryTracker's bytes by category, side by side), saves the adapter in PEFT's format, and shows both
// styles from one base model by switching the adapter in and out (nn::AdapterBank, reading it back from disk).
//
//   lora_char_gpt                                   # base runs/char_gpt (train_char_gpt's default --out)
//   lora_char_gpt --base runs/char_gpt_quick --steps 20 --full-steps 2 --out runs/austen_quick
//
// Exits non-zero if switching the adapter out does not give the base model back.
//
// Read next: nn/lora/lora_linear.h (y = base(x) + s (x A^T) B^T), nn/lora/apply_lora.h (targets),
// nn/lora/adapter.h (PEFT files, AdapterBank), docs/lora.md and docs/memory.md; then examples/finetune.cpp
// (rung 5: the same on GPT-2 small).
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include "backends/backend.h"
#include "core/files.h"
#include "core/stopwatch.h"
#include "lora_source_dir.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/lr_schedule.h"
#include "tools/char_lm.h"
#include "train/train_step.h"
#include "train/window_source.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string base = "runs/char_gpt", out = "runs/char_gpt_austen", targets = "all-linear", prompt = "\n";
  std::string data = std::string(LORA_SOURCE_DIR) + "/data/austen-pride-1-12.txt";
  std::string base_data = std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt";
  int64_t rank = 8, steps = 600, full_steps = 5, batch = 16, seq = 0, warmup = 30, eval_every = 200;
  int64_t eval_batches = 8, log_every = 25, sample_chars = 300;
  double alpha = 16, lr = 3e-3, temperature = 0.8;
  int64_t threads = 1;
  uint64_t seed = 1337;
  bool json = false;
};

int64_t folder_bytes(const fs::path& dir) {
  int64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += static_cast<int64_t>(entry.file_size());
  }
  return total;
}

// What one way of training cost, measured.
struct Figures {
  int64_t trainable = 0, total = 0;
  DeviceMemoryStats memory;  // the tracker's peaks over the training steps (evaluations excluded)
  double median_step_s = 0;
  int64_t saved_bytes = 0;
};

// `steps` AdamW steps on windows of `ids`: ids -> loss -> backward -> clip -> step. `on_step(step, loss)`
// sees each step (progress, evaluations). Returns the tracker's figures for these steps alone.
Figures train_steps(models::CausalLM& model, const std::vector<int32_t>& ids, const Options& o, int64_t steps,
                    double lr, const std::function<void(int64_t, double)>& on_step) {
  std::vector<std::string> names;
  for (const auto& [name, p] : model.named_parameters(true)) names.push_back(name);
  optim::AdamW optimizer(model.parameters(true), {.lr = lr, .beta2 = 0.99}, names);
  optim::LRSchedule schedule{optim::ScheduleKind::Cosine, lr, std::min(o.warmup, steps - 1), steps, lr / 10};
  train::WindowSource windows(ids, o.batch, o.seq, o.seed, "training");
  Figures f;
  f.trainable = model.num_parameters(true);
  f.total = model.num_parameters();
  std::vector<double> times;
  MemoryTracker& tracker = MemoryTracker::instance();
  for (int64_t step = 1; step <= steps; ++step) {
    tracker.reset_peaks();  // the peaks of this step alone: evaluations between steps do not count
    const auto t0 = std::chrono::steady_clock::now();
    const train::Batch batch = windows.next(Device::cpu());
    optimizer.set_lr(schedule.lr_at(step - 1));
    const train::StepResult result = train::train_step(model, optimizer, {batch}, {.grad_clip = 1.0});
    LORA_CHECK(result.applied, "step {}: {}; training stopped", step, result.nonfinite);
    times.push_back(seconds_since(t0));
    // The most each category held in any step, and the breakdown of the step with the highest total.
    const DeviceMemoryStats s = tracker.stats();
    for (int c = 0; c < kNumMemoryCategories; ++c)
      f.memory.peak.bytes[c] = std::max(f.memory.peak.bytes[c], s.peak.bytes[c]);
    if (s.global_peak > f.memory.global_peak)
      f.memory.global_peak = s.global_peak, f.memory.live_at_peak = s.live_at_peak;
    on_step(step, result.loss);
  }
  std::sort(times.begin(), times.end());
  f.median_step_s = times[times.size() / 2];
  return f;
}

// The side-by-side report: what full fine-tuning and LoRA hold, by memory category, at their peaks.
void print_comparison(const Figures& full, const Figures& lora, const std::string& lora_label) {
  constexpr MemoryCategory kCategories[] = {MemoryCategory::TrainableParameter, MemoryCategory::FrozenParameter,
                                            MemoryCategory::Gradient,           MemoryCategory::OptimizerState,
                                            MemoryCategory::Activation,         MemoryCategory::Workspace};
  auto ratio = [](double a, double b) { return b > 0 ? fmt::format("{:.3f}x", a / b) : std::string("-"); };
  auto row = [&](const std::string& what, const std::string& a, const std::string& b, const std::string& r) {
    fmt::print("  {:<24} {:>18} {:>24} {:>10}\n", what, a, b, r);
  };
  fmt::print("\nWhat training holds, measured by the MemoryTracker (peak bytes per category over the steps)\n");
  row("", "full fine-tuning", lora_label, "lora/full");
  row("trainable parameters", fmt::format("{}", full.trainable), fmt::format("{}", lora.trainable),
      ratio(double(lora.trainable), double(full.trainable)));
  for (MemoryCategory c : kCategories) {
    row(std::string(category_name(c)), format_bytes(full.memory.peak[c]), format_bytes(lora.memory.peak[c]),
        ratio(double(lora.memory.peak[c]), double(full.memory.peak[c])));
  }
  row("peak total", format_bytes(full.memory.global_peak), format_bytes(lora.memory.global_peak),
      ratio(double(lora.memory.global_peak), double(full.memory.global_peak)));
  row("step time (median)", fmt::format("{:.3f} s", full.median_step_s), fmt::format("{:.3f} s", lora.median_step_s),
      ratio(lora.median_step_s, full.median_step_s));
  row("saved on disk", format_bytes(full.saved_bytes) + " (model)", format_bytes(lora.saved_bytes) + " (adapter)",
      ratio(double(lora.saved_bytes), double(full.saved_bytes)));
  fmt::print(
      "  gradients and optimizer state follow the trainable parameters (4 B and 2 x 4 B each); the frozen\n"
      "  base costs its weights alone. Activations barely shrink: backward still runs through every layer,\n"
      "  and the adapters' branches add temporaries (workspace). On a model this small the activations\n"
      "  dominate; on GPT-2 small the weights do (examples/finetune.cpp).\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Fit LoRA adapters to a second text on a frozen character-level GPT, compare the memory with full "
      "fine-tuning, and switch between both styles."};
  app.add_option("--base", o.base,
                 "the base model folder train_char_gpt wrote (config.json, model.safetensors, char_vocab.json)")
      ->capture_default_str();
  app.add_option("--data", o.data, "the second text (its characters must be in the base vocabulary)")
      ->capture_default_str();
  app.add_option("--base-data", o.base_data, "the base model's text (its last 10% is held out), to see its style kept")
      ->capture_default_str();
  app.add_option("--out", o.out, "folder for the adapter (PEFT's adapter_config.json + adapter_model.safetensors)")
      ->capture_default_str();
  app.add_option("--rank", o.rank, "LoRA rank r")->check(CLI::Range(int64_t{1}, int64_t{1024}))->capture_default_str();
  app.add_option("--alpha", o.alpha, "LoRA alpha (scale alpha / r)")
      ->check(CLI::Range(1e-6, 1e6))
      ->capture_default_str();
  app.add_option("--targets", o.targets,
                 "layers to adapt: q, k, v (slices of c_attn), all-linear, or layer names (attn.c_proj, mlp.c_fc, ...)")
      ->capture_default_str();
  app.add_option("--steps", o.steps, "LoRA training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--full-steps", o.full_steps, "full fine-tuning steps run only to measure their memory (0: skip)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000}))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--seq", o.seq, "characters per sequence (0: the base model's context)")
      ->check(CLI::Range(int64_t{0}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate of the adapters (AdamW, cosine decay)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "steps of linear warm-up")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "held-out losses every N steps (0: at the end only)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches, "held-out batches per evaluation")
      ->check(CLI::Range(int64_t{1}, int64_t{10000}))
      ->capture_default_str();
  app.add_option("--log-every", o.log_every, "print the training loss every N steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--sample-chars", o.sample_chars, "characters per sample (0: no samples)")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}))
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  app.add_option("--prompt", o.prompt, "text the samples continue (default: a newline)");
  app.add_option(
         "--threads", o.threads,
         "threads for the kernels (on a busy 2-core machine, two threads took 0.85 s a step against 0.15 s for one)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the adapters, the batches and the samples")->capture_default_str();
  app.add_flag("--json", o.json, "end with one JSON line of the held-out losses");
  CLI11_PARSE(app, argc, argv);

  try {
    // Matrices 96 wide are too small to share across threads well: on two cores busy with other work, two
    // threads spent 0.85 s a step waiting on each other where one took 0.15 s.
    set_num_threads(static_cast<int>(o.threads));
    // ---- The base model's vocabulary, and both texts in it.
    const std::string vocab_path = (fs::path(o.base) / "char_vocab.json").string();
    LORA_CHECK(is_regular_file(vocab_path),
               "--base '{}': no char_vocab.json there (train a base model first: "
               "train_char_gpt --out {})",
               o.base, o.base);
    const tools::CharVocab vocab = tools::CharVocab::load(vocab_path);
    const tools::CharSplit text =
        tools::split_ids(vocab.encode(read_file(o.data, "--data"), "--data '" + o.data + "'"));
    const tools::CharSplit base_text =
        tools::split_ids(vocab.encode(read_file(o.base_data, "--base-data"), "--base-data '" + o.base_data + "'"));
    auto load_base = [&] { return models::load_model(o.base, ""); };
    const int64_t context = load_base()->dims().context_length;
    if (o.seq == 0) o.seq = context;
    LORA_CHECK(o.seq <= context, "--seq {} exceeds the base model's context of {}", o.seq, context);
    LORA_CHECK(o.warmup < o.steps, "--warmup {} must be below --steps {}", o.warmup, o.steps);
    fmt::print("base: {} (vocabulary of {}, context {})\ntext: {} ({} characters for training, {} held out)\n", o.base,
               vocab.size(), context, o.data, text.train.size(), text.val.size());
    const uint64_t eval_seed = o.seed + 999;
    auto losses = [&](models::CausalLM& m) {  // held-out loss on {the base text, the new text}
      return std::pair{tools::held_out_loss(m, base_text.val, o.batch, o.seq, o.eval_batches, eval_seed),
                       tools::held_out_loss(m, text.val, o.batch, o.seq, o.eval_batches, eval_seed)};
    };
    auto sample = [&](models::CausalLM& m) {
      models::SamplingOptions s;
      s.temperature = o.temperature;
      s.seed = o.seed;
      return tools::sample_text(m, vocab, o.prompt, o.sample_chars, s);
    };
    auto progress = [&](const char* what, int64_t steps, std::chrono::steady_clock::time_point t0) {
      return [=](int64_t step, double loss) {
        if (step % o.log_every != 0 && step != steps) return;
        const double elapsed = seconds_since(t0);
        fmt::print("{} step {:>5}/{} | loss {:.4f} | {:.0f} s | ETA {:.0f} s\n", what, step, steps, loss, elapsed,
                   elapsed / static_cast<double>(step) * static_cast<double>(steps - step));
        std::fflush(stdout);
      };
    };

    // ---- Full fine-tuning, for its memory only: every weight trains, so each has a gradient and two moments.
    Figures full;
    if (o.full_steps > 0) {
      fmt::print("\n== full fine-tuning, {} steps to measure what it holds\n", o.full_steps);
      auto model = load_base();
      full = train_steps(*model, text.train, o, o.full_steps, o.lr / 10,
                         progress("full", o.full_steps, std::chrono::steady_clock::now()));
      const fs::path tmp = fs::temp_directory_path() / fmt::format("lora_char_gpt_full_{}", getpid());
      models::save_hf_checkpoint(*model, tmp.string());
      full.saved_bytes = folder_bytes(tmp);
      fs::remove_all(tmp);
    }  // the fully trained copy is freed here, before LoRA's figures are taken

    // ---- LoRA: the base frozen, low-rank adapters on the chosen layers.
    auto model = load_base();
    const auto [base_on_base, base_on_text] = losses(*model);
    nn::LoRAConfig config;
    config.options.rank = o.rank;
    config.options.alpha = o.alpha;
    config.options.seed = o.seed;
    config.targets = nn::LoRAConfig::parse_targets(o.targets);
    const nn::LoRASummary summary = models::apply_lora(*model, config);
    const std::string lora_label = fmt::format("LoRA (r={}, {})", o.rank, o.targets);
    fmt::print("\n== {}: {}\nheld-out loss of the base model on the new text: {:.4f}\n", lora_label, summary.str(),
               base_on_text);
    const auto t0 = std::chrono::steady_clock::now();
    auto report = progress("lora", o.steps, t0);
    Figures lora = train_steps(*model, text.train, o, o.steps, o.lr, [&](int64_t step, double loss) {
      report(step, loss);
      if (o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps) {
        fmt::print("held-out loss on the new text at step {}: {:.4f}\n", step,
                   tools::held_out_loss(*model, text.val, o.batch, o.seq, o.eval_batches, eval_seed));
      }
    });
    models::save_adapter(*model, o.out, o.base);
    lora.saved_bytes = folder_bytes(o.out);
    fmt::print("saved the adapter to {}/ ({})\n", o.out, format_bytes(lora.saved_bytes));
    if (o.full_steps > 0) print_comparison(full, lora, lora_label);

    // ---- One base, two styles: the adapter read back from disk, switched in (merged: W += s B A, no
    // extra cost per token) and out again (unmerged and unwrapped: the base model, as it was).
    nn::AdapterBank bank;
    bank.add_from_dir("austen", o.out);
    nn::remove_lora(*model);
    const auto base_now = losses(*model);
    const std::string base_sample = o.sample_chars > 0 ? sample(*model) : "";
    bank.activate(*model, "austen", /*merge=*/true);
    const auto adapted = losses(*model);
    const std::string adapted_sample = o.sample_chars > 0 ? sample(*model) : "";
    nn::remove_lora(*model);
    const auto back = losses(*model);

    fmt::print("\nHeld-out loss (nats/char) of one base model, switching the adapter\n");
    fmt::print("  {:<30} {:>16} {:>16}\n", "", "base text", "new text");
    fmt::print("  {:<30} {:>16.4f} {:>16.4f}\n", "base model", base_on_base, base_on_text);
    fmt::print("  {:<30} {:>16.4f} {:>16.4f}\n", "adapter 'austen' merged in", adapted.first, adapted.second);
    fmt::print("  {:<30} {:>16.4f} {:>16.4f}\n", "adapter switched out", back.first, back.second);
    if (o.sample_chars > 0) {
      fmt::print("\n--- the base model (temperature {:g}) ---\n{}\n", o.temperature, base_sample);
      fmt::print("--- the same base with the adapter 'austen' ---\n{}\n---\n", adapted_sample);
    }
    // Merging adds s B A to W and unmerging subtracts it: float32 rounding, nothing more.
    const double drift = std::max(std::abs(back.first - base_on_base), std::abs(back.second - base_on_text));
    const bool restored = drift < 1e-3 && std::abs(base_now.first - base_on_base) < 1e-6;
    fmt::print("switching the adapter out restores the base model: {} (loss differs by {:.1e})\n",
               restored ? "yes" : "NO", drift);
    if (o.json) {
      fmt::print("{}\n", nlohmann::json{{"base", {{"base_text", base_on_base}, {"new_text", base_on_text}}},
                                        {"adapted", {{"base_text", adapted.first}, {"new_text", adapted.second}}},
                                        {"switched_out", {{"base_text", back.first}, {"new_text", back.second}}},
                                        {"trainable_params", lora.trainable},
                                        {"base_params", lora.total - lora.trainable},
                                        {"lora_peak_bytes", lora.memory.global_peak},
                                        {"full_peak_bytes", full.memory.global_peak},
                                        {"lora_gradient_bytes", lora.memory.peak[MemoryCategory::Gradient]},
                                        {"full_gradient_bytes", full.memory.peak[MemoryCategory::Gradient]},
                                        {"adapter_bytes", lora.saved_bytes}}
                             .dump());
    }
    return restored ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
