// finetune: fine-tune a causal LM (GPT-2, Llama, Qwen2, Mistral) fully or with LoRA on a text file, and
// report what LoRA saves, measured by the allocator: trainable parameters, gradient and optimizer memory,
// activations, step time, and the size of what each mode saves. --mode compare runs both modes, each in a
// fresh process (peak RSS belongs to a process), and prints them side by side. Also built as
// finetune_gpt2, with the same defaults: GPT-2 small, the main job.
//
//   finetune                                        # GPT-2 small (random init), Tiny Shakespeare, compare
//   finetune --weights gpt2/ --mode lora --steps 200 --save out/
//   finetune --weights SmolLM2-135M/ --mode lora --targets q_proj,v_proj --steps 200 --save out/
//
// Read next: models/causal_lm.h (what a model offers), nn/lora/lora_linear.h (LoRA), docs/memory.md (the
// report).
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "backends/backend.h"
#include "core/files.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "tools/fault_injection.h"
#include "tools/finetune_options.h"
#include "tools/interrupt.h"
#include "tools/subprocess.h"
#include "tools/token_data.h"
#include "tools/train_checkpoint.h"
#include "tools/train_report.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {



// Thrown when SIGINT/SIGTERM stopped training after the current step (main exits with 128 + signal).
struct Interrupted {
  int signal;
};

std::string default_data() {
  for (const std::string& p : {std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt",
                               std::string("data/tinyshakespeare.txt")}) {
    if (is_regular_file(p)) return p;
  }
  LORA_FAIL("no --data given and data/tinyshakespeare.txt was not found");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Mean loss over fixed held-out batches (the same ones before and after training).
double evaluate(models::CausalLM& model, const std::vector<int32_t>& val, const tools::FinetuneOptions& o, Device device) {
  NoGradGuard no_grad;
  model.eval();
  tools::BatchSampler sampler(val, o.batch, o.seq, o.seed + 999, "held-out");
  double total = 0;
  for (int64_t i = 0; i < o.eval_batches; ++i) {
    Tensor x, y;
    sampler.next(x, y, device);
    total += model.loss(x, y).item();
  }
  model.train();
  return total / static_cast<double>(o.eval_batches);
}

int64_t directory_bytes(const fs::path& dir) {
  int64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += static_cast<int64_t>(entry.file_size());
  }
  return total;
}

tools::ModeReport run_mode(const tools::FinetuneOptions& o, const std::string& mode) {
  const Device device = Device::parse(o.device);
  const bool lora_mode = mode == "lora";
  fmt::print("== {} fine-tuning, {} threads, device {}\n", lora_mode ? "LoRA" : "full", num_threads(), device.str());

  tools::TokenSplit data = tools::load_token_split(o.data.empty() ? default_data() : o.data);
  fmt::print("data: {} training tokens, {} held out\n", data.train.size(), data.val.size());

  if (o.weights.empty()) {
    fmt::print("notice: no --weights given: '{}' is randomly initialised (the memory and speed figures are real; the "
               "losses are those of an untrained model)\n",
               o.config.empty() ? "gpt2" : o.config);
  }
  std::shared_ptr<models::CausalLM> model = models::load_model(o.weights, o.config, o.seed);
  const models::ModelDims dims = model->dims();
  fmt::print("model: {}, {} layers, hidden {}, {} parameters\n", model->model_type(), dims.n_layer, dims.hidden,
             model->num_parameters());
  LORA_CHECK(o.seq <= dims.context_length, "--seq {} exceeds the model's context of {}", o.seq, dims.context_length);
  for (const auto* part : {&data.train, &data.val}) {
    for (int32_t id : *part) {
      LORA_CHECK(id >= 0 && id < dims.vocab_size, "--data: token {} is outside the model's vocabulary of {}", id,
                 dims.vocab_size);
    }
  }
  model->to(device);
  if (lora_mode) {
    nn::LoRAConfig config;
    config.options.rank = o.rank;
    config.options.alpha = o.alpha;
    config.options.dropout = o.lora_dropout;
    config.options.seed = o.seed;
    config.targets = nn::LoRAConfig::parse_targets(o.targets);
    models::apply_lora(*model, config);
    model->to(device);
    fmt::print("{}\n", nn::lora_summary(*model).str());
  }
  const double lr = o.lr > 0 ? o.lr : (lora_mode ? 1e-3 : 1e-4);
  std::vector<std::string> trainable_names;
  for (const auto& [name, p] : model->named_parameters(true)) trainable_names.push_back(name);
  optim::AdamW optimizer(model->parameters(true), {.lr = lr, .weight_decay = o.weight_decay}, trainable_names);
  optim::LRSchedule schedule{optim::ScheduleKind::Cosine, lr, o.warmup, o.steps};
  schedule.validate();

  tools::ModeReport report;
  report.mode = mode;
  report.device = device.str();
  report.batch = o.batch, report.seq = o.seq;
  report.trainable_params = model->num_parameters(true);
  report.total_params = model->num_parameters();
  report.val_loss_before = evaluate(*model, data.val, o, device);
  fmt::print("held-out loss before: {:.4f}\n", report.val_loss_before);

  // Resumable checkpoints: what identifies this run, and where it continues from.
  tools::BatchSampler sampler(data.train, o.batch, o.seq, o.seed, "training");
  tools::TrainingProgress progress;
  const std::string checkpoint_dir = !o.save.empty() ? o.save : o.resume;
  tools::RunIdentity identity;
  if (!checkpoint_dir.empty()) {  // checkpoints may be written (every N steps, or when interrupted)
    identity.settings = {{"mode", mode},       {"batch", o.batch},       {"seq", o.seq},
                         {"steps", o.steps},   {"lr", lr},               {"warmup", o.warmup},
                         {"grad_clip", o.grad_clip}, {"weight_decay", o.weight_decay}, {"seed", o.seed},
                         {"device", device.str()}, {"skip_nonfinite", o.skip_nonfinite}};
    if (lora_mode) {
      identity.settings["lora"] = {{"rank", o.rank}, {"alpha", o.alpha}, {"dropout", o.lora_dropout},
                                   {"targets", nn::LoRAConfig::parse_targets(o.targets)}};
    }
    identity.model = model->hf_config();
    identity.frozen_fingerprint = tools::RunIdentity::fingerprint(*model);
    identity.data = {{"path", o.data.empty() ? default_data() : o.data},
                     {"train_tokens", data.train.size()},
                     {"held_out_tokens", data.val.size()}};
  }
  if (!o.resume.empty()) {
    const std::string checkpoint = tools::latest_checkpoint(o.resume);
    LORA_CHECK(!checkpoint.empty(), "--resume '{}': no complete checkpoint (checkpoint-<step>/) in the folder", o.resume);
    progress = tools::load_training_checkpoint(checkpoint, *model, optimizer, identity);
    sampler.set_state(progress.sampler);
    report.losses = progress.losses;
    fmt::print("resumed from {} after step {} of {}\n", checkpoint, progress.step, o.steps);
  }
  auto save_checkpoint = [&] {
    progress.sampler = sampler.state();
    progress.losses = report.losses;
    const std::string path =
        tools::save_training_checkpoint(checkpoint_dir, *model, optimizer, identity, progress, int(o.keep_checkpoints));
    fmt::print("checkpoint: {}\n", path);
  };
  tools::install_interrupt_handlers();

  MemoryTracker::instance().reset_peaks();  // peaks of the training steps alone
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = progress.step;
  for (int64_t step = first_step; step < o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    Tensor x, y;
    sampler.next(x, y, device);
    optimizer.set_lr(schedule.lr_at(step));
    Tensor loss = model->loss(x, y);
    backward(loss);
    tools::fault_point("train-step");
    const double loss_value = loss.item();
    // A non-finite loss or gradient would poison the weights and the moments: stop, or skip the step.
    const double norm = optim::grad_norm(optimizer.params());
    if (!std::isfinite(loss_value) || !std::isfinite(norm)) {
      const int64_t bad = optim::first_nonfinite_gradient(optimizer.params());
      const std::string what = !std::isfinite(loss_value) ? fmt::format("the loss is {}", loss_value)
                               : bad >= 0 ? fmt::format("the gradient of '{}' is not finite", trainable_names[bad])
                                          : fmt::format("the gradient norm is {}", norm);
      LORA_CHECK(o.skip_nonfinite, "step {}: {}; training stopped, no update was applied (--skip-nonfinite skips "
                 "such steps instead)", step + 1, what);
      optimizer.zero_grad();
      ++progress.skipped_steps;
      fmt::print("step {:>4}/{} | skipped: {} ({} skipped so far)\n", step + 1, o.steps, what, progress.skipped_steps);
    } else {
      if (o.grad_clip > 0) optim::clip_grad_norm(optimizer.params(), o.grad_clip, true, trainable_names);
      optimizer.step();
      optimizer.zero_grad();
    }
    const double dt = seconds_since(t0);
    report.losses.push_back(loss_value);
    report.step_times_s.push_back(dt);
    progress.step = step + 1;
    const double elapsed = seconds_since(t_start);
    const double eta = elapsed / static_cast<double>(step + 1 - first_step) * static_cast<double>(o.steps - step - 1);
    fmt::print("step {:>4}/{} | loss {:.4f} | lr {:.2e} | {:.2f} s | {:.0f} tokens/s | ETA {:.0f} s\n", step + 1,
               o.steps, loss_value, optimizer.lr(), dt, static_cast<double>(o.batch * o.seq) / dt, eta);
    std::fflush(stdout);
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < o.steps) {
      fmt::print("held-out loss: {:.4f}\n", evaluate(*model, data.val, o, device));
    }
    if (const int sig = tools::interrupt_signal()) {
      if (!checkpoint_dir.empty()) {
        save_checkpoint();
        fmt::print("interrupted (signal {}) after step {}: resume with --resume {}\n", sig, progress.step, checkpoint_dir);
      } else {
        fmt::print("interrupted (signal {}) after step {}: nothing saved (give --save DIR to keep checkpoints)\n", sig,
                   progress.step);
      }
      std::fflush(stdout);
      throw Interrupted{sig};
    }
    if (o.save_every > 0 && progress.step % o.save_every == 0 && progress.step < o.steps) save_checkpoint();
  }
  if (progress.skipped_steps > 0) {
    fmt::print("{} of {} steps were skipped for non-finite values\n", progress.skipped_steps, o.steps);
  }
  report.skipped_steps = progress.skipped_steps;
  report.memory = MemoryTracker::instance().stats(device);
  report.peak_rss_bytes = tools::process_peak_rss_bytes();
  report.val_loss_after = evaluate(*model, data.val, o, device);
  fmt::print("held-out loss after: {:.4f}\n", report.val_loss_after);

  // Save what the mode produces: the whole model, or the adapter alone.
  const bool keep = !o.save.empty();
  const fs::path dir = keep ? fs::path(o.save) / mode
                            : fs::temp_directory_path() / fmt::format("finetune_{}_{}", mode, getpid());
  const std::string base_name = !o.weights.empty() ? o.weights : o.config.empty() ? "gpt2" : o.config;
  if (lora_mode) models::save_adapter(*model, dir.string(), base_name);
  else models::save_hf_checkpoint(*model, dir.string());
  report.saved_bytes = directory_bytes(dir);
  report.saved_path = keep ? dir.string() : "";
  fmt::print("saved {} ({}){}\n", lora_mode ? "the adapter" : "the model", tools::human_bytes(report.saved_bytes),
             keep ? " to " + dir.string() : " (measured, then removed: pass --save DIR to keep it)");
  if (!keep) fs::remove_all(dir);
  fmt::print("\n{}", report.table());
  return report;
}

// Runs this program again for one mode (no shell: the arguments pass through as they are) and reads back
// its JSON report.
tools::ModeReport run_child(const std::string& mode, const std::vector<std::string>& args) {
  const fs::path json_path = fs::temp_directory_path() / fmt::format("finetune_{}_{}.json", mode, getpid());
  std::vector<std::string> argv = {tools::self_executable()};
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--mode" || args[i] == "--report-json") {
      ++i;
      continue;
    }
    if (args[i].rfind("--mode=", 0) == 0 || args[i].rfind("--report-json=", 0) == 0) continue;
    argv.push_back(args[i]);
  }
  argv.insert(argv.end(), {"--mode", mode, "--report-json", json_path.string()});
  // libgomp reads GOMP_SPINCOUNT before main: shorter spinning keeps idle OpenMP threads from taking a
  // core from the other thread when the machine is shared (measured: 7.0 -> 2.0 s per LoRA step under load).
  std::vector<std::string> env;
  if (!std::getenv("GOMP_SPINCOUNT")) env.push_back("GOMP_SPINCOUNT=10000");
  std::fflush(stdout);
  const int status = tools::run_program(argv, env);
  LORA_CHECK(status == 0, "the {} run failed (exit status {})", mode, status);
  std::ifstream in(json_path);
  const auto j = nlohmann::json::parse(in);
  fs::remove(json_path);
  return tools::ModeReport::from_json(j.at("modes").at(0));
}

void write_json(const std::string& path, const std::vector<tools::ModeReport>& reports) {
  nlohmann::json j;
  j["modes"] = nlohmann::json::array();
  for (const auto& r : reports) j["modes"].push_back(r.to_json());
  std::ofstream out(path);
  LORA_CHECK(out.good(), "--report-json '{}': cannot write", path);
  out << j.dump(2) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  tools::FinetuneOptions o;
  if (const int code = tools::parse_finetune_options(argc, argv, o); code >= 0) return code;


  try {
    o.validate();
    std::vector<tools::ModeReport> reports;
    if (o.mode == "compare") {
      const std::vector<std::string> args(argv, argv + argc);
      reports.push_back(run_child("full", args));
      reports.push_back(run_child("lora", args));
      fmt::print("{}", tools::comparison_table(reports[0], reports[1]));
    } else {
      reports.push_back(run_mode(o, o.mode));
    }
    if (!o.report_json.empty()) write_json(o.report_json, reports);
  } catch (const Interrupted& i) {
    return 128 + i.signal;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
