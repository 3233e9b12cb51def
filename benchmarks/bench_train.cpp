// bench_train: training-step speed and memory of a causal LM (GPT-2 small by default), full fine-tuning and
// LoRA, against the machine's own sgemm ceiling and multiply-add peak measured in the same run. Each configuration runs in a fresh
// process (this program re-runs itself with --run), because peak RSS belongs to a process.
//
//   bench_train                                  # GPT-2 small, full and LoRA (r=8, q,v) at 4 x 64 and 4 x 256
//   bench_train --configs lora:4x64 --steps 5    # one configuration
//   bench_train --config smollm2-135m --configs full:4x256,lora:4x256
//   bench_train --json out.json                  # also write the results as JSON (benchmarks/compare_pytorch.py)
//   bench_train --configs lora:4x256,lora+nf4:4x256,lora+nf4+ckpt:4x256   # a quantized base, checkpointing
//
// OpenMP's idle threads: libgomp lets a thread that has finished its share spin for up to 300,000 iterations
// before it sleeps. When another process holds one of the two cores, our two threads share the other and the
// spinning one takes the time slices the working one needs (a LoRA step at 4 x 64 took 7.0 s instead of 1.9 s,
// 60% of it in libgomp's spin loop). libgomp reads GOMP_SPINCOUNT when it is loaded, before main(), so the
// children run with GOMP_SPINCOUNT=--omp-spin (default 10000) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set.
//
// One step = train::train_step (train/train_step.h), the step every training program takes: forward,
// backward, the non-finite guard (one pass over the gradients for their norm), clipping when --grad-clip is
// given, AdamW, zero_grad; on random token ids (the speed of a step does not depend on the values). Warm-up
// steps first, then the median of --steps timed steps.
//
// FLOPs per step (matmul FLOPs of forward and backward, attention and the LM head included; the formula of the
// PaLM paper's appendix B, with attention over the full T x T product):
//   full: 6 N B T + 12 L T^2 C B
//   LoRA: 4 N B T + 12 L T^2 C B + 6 N_lora B T   (the frozen weights get no weight gradient: 2 N B T fewer)
// N = the weights of every linear layer and of the LM head (123.65M for GPT-2 small: every parameter but the
// position embedding, LayerNorms and biases, with the tied head counted once); C = heads x head_dim;
// N_lora = the trainable LoRA parameters.
#include <cblas.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/checkpoint.h"
#include "backends/backend.h"
#include "backends/cpu/blas_kernels.h"
#include "backends/cpu/compute_probe.h"
#include "core/allocator.h"
#include "core/json.h"
#include "core/stopwatch.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/linear.h"
#include "optim/adam.h"
#include "tools/subprocess.h"
#include "tools/train_report.h"
#include "train/train_step.h"

using namespace lora;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string config = "gpt2", targets = "q,v", configs = "full:4x64,lora:4x64,full:4x256,lora:4x256", run, json;
  int64_t warmup = 2, steps = 3, rank = 8, ceiling_size = 2048, omp_spin = 10000;
  double alpha = 16, grad_clip = 0;
};

// MODE[+BASE][+ckpt]:BATCHxSEQ, e.g. lora+nf4+ckpt:4x256.
struct RunConfig {
  std::string mode;                     // "full" or "lora"
  QuantFormat base = QuantFormat::F32;  // the frozen base's format (LoRA only)
  bool checkpoint = false;              // activation checkpointing of every block
  int64_t batch = 0, seq = 0;
  std::string str() const {
    return fmt::format("{}{}{}:{}x{}", mode, base == QuantFormat::F32 ? "" : "+" + std::string(quant_format_name(base)),
                       checkpoint ? "+ckpt" : "", batch, seq);
  }
};

RunConfig parse_config(const std::string& s) {
  RunConfig c;
  const auto colon = s.find(':'), x = s.find('x', colon == std::string::npos ? 0 : colon);
  LORA_CHECK(colon != std::string::npos && x != std::string::npos,
             "--configs: '{}' is not MODE:BATCHxSEQ (e.g. lora:4x64)", s);
  std::stringstream parts(s.substr(0, colon));
  std::getline(parts, c.mode, '+');
  LORA_CHECK(c.mode == "full" || c.mode == "lora", "--configs: mode '{}' in '{}' is not full or lora", c.mode, s);
  for (std::string part; std::getline(parts, part, '+');) {
    if (part == "ckpt") {
      c.checkpoint = true;
      continue;
    }
    c.base = parse_quant_format(part, fmt::format("--configs '{}': the base format", s));
    LORA_CHECK(c.mode == "lora", "--configs '{}': a quantized base ({}) needs LoRA (full fine-tuning trains it)", s,
               part);
  }
  auto number = [&](const std::string& digits) {
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    LORA_CHECK(ec == std::errc() && end == digits.data() + digits.size() && v > 0 && v <= (int64_t{1} << 24),
               "--configs: '{}' is not MODE:BATCHxSEQ with positive sizes (e.g. lora:4x64)", s);
    return v;
  };
  c.batch = number(s.substr(colon + 1, x - colon - 1));
  c.seq = number(s.substr(x + 1));
  return c;
}

// GFLOP/s of one raw cblas_sgemm C = A B at n x n x n: the median of 5 calls after one warm-up call.
double sgemm_ceiling_gflops(int64_t n) {
  std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n));
  auto call = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(n), int(n), 1.0f, a.data(), int(n), b.data(),
                int(n), 0.0f, c.data(), int(n));
  };
  call();
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    call();
    t.push_back(seconds_since(t0));
  }
  return 2.0 * double(n) * double(n) * double(n) / median(t) / 1e9;
}

// CPU seconds (user + system) this process has used: on a loaded machine, the step's own work.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int64_t minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// One configuration, in this process: build the model, train, measure.
nlohmann::json run_one(const Options& o, const RunConfig& rc) {
  const bool lora_mode = rc.mode == "lora";
  auto model = models::create_model(models::read_config_arg(o.config), 1337);
  const models::ModelDims cfg = model->dims();
  LORA_CHECK(rc.seq <= cfg.context_length, "--configs {}: seq exceeds the context of {}", rc.str(), cfg.context_length);
  // The matmul weights: every linear layer's, and the head's (vocab x hidden), before LoRA wraps anything.
  int64_t matmul_params = cfg.vocab_size * cfg.hidden;
  for (const auto& [path, module] : model->named_modules()) {
    if (auto linear = std::dynamic_pointer_cast<nn::Linear>(module); linear && path != "lm_head") {
      matmul_params += linear->weight.numel();
    }
  }
  if (lora_mode) {
    nn::LoRAConfig lc;
    lc.options.rank = o.rank;
    lc.options.alpha = o.alpha;
    lc.targets = nn::LoRAConfig::parse_targets(o.targets);
    models::apply_lora(*model, lc);
    models::quantize_base(*model, rc.base);
  }
  optim::AdamW optimizer(model->parameters(true), {.lr = lora_mode ? 1e-3 : 1e-4, .weight_decay = 0.0});

  // N: the matmul weights (see the top of this file).
  const double n_matmul = double(matmul_params);
  const double n_lora = lora_mode ? double(model->num_parameters(true)) : 0.0;
  const double B = double(rc.batch), T = double(rc.seq), L = double(cfg.n_layer), C = double(cfg.n_head * cfg.head_dim);
  const double flops = (lora_mode ? 4.0 : 6.0) * n_matmul * B * T + 12.0 * L * T * T * C * B + 6.0 * n_lora * B * T;

  Generator gen(42);
  auto random_ids = [&] {
    std::vector<int32_t> ids(size_t(rc.batch * rc.seq));
    for (auto& id : ids) id = static_cast<int32_t>(gen.below(uint64_t(cfg.vocab_size)));
    return Tensor::from_vector(ids, {rc.batch, rc.seq});
  };
  autograd::CheckpointGuard checkpointing(rc.checkpoint);
  auto step = [&] {
    train::Batch batch;
    batch.ids = random_ids();
    batch.targets = random_ids();
    batch.trained_tokens = rc.batch * rc.seq;
    batch.sequences = rc.batch;
    const train::StepResult result = train::train_step(*model, optimizer, {batch}, {.grad_clip = o.grad_clip});
    LORA_CHECK(result.applied, "{}: {}", rc.str(), result.nonfinite);
    return result.loss;
  };
  for (int64_t i = 0; i < o.warmup; ++i) step();
  MemoryTracker::instance().reset_peaks();
  std::vector<double> times, cpu_times, faults;
  const memory::CpuAllocatorStats alloc0 = memory::cpu_allocator_stats();
  for (int64_t i = 0; i < o.steps; ++i) {
    const auto t0 = Clock::now();
    const int64_t f0 = minor_faults();
    const double c0 = cpu_seconds();
    const double loss = step();
    times.push_back(seconds_since(t0));
    cpu_times.push_back(cpu_seconds() - c0);
    faults.push_back(static_cast<double>(minor_faults() - f0));
    fmt::print(stderr, "  {} step {}/{}: {:.3f} s ({:.3f} CPU s), {} page faults (loss {:.3f})\n", rc.str(), i + 1,
               o.steps, times.back(), cpu_times.back(), faults.back(), loss);
  }
  // The median, like the step time: with one warm-up step the first timed step may still grow buffers.
  const double faults_per_step = median(faults);
  const memory::CpuAllocatorStats alloc1 = memory::cpu_allocator_stats();
  const double s = median(times);
  const auto stats = MemoryTracker::instance().stats(Device::cpu());
  nlohmann::json j;
  j["config"] = rc.str();
  j["mode"] = rc.mode;
  j["batch"] = rc.batch;
  j["seq"] = rc.seq;
  j["threads"] = num_threads();
  j["step_s"] = s;
  j["step_times_s"] = times;
  j["cpu_s_per_step"] = median(cpu_times);
  j["tokens_per_s"] = B * T / s;
  j["flops_per_step"] = flops;
  j["gflops"] = flops / s / 1e9;
  j["tracker_peak_bytes"] = stats.global_peak;
  j["activation_peak_bytes"] = stats.peak[MemoryCategory::Activation];
  j["frozen_bytes"] = stats.live[MemoryCategory::FrozenParameter];
  j["allocator_reserved_bytes"] = allocator_for(Device::cpu()).reserved_bytes(Device::cpu());
  j["peak_rss_bytes"] = tools::process_peak_rss_bytes();
  j["minor_faults_per_step"] = faults_per_step;
  // Tensor allocations per step, and those the allocator's cache could not serve (core/allocator.h).
  j["allocations_per_step"] = double(alloc1.allocations - alloc0.allocations) / double(o.steps);
  j["system_allocations_per_step"] = double(alloc1.system_allocations - alloc0.system_allocations) / double(o.steps);
  j["allocator_cached_bytes"] = alloc1.cached_bytes;
  j["allocator_cache_limit_bytes"] = alloc1.cache_limit;
  j["allocator_transient_peak_bytes"] = alloc1.transient_peak;  // the tensors' Transient blocks at most at once
  j["trainable_params"] = model->num_parameters(true);
  return j;
}

// Runs this program again for one configuration and reads back its JSON.
nlohmann::json run_child(const Options& o, const RunConfig& rc) {
  const fs::path json_path = fs::temp_directory_path() / fmt::format("bench_train_{}_{}.json", getpid(), rc.str());
  std::vector<std::string> env;
  if (o.omp_spin >= 0 && !std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    env.push_back(fmt::format("GOMP_SPINCOUNT={}", o.omp_spin));
  }
  const std::vector<std::string> argv = {tools::self_executable(),
                                         "--config",
                                         o.config,
                                         "--targets",
                                         o.targets,
                                         "--warmup",
                                         std::to_string(o.warmup),
                                         "--steps",
                                         std::to_string(o.steps),
                                         "--rank",
                                         std::to_string(o.rank),
                                         "--alpha",
                                         fmt::format("{}", o.alpha),
                                         "--grad-clip",
                                         fmt::format("{}", o.grad_clip),
                                         "--run",
                                         rc.str(),
                                         "--json",
                                         json_path.string()};
  std::fflush(stdout);
  const int status = tools::run_program(argv, env);
  LORA_CHECK(status == 0, "the {} run failed (exit status {})", rc.str(), status);
  auto j = read_json_file(json_path.string(), "the run's report");
  fs::remove(json_path);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Training-step speed and memory of a causal LM (GPT-2 small by default), full fine-tuning and LoRA, against the "
      "sgemm ceiling."};
  app.add_option("--config", o.config, "model preset (gpt2, tiny, smollm2-135m, ...) or a config.json path")
      ->capture_default_str();
  app.add_option("--targets", o.targets, "LoRA targets")->capture_default_str();
  app.add_option("--configs", o.configs, "comma-separated MODE:BATCHxSEQ list, MODE = full or lora")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--steps", o.steps, "timed steps (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--rank", o.rank, "LoRA rank")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--alpha", o.alpha, "LoRA alpha")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm to this (0: no clipping)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--ceiling-size", o.ceiling_size, "n of the n x n x n sgemm ceiling")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--omp-spin", o.omp_spin, "GOMP_SPINCOUNT for the runs (-1: libgomp's default)")
      ->capture_default_str();
  app.add_option("--json", o.json, "write the results as JSON to this file");
  app.add_option("--run", o.run, "(internal) run one MODE:BATCHxSEQ configuration in this process");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!o.run.empty()) {  // the child
      const nlohmann::json j = run_one(o, parse_config(o.run));
      if (!o.json.empty())
        std::ofstream(o.json) << j.dump(2) << "\n";
      else
        fmt::print("{}\n", j.dump(2));
      return 0;
    }
    std::vector<RunConfig> configs;
    std::stringstream ss(o.configs);
    for (std::string item; std::getline(ss, item, ',');) configs.push_back(parse_config(item));

    fmt::print(
        "bench_train: '{}', {} threads, {} warm-up + {} timed steps (median), AdamW; LoRA r={} on {}; "
        "GOMP_SPINCOUNT={}\n",
        o.config, num_threads(), o.warmup, o.steps, o.rank, o.targets,
        std::getenv("GOMP_SPINCOUNT")                      ? std::getenv("GOMP_SPINCOUNT")
        : std::getenv("OMP_WAIT_POLICY") || o.omp_spin < 0 ? "default"
                                                           : std::to_string(o.omp_spin));
    const double ceiling = sgemm_ceiling_gflops(o.ceiling_size);
    // What no product can beat: every thread's multiply-add units, busy on registers alone.
    const cpu::ComputeResult peak = cpu::measure_fma_peak(20'000'000, 5);
    fmt::print(
        "sgemm ceiling (raw cblas_sgemm, {0} x {0} x {0}, OpenBLAS {2} kernels): {1:.1f} GFLOP/s, {3:.0f}% of the f32 "
        "multiply-add peak ({4}, {5} threads): {6:.1f} GFLOP/s\n",
        o.ceiling_size, ceiling, blas_kernel_family(), 100 * ceiling / peak.best_gflops, cpu::isa_name(peak.isa),
        peak.threads, peak.best_gflops);
    if (const std::string notice = blas_kernel_notice(); !notice.empty()) fmt::print("{}\n", notice);
    nlohmann::json all;
    all["ceiling_gflops"] = ceiling;
    all["fma_peak_gflops"] = peak.best_gflops;
    all["threads"] = num_threads();
    all["omp_spin"] = o.omp_spin;
    all["results"] = nlohmann::json::array();
    for (const auto& rc : configs) {
      fmt::print(stderr, "running {} ...\n", rc.str());
      all["results"].push_back(run_child(o, rc));
    }
    fmt::print("\n{:<22} {:>8} {:>9} {:>8} {:>7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>11} {:>11} {:>13}\n", "config",
               "step s", "tokens/s", "GFLOP/s", "% ceil", "frozen", "activations", "tracker peak", "cached", "peak RSS",
               "faults/step", "allocs/step", "sys allocs/st");
    for (auto& r : all["results"]) {
      r["fraction_of_ceiling"] = r["gflops"].get<double>() / ceiling;
      fmt::print(
          "{:<22} {:>8.3f} {:>9.0f} {:>8.1f} {:>6.0f}% {:>12} {:>12} {:>12} {:>10} {:>10} {:>11.0f} {:>11.0f} "
          "{:>13.0f}\n",
          r["config"].get<std::string>(), r["step_s"].get<double>(), r["tokens_per_s"].get<double>(),
          r["gflops"].get<double>(), 100 * r["fraction_of_ceiling"].get<double>(),
          tools::human_bytes(r["frozen_bytes"].get<int64_t>()),
          tools::human_bytes(r["activation_peak_bytes"].get<int64_t>()),
          tools::human_bytes(r["tracker_peak_bytes"].get<int64_t>()),
          tools::human_bytes(r["allocator_cached_bytes"].get<int64_t>()),
          tools::human_bytes(r["peak_rss_bytes"].get<int64_t>()), r["minor_faults_per_step"].get<double>(),
          r["allocations_per_step"].get<double>(), r["system_allocations_per_step"].get<double>());
    }
    fmt::print(
        "A quantized base (+bf16, +int8, +nf4) and checkpointing (+ckpt) keep the FLOPs of their mode (the "
        "recomputation is not counted).\n");
    fmt::print(
        "FLOPs per step: full 6 N B T + 12 L T^2 C B, LoRA 4 N B T + 12 L T^2 C B + 6 N_lora B T "
        "(N = linear and head weights)\n");
    if (!o.json.empty()) std::ofstream(o.json) << all.dump(2) << "\n";
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
