// bench_serve: what serving costs. Three parts, each printing the machine's load average beside it:
//
// 1. the memory bandwidth bound: a streaming read of a buffer far larger than the caches, with the same
//    threads and vector loads (backends/cpu/bandwidth_probe.h); generation at batch 1 reads every weight
//    once per token, so tokens/s <= bandwidth / bytes;
// 2. decoding at batch 1 (prompt 16, --new-tokens): models::generate and the DecodeEngine with one request,
//    against that bound;
// 3. many adapters: --requests requests (all arriving at once) on the base alone (the baseline), then spread
//    round-robin over 1, 16 and 64 distinct adapters (rank --rank on q, v), served either as mixed batches in
//    one pass (every request in one
//    engine batch, each row gathering its adapter) or one adapter at a time (each adapter's requests as one
//    batch, the next adapter's after it: PEFT's sub-batches). Throughput in generated tokens/s and request
//    latency p50/p99 (from arrival to the last token). One adapter at a time runs twice: on the engine the
//    mixed batch used and on a fresh one; both do the same work, which the counts printed beside the times
//    show (steps, tensor and system allocations, page faults, CPU seconds and the share of the cores the
//    run got: the times follow the machine's load).
//
//   bench_serve                                   GPT-2 small (random init), 2 threads by LORA_NUM_THREADS
//   bench_serve --config tiny --requests 16       a quick run
//   bench_serve --skip-adapters                   parts 1 and 2 only
//   bench_serve --weights DIR --skip-adapters --llama-bench
//                                                 also llama-bench's pp128 / tg64 on a Hugging Face folder
//   bench_serve --save-weights DIR                writes the random model as a Hugging Face folder and exits
//                                                 (config.json + model.safetensors: llama.cpp's converter
//                                                 reads it, so both programs run the same weights)
//
// --llama-bench measures what `llama-bench -p 128 -n 64` does: prompt processing (one forward pass over
// --pp-tokens prompt tokens, logits and KV cache included, tokens/s) and generation (--tg-tokens tokens one
// at a time with the KV cache after a one-token prompt, tokens/s); each the best of --repeats runs.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <omp.h>
#include <CLI/CLI.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <numeric>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/bandwidth_probe.h"
#include "core/allocator.h"
#include "core/step_arena.h"
#include "core/stopwatch.h"
#include "models/generate.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"
#include "serve/adapter_set.h"
#include "serve/decode_engine.h"
#include "tools/bench_support.h"
#include "tools/subprocess.h"

using namespace lora;
using Clock = std::chrono::steady_clock;

// Every operator new of the program, counted: the C++ objects a step makes on the heap (tensor headers, small
// vectors), which the tensor allocator's counts do not see. Replacing the global operator new is the standard's
// way to observe it; the aligned forms are not replaced (libstdc++ serves them from aligned_alloc, not from these).
namespace {
std::atomic<int64_t> heap_allocations{0};
void* counted_new(std::size_t n) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(std::size_t n) { return counted_new(n); }
void* operator new[](std::size_t n) { return counted_new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

// libgomp lets a thread that has finished its share spin for up to 300,000 iterations before it sleeps; on a
// loaded machine the spinning thread takes the time slices the working one needs and wall times swing by up to
// 3x between identical runs (benchmarks/bench_train.cpp). libgomp reads GOMP_SPINCOUNT when it is loaded,
// before main(), so this program runs itself again with GOMP_SPINCOUNT=10000 unless OMP_WAIT_POLICY or
// GOMP_SPINCOUNT is set.
void rerun_with_short_spin(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("GOMP_SPINCOUNT", "10000", 1);
  const std::string self = tools::self_executable();
  execv(self.c_str(), argv);  // returns only when it failed: then this run goes on with libgomp's default
}

std::vector<int32_t> random_prompt(int64_t n, int64_t vocab, Generator& gen) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(vocab));
  return ids;
}

// What a stretch of work cost in counts, which the machine's load does not change: tensor allocations, those
// the allocator's cache could not serve, page faults, and CPU seconds (less load-sensitive than wall time).
struct Counts {
  int64_t allocations = 0, system_allocations = 0, faults = 0;
  double cpu_s = 0;
  int64_t heap = 0;  // operator new calls (C++ objects)
  static Counts now() {
    const memory::CpuAllocatorStats a = memory::cpu_allocator_stats();
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return {a.allocations, a.system_allocations, u.ru_minflt,
            double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec),
            heap_allocations.load()};
  }
  Counts operator-(const Counts& o) const {
    return {allocations - o.allocations, system_allocations - o.system_allocations, faults - o.faults,
            cpu_s - o.cpu_s, heap - o.heap};
  }
};

struct RunResult {
  double seconds = 0, tokens_per_s = 0, p50 = 0, p99 = 0;
  int64_t steps = 0;
  int64_t prompt_passes = 0;  // the engine's forward passes over prompts
  Counts counts;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

// Serves `requests` (all arriving at t0) in `groups`, one group after the other; each group is one engine
// batch. Latency: from t0 to a request's last token.
RunResult serve_groups(serve::DecodeEngine& engine, const std::vector<std::vector<serve::Request>>& groups) {
  std::vector<double> latency;
  int64_t tokens = 0, steps = 0;
  const int64_t passes0 = engine.prompt_passes();
  const Counts c0 = Counts::now();
  const auto t0 = Clock::now();
  for (const auto& group : groups) {
    for (serve::Request r : group) {
      r.on_event = [&](const serve::Event& e) {
        tokens += e.token >= 0 ? 1 : 0;
        if (e.finish != serve::FinishReason::None) latency.push_back(seconds_since(t0));
      };
      engine.submit(std::move(r));
    }
    while (engine.step()) ++steps;
    ++steps;
  }
  RunResult out;
  out.seconds = seconds_since(t0);
  out.steps = steps;
  out.prompt_passes = engine.prompt_passes() - passes0;
  out.counts = Counts::now() - c0;
  out.tokens_per_s = static_cast<double>(tokens) / out.seconds;
  out.p50 = percentile(latency, 0.5);
  out.p99 = percentile(latency, 0.99);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Serving benchmarks: the bandwidth bound, batch-1 decoding, and many adapters in one batch vs one at a time."};
  std::string config = "gpt2";
  int64_t new_tokens = 32, prompt_tokens = 16, requests = 64, adapter_tokens = 16, rank = 8;
  int64_t bandwidth_mib = static_cast<int64_t>(cpu::default_probe_bytes() >> 20);
  int64_t pp_tokens = 128, tg_tokens = 64, repeats = 5;
  bool skip_adapters = false, skip_decode = false, llama_bench = false;
  std::string weights, save_weights, base_dtype = "f32";
  app.add_option("--config", config, "A preset or config.json (random weights)")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Tokens generated at batch 1")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "Prompt length of every request")->capture_default_str();
  app.add_option("--requests", requests, "Requests in the many-adapter runs")->capture_default_str();
  app.add_option("--adapter-tokens", adapter_tokens, "Tokens generated per request in the many-adapter runs")
      ->capture_default_str();
  app.add_option("--rank", rank, "Rank of the adapters (on q and v)")->capture_default_str();
  int64_t prompt_pass_tokens = serve::EngineOptions{}.prompt_pass_tokens;
  app.add_option("--prompt-pass-tokens", prompt_pass_tokens,
                 "The engine's prompt passes in the many-adapter runs (1: one prompt per pass)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--bandwidth-mib", bandwidth_mib, "Buffer read by the bandwidth test")->capture_default_str();
  app.add_flag("--skip-adapters", skip_adapters, "Only the bandwidth bound and batch-1 decoding");
  app.add_flag("--skip-decode", skip_decode, "Only the bandwidth bound and the many-adapter runs");
  app.add_option("--weights", weights, "Hugging Face model folder (default: random init from --config)");
  app.add_option("--base-dtype", base_dtype,
                 "Hold the linear layers' weights (the head aside) as f32, bf16, q8_0, q4_0 or nf4, or auto (a "
                 "compact folder's own format, f32 otherwise)")
      ->capture_default_str();
  app.add_option("--save-weights", save_weights, "Write the (random) model as a Hugging Face folder and exit");
  app.add_flag("--llama-bench", llama_bench,
               "Also measure llama-bench's prompt (--pp-tokens) and generation (--tg-tokens)");
  app.add_option("--pp-tokens", pp_tokens, "Prompt length of the --llama-bench prompt test")->capture_default_str();
  app.add_option("--tg-tokens", tg_tokens, "Tokens generated by the --llama-bench generation test")
      ->capture_default_str();
  app.add_option("--repeats", repeats, "Runs of each --llama-bench test (best kept)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  rerun_with_short_spin(argv);

  try {
    const int threads = num_threads();
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    fmt::print("threads {}, load average {:.2f}, GOMP_SPINCOUNT={}, OMP_WAIT_POLICY={}\n", threads,
               tools::load_average(), spin ? spin : "(libgomp's default)", policy ? policy : "(unset)");
    const cpu::BandwidthResult probe = cpu::measure_read_bandwidth(static_cast<size_t>(bandwidth_mib) << 20, 5);
    const double gbps = probe.best_gbps;
    fmt::print("streaming read of {} MiB (last-level cache {} MiB), {} threads: {:.2f} GB/s best, {:.2f} median of 5\n",
               bandwidth_mib, cpu::last_level_cache_bytes() >> 20, probe.threads, gbps, probe.median_gbps);

    // A compact folder (quantize) is read as stored, a float one quantized while loading (the same bits as
    // quantizing after); a random model is quantized below.
    const models::BaseDtype base = models::BaseDtype::parse(base_dtype);
    const QuantFormat base_format = models::resolved_base_format(base, weights);
    auto model = weights.empty() ? models::create_model(models::read_config_arg(config), 1)
                                 : models::load_model(weights, "", 1, base);
    model->eval();
    if (!save_weights.empty()) {
      models::save_hf_checkpoint(*model, save_weights);
      fmt::print("wrote '{}' to {}\n", weights.empty() ? config : weights, save_weights);
      return 0;
    }
    if (base_format != QuantFormat::F32) {
      model->freeze();  // inference: nothing trains
      fmt::print("base weights as {}: {}\n", quant_format_name(base_format),
                 models::quantize_base(*model, base_format, /*inference_head=*/true).str());
    }
    // Bytes a decode step reads: every parameter once (a tied head is one tensor), quantized weights included.
    size_t weight_bytes = 0;
    for (const Tensor& p : model->parameters()) weight_bytes += p.nbytes();
    for (const auto& [path, compact] : nn::named_compact_weights(*model)) weight_bytes += compact->nbytes();
    if (const auto& head = model->inference_head()) {  // logits read the quantized head, not the f32 one
      weight_bytes += head->nbytes() - static_cast<size_t>(head->rows * head->cols) * sizeof(float);
    }
    const double bound = gbps * 1e9 / static_cast<double>(weight_bytes);
    fmt::print("model '{}': {:.1f} MB of weights -> bandwidth bound {:.1f} tokens/s at batch 1\n",
               weights.empty() ? config : weights, static_cast<double>(weight_bytes) / 1e6, bound);
    const int64_t vocab = model->dims().vocab_size;
    Generator gen(3);

    if (!skip_decode) {
      const std::vector<int32_t> prompt = random_prompt(prompt_tokens, vocab, gen);
      models::SamplingOptions o;
      o.max_new_tokens = new_tokens;
      o.temperature = 0;
      o.stop_at_eos = false;
      models::SamplingOptions warm = o;
      warm.max_new_tokens = 2;
      models::generate(*model, prompt, warm);  // warm-up
      auto t = Clock::now();
      const size_t n = models::generate(*model, prompt, o).size();
      const double generate_tps = static_cast<double>(n - 1) / seconds_since(t);  // the prompt's step excluded
      fmt::print("batch 1, models::generate: {:.1f} tokens/s ({:.0f}% of the bound), load {:.2f}\n", generate_tps,
                 100 * generate_tps / bound, tools::load_average());

      serve::AdapterSet set(*model, 1);
      serve::DecodeEngine engine(*model, set,
                                 {.max_sequences = 1, .max_queue = 1, .capacity = prompt_tokens + new_tokens});
      std::vector<double> stamps;
      serve::Request r;
      r.prompt = prompt;
      r.options.max_tokens = new_tokens;
      r.options.temperature = 0;
      r.options.stop_at_eos = false;
      r.on_event = [&](const serve::Event& e) {
        if (e.token >= 0) stamps.push_back(std::chrono::duration<double>(Clock::now().time_since_epoch()).count());
      };
      engine.submit(r);
      // The first step runs the prompt (and one decode step); the rest are decode steps alone, counted
      // from the third step on (the second one sizes the decode step's buffers).
      // The last step (the one that finishes the request) is left out.
      Counts c0, c1;
      StepArena::Stats a0, a1;
      int64_t decode_steps = 0;
      for (int64_t step = 1; engine.step(); ++step) {
        if (step == 2) c0 = Counts::now(), a0 = engine.step_arena().stats();
        if (step > 2) c1 = Counts::now(), a1 = engine.step_arena().stats(), ++decode_steps;
      }
      const Counts per = c1 - c0;
      const double engine_tps = static_cast<double>(stamps.size() - 1) / (stamps.back() - stamps.front());
      fmt::print("batch 1, DecodeEngine:     {:.1f} tokens/s ({:.0f}% of the bound), load {:.2f}\n", engine_tps,
                 100 * engine_tps / bound, tools::load_average());
      if (decode_steps > 0) {
        const double n = static_cast<double>(decode_steps);
        fmt::print(
            "batch 1, DecodeEngine, per steady decode step ({} steps): {:.1f} tensors from the step arena ({} in "
            "its buffer), {:.1f} tensor allocations, {:.1f} system allocations, {:.1f} heap objects (operator new), "
            "{:.1f} page faults\n",
            decode_steps, static_cast<double>(a1.carved - a0.carved) / n,
            format_bytes(static_cast<int64_t>(engine.step_arena().capacity())),
            static_cast<double>(per.allocations) / n, static_cast<double>(per.system_allocations) / n,
            static_cast<double>(per.heap) / n, static_cast<double>(per.faults) / n);
      }
    }

    if (llama_bench) {
      // Prompt processing: generate with one new token is one forward pass over the prompt plus a sample.
      models::SamplingOptions o;
      o.temperature = 0;
      o.stop_at_eos = false;
      o.max_new_tokens = 1;
      const std::vector<int32_t> pp_prompt = random_prompt(pp_tokens, vocab, gen);
      models::generate(*model, pp_prompt, o);  // warm-up
      double pp_best = 0, tg_best = 0;
      for (int64_t r = 0; r < repeats; ++r) {
        const auto t = Clock::now();
        models::generate(*model, pp_prompt, o);
        pp_best = std::max(pp_best, static_cast<double>(pp_tokens) / seconds_since(t));
      }
      // Generation: a one-token prompt, then tg_tokens tokens; the first comes from the prompt's pass.
      o.max_new_tokens = tg_tokens;
      const std::vector<int32_t> one = random_prompt(1, vocab, gen);
      // Each run is also set against a streaming read taken just before it: on a machine whose memory speed
      // drifts (a VM whose neighbours come and go read 42 GB/s in one minute and 79 the next), a bound from
      // the start of the program says little about a run a minute later.
      std::vector<std::string> near_bounds;
      for (int64_t r = 0; r < repeats; ++r) {
        const double near_gbps = cpu::measure_read_bandwidth(static_cast<size_t>(bandwidth_mib) << 20, 2).best_gbps;
        const auto t = Clock::now();
        const size_t n = models::generate(*model, one, o).size();
        const double tps = static_cast<double>(n) / seconds_since(t);
        tg_best = std::max(tg_best, tps);
        near_bounds.push_back(fmt::format("{:.1f} tokens/s at {:.0f}% of {:.1f} GB/s", tps,
                                          100 * tps * static_cast<double>(weight_bytes) / (near_gbps * 1e9), near_gbps));
      }
      fmt::print(
          "llama-bench style, best of {}: pp{} {:.1f} tokens/s, tg{} {:.1f} tokens/s ({:.0f}% of the bound), load "
          "{:.2f}\n",
          repeats, pp_tokens, pp_best, tg_tokens, tg_best, 100 * tg_best / bound, tools::load_average());
      fmt::print("tg{} runs against a streaming read taken just before each: {}\n", tg_tokens,
                 fmt::join(near_bounds, "; "));
    }

    if (!skip_adapters) {
      fmt::print("\n{} requests, prompt {} + {} new tokens each, adapters of rank {} on q, v\n", requests,
                 prompt_tokens, adapter_tokens, rank);
      fmt::print(
          "| adapters | mode | engine | tokens/s | p50 latency s | p99 latency s | total s | load | steps | CPU s | "
          "CPU share | tensor allocations | system allocations | page faults "
          "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      std::vector<nn::AdapterState> states;
      for (int64_t a = 0; a < 64; ++a) states.push_back(tools::random_adapter(*model, rank, {"q", "v"}, 100 + a));
      std::vector<std::vector<int32_t>> prompts;
      for (int64_t i = 0; i < requests; ++i) prompts.push_back(random_prompt(prompt_tokens, vocab, gen));
      auto print_row = [&](int64_t n_adapters, const char* mode, const char* engine_kind, const RunResult& r) {
        // CPU share: the CPU seconds the run got over what its threads could have had (wall x threads).
        fmt::print(
            "| {} | {} | {} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} | {:.2f} | {:.0f}% | {} | {} | {} |\n",
            n_adapters, mode, engine_kind, r.tokens_per_s, r.p50, r.p99, r.seconds, tools::load_average(), r.steps,
            r.counts.cpu_s, 100 * r.counts.cpu_s / (r.seconds * threads), r.counts.allocations,
            r.counts.system_allocations, r.counts.faults);
        std::fflush(stdout);
      };
      std::vector<std::string> comparisons;
      const serve::EngineOptions engine_options{.max_sequences = requests,
                                                .max_queue = requests,
                                                .capacity = prompt_tokens + adapter_tokens,
                                                .prompt_pass_tokens = prompt_pass_tokens};
      // The baseline: the same requests on the base model alone, one batch.
      RunResult base_only;
      {
        serve::AdapterSet set(*model, 64);
        std::vector<serve::Request> all;
        for (int64_t i = 0; i < requests; ++i) {
          serve::Request r;
          r.prompt = prompts[static_cast<size_t>(i)];
          r.options.max_tokens = adapter_tokens;
          r.options.temperature = 0;
          r.options.stop_at_eos = false;
          all.push_back(r);
        }
        // Once untimed first: the process's first batch grows the allocator's cache and faults pages in, which
        // would count against the baseline alone.
        {
          serve::DecodeEngine warm_up(*model, set, engine_options);
          serve_groups(warm_up, {all});
        }
        serve::DecodeEngine engine(*model, set, engine_options);
        base_only = serve_groups(engine, {all});
        print_row(0, "no adapter, one pass", "fresh", base_only);
      }
      for (const int64_t n_adapters : {1, 16, 64}) {
        serve::AdapterSet set(*model, 64);
        for (int64_t a = 0; a < n_adapters; ++a) set.load(fmt::format("a{}", a), states[static_cast<size_t>(a)]);
        std::vector<std::vector<serve::Request>> by_adapter(static_cast<size_t>(n_adapters));
        for (int64_t i = 0; i < requests; ++i) {
          serve::Request r;
          r.prompt = prompts[static_cast<size_t>(i)];
          r.adapter = fmt::format("a{}", i % n_adapters);
          r.options.max_tokens = adapter_tokens;
          r.options.temperature = 0;
          r.options.stop_at_eos = false;
          by_adapter[static_cast<size_t>(i % n_adapters)].push_back(r);
        }
        std::vector<serve::Request> all;
        for (const auto& g : by_adapter) all.insert(all.end(), g.begin(), g.end());
        // Each mode on a fresh engine, and one adapter at a time also on the engine the mixed batch just used:
        // the two must cost the same (same steps, same counts), or reusing an engine carries something over.
        RunResult mixed, one_reused, one_fresh;
        {
          serve::DecodeEngine engine(*model, set, engine_options);
          mixed = serve_groups(engine, {all});
          print_row(n_adapters, "mixed batch, one pass", "fresh", mixed);
          one_reused = serve_groups(engine, by_adapter);
          print_row(n_adapters, "one adapter at a time", "reused", one_reused);
        }
        {
          serve::DecodeEngine engine(*model, set, engine_options);
          one_fresh = serve_groups(engine, by_adapter);
          print_row(n_adapters, "one adapter at a time", "fresh", one_fresh);
        }
        comparisons.push_back(fmt::format(
            "mixed batch over {} distinct adapter(s) / the same requests with no adapter: {:.1f} / {:.1f} tokens/s = "
            "{:.2f}x; CPU s {:.2f} / {:.2f}; prompt passes {} / {}",
            std::min(n_adapters, requests), mixed.tokens_per_s, base_only.tokens_per_s,
            mixed.tokens_per_s / base_only.tokens_per_s, mixed.counts.cpu_s, base_only.counts.cpu_s,
            mixed.prompt_passes, base_only.prompt_passes));
        comparisons.push_back(fmt::format(
            "{} adapters, one adapter at a time, reused engine / fresh engine: steps {} / {}, tensor allocations {} / "
            "{}, system allocations {} / {}, page faults {} / {}, CPU s {:.2f} / {:.2f} (x{:.2f}), wall s {:.2f} / "
            "{:.2f} (x{:.2f}, under load)",
            n_adapters, one_reused.steps, one_fresh.steps, one_reused.counts.allocations, one_fresh.counts.allocations,
            one_reused.counts.system_allocations, one_fresh.counts.system_allocations, one_reused.counts.faults,
            one_fresh.counts.faults, one_reused.counts.cpu_s, one_fresh.counts.cpu_s,
            one_reused.counts.cpu_s / one_fresh.counts.cpu_s, one_reused.seconds, one_fresh.seconds,
            one_reused.seconds / one_fresh.seconds));
      }
      fmt::print("\n");
      for (const std::string& line : comparisons) fmt::print("{}\n", line);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
