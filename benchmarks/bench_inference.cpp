// bench_inference: GPT-2 inference latency without LoRA, with an unmerged LoRA, and with the LoRA merged
// into the weights: one forward pass of 1 x 128 tokens, and 64 greedy tokens with the KV cache after a
// 16-token prompt. The LoRA paper's claim to check: a merged adapter adds no latency.
//
//   bench_inference                           GPT-2 small (random init), r=8 on q,v, median of 5 runs
//   bench_inference --weights models/gpt2 --rank 16 --targets q,k,v,attn.c_proj --repeats 9 --threads 2
//
// Five variants: "base"; "LoRA unmerged" (base(x) + s (x A^T) B^T: two extra thin gemms per adapted layer);
// "LoRA merged" (W + s B A in the base weight, the wrappers kept: generate --adapter --merge); "merged,
// unwrapped" (a plain GPT-2 holding the merged weights: what merge_lora writes); and "base, 2nd copy", an
// identical base model built last, whose gap to "base" is the noise floor (load, memory placement) that
// any other gap is judged against. B gets small random values so the merge changes the weights. Runs are
// interleaved across variants (round-robin, rotating the order), so a change in machine load hits every
// variant alike; a variant's spread is half the range of its runs (without the fastest and the slowest,
// given five or more), relative to its median. On a busy machine the fastest runs (the min column, and
// the last part of each summary line) are the steadier figure: noise only ever adds time.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "core/error.h"
#include "models/generate.h"
#include "models/lora.h"
#include "models/registry.h"
#include "nn/lora/apply_lora.h"
#include "tools/bench_support.h"

using namespace lora;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string weights, config = "gpt2", targets = "q,v", device = "cpu";
  int64_t rank = 8, seq = 128, prompt_tokens = 16, new_tokens = 64;
  double alpha = 16, b_std = 0.02;
  int repeats = 5, threads = num_threads();
  uint64_t seed = 1;
  bool json = false;
};

struct Stats {
  std::vector<double> ms;
  double median() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    return s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  }
  double min() const { return *std::min_element(ms.begin(), ms.end()); }
  // Half the range of the runs, relative to the median: how far apart the runs of one variant are. With
  // five runs or more, the fastest and the slowest are left out (one stalled run should not hide a real gap).
  double spread() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    const size_t cut = s.size() >= 5 ? 1 : 0;
    return (s[s.size() - 1 - cut] - s[cut]) / 2.0 / median();
  }
};

double time_ms(const std::function<void()>& f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(vocab));
  return ids;
}

std::shared_ptr<models::CausalLM> make_model(const Options& o, const std::string& config_given) {
  return models::load_model(o.weights, o.weights.empty() ? o.config : config_given, o.seed);
}

// A plain model holding `lora_model`'s (merged) base weights: the model merge_lora writes.
std::shared_ptr<models::CausalLM> unwrapped_copy(const models::CausalLM& lora_model) {
  auto plain = models::create_model({lora_model.hf_config(), "the LoRA model's config"}, 0);
  std::map<std::string, Tensor> merged;
  for (const auto& [name, param] : lora_model.named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;
    std::string plain_name = name;
    for (size_t at; (at = plain_name.find(".base_layer.")) != std::string::npos;) plain_name.erase(at, 11);
    merged.emplace(plain_name, param);
  }
  NoGradGuard no_grad;
  for (auto& [name, param] : plain->named_parameters()) param.copy_from(merged.at(name));
  return plain;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

std::string signed_percent(double ratio) {
  return fmt::format("{:+.1f} %", (ratio - 1.0) * 100.0);
}

// The five variants (see the top of the file): the models they run and, per variant, its timings and the
// outputs of its warm-up run.
struct Variant {
  Variant(std::string n, models::CausalLM* m, bool mg) : name(std::move(n)), model(m), merged(mg) {}
  std::string name;
  models::CausalLM* model;
  bool merged;  // the state of the LoRA model's adapters for this variant
  Stats forward, generate;
  std::vector<float> logits;
  std::vector<int32_t> tokens;
};

struct Models {
  std::shared_ptr<models::CausalLM> base, lora, unwrapped, base_again;
  nn::LoRASummary summary;
};

// base; the same weights with LoRA (unmerged and merged by toggling); a plain copy of the merged weights;
// a second, identical base model (the A/A control). All on `device`, in eval mode.
Models build_models(const Options& o, const std::string& config_given, Device device) {
  Models m;
  m.base = make_model(o, config_given);
  const models::ModelDims c = m.base->dims();
  LORA_CHECK(o.seq <= c.context_length, "--seq {} exceeds the model's context of {}", o.seq, c.context_length);
  LORA_CHECK(o.prompt_tokens + o.new_tokens <= c.context_length,
             "--prompt-tokens {} + --new-tokens {} exceed the model's context of {}", o.prompt_tokens, o.new_tokens,
             c.context_length);
  m.lora = make_model(o, config_given);
  nn::LoRAConfig lc;
  lc.options.rank = o.rank;
  lc.options.alpha = o.alpha;
  lc.options.seed = o.seed;
  lc.targets = nn::LoRAConfig::parse_targets(o.targets);
  m.summary = models::apply_lora(*m.lora, lc);
  {
    Generator gen(o.seed + 7);
    NoGradGuard no_grad;
    for (auto& [path, layer] : nn::lora_layers(*m.lora)) {
      layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0.0, o.b_std));
    }
  }
  nn::merge_lora(*m.lora);
  m.unwrapped = unwrapped_copy(*m.lora);
  nn::unmerge_lora(*m.lora);
  m.base_again = make_model(o, config_given);
  for (auto* model : {&m.base, &m.lora, &m.unwrapped, &m.base_again}) {
    (*model)->to(device);
    (*model)->eval();
  }
  return m;
}

// What every variant runs: one forward pass over `ids`, and greedy generation after `prompt`.
struct Workload {
  Tensor ids;
  std::vector<int32_t> prompt;
  models::SamplingOptions sampling;
};

// One run of a variant; timed runs add to its statistics, the warm-up keeps its outputs.
void run_variant(Variant& v, models::CausalLM& lora_model, const Workload& w, bool timed) {
  NoGradGuard no_grad;
  if (v.model == &lora_model) v.merged ? nn::merge_lora(lora_model) : nn::unmerge_lora(lora_model);
  std::vector<float> logits;
  const double f =
      time_ms([&] { logits = v.model->forward(w.ids).to_vector<float>(); });  // to_vector waits for the device
  std::vector<int32_t> tokens;
  const double g = time_ms([&] { tokens = models::generate(*v.model, w.prompt, w.sampling); });
  if (timed) {
    v.forward.ms.push_back(f);
    v.generate.ms.push_back(g);
  } else {
    v.logits = std::move(logits);
    v.tokens = std::move(tokens);
  }
}

void print_table(const std::vector<Variant>& variants, const Options& o, double load_before, double load_after) {
  const Variant& b = variants[0];
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  fmt::print(
      "load average {:.1f} before, {:.1f} after the runs, on {} cores (this benchmark's own threads count in it){}\n\n",
      load_before, load_after, cores,
      load_after > cores + 0.5 ? ": other processes competed for the cores, so the figures are noisy" : "");
  fmt::print("{:<18} | {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} {:>9}\n", "", "forward", "", "", "generate", "", "",
             "");
  fmt::print("{:<18} | {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} {:>9}\n", "variant", "median ms", "min ms", "ratio",
             "median ms", "min ms", "ratio", "tokens/s");
  fmt::print("{:-<18}-+-{:-<29}-+-{:-<39}\n", "", "", "");
  for (const Variant& v : variants) {
    fmt::print("{:<18} | {:>10.2f} {:>10.2f} {:>7.3f} | {:>10.2f} {:>10.2f} {:>7.3f} {:>9.1f}\n", v.name,
               v.forward.median(), v.forward.min(), v.forward.median() / b.forward.median(), v.generate.median(),
               v.generate.min(), v.generate.median() / b.generate.median(),
               double(o.new_tokens) / (v.generate.median() / 1000.0));
  }
}

// Same function (the merged variants compute what the unmerged adapter does), then the zero-latency
// claim: merged vs base, judged against the noise: the spread of the runs and the gap between the base
// model and its identical copy.
void print_verdicts(const std::vector<Variant>& variants, const Options& o) {
  const Variant &b = variants[0], &unmerged = variants[1], &merged = variants[2], &plain = variants[3],
                &again = variants[4];
  fmt::print(
      "\noutputs: max |logit diff| merged vs unmerged {:.2e}, unwrapped vs unmerged {:.2e}, LoRA vs base {:.2e}; "
      "greedy tokens merged {} unmerged\n",
      max_abs_diff(merged.logits, unmerged.logits), max_abs_diff(plain.logits, unmerged.logits),
      max_abs_diff(unmerged.logits, b.logits), merged.tokens == unmerged.tokens ? "==" : "!=");
  auto verdict = [&](const Stats& v, const Stats& base_stats, const Stats& again_stats) {
    const double diff = v.median() / base_stats.median() - 1.0;
    const double noise =
        std::max({v.spread(), base_stats.spread(), std::abs(again_stats.median() / base_stats.median() - 1.0)});
    const char* judged = o.repeats < 3             ? "too few runs to judge"
                         : noise > 0.10            ? "too noisy to judge"
                         : std::abs(diff) <= noise ? "within noise"
                                                   : "beyond noise";
    return fmt::format("{} (noise ±{:.1f} %: {})", signed_percent(v.median() / base_stats.median()), noise * 100.0,
                       judged);
  };
  auto fastest = [&](const Variant& v) {
    return fmt::format("fastest runs: forward {}, generate {}", signed_percent(v.forward.min() / b.forward.min()),
                       signed_percent(v.generate.min() / b.generate.min()));
  };
  fmt::print("base, 2nd copy vs base: forward {}, generate {} (the same model twice: the noise floor); {}\n",
             signed_percent(again.forward.median() / b.forward.median()),
             signed_percent(again.generate.median() / b.generate.median()), fastest(again));
  for (const Variant* v : {&merged, &plain, &unmerged}) {
    fmt::print("{} vs base: forward {}, generate {}; {}\n", v->name, verdict(v->forward, b.forward, again.forward),
               verdict(v->generate, b.generate, again.generate), fastest(*v));
  }
}

void print_json(const std::vector<Variant>& variants) {
  nlohmann::json j = nlohmann::json::object();
  for (const Variant& v : variants) {
    j[v.name] = {{"forward_ms", v.forward.median()},     {"generate_ms", v.generate.median()},
                 {"forward_min_ms", v.forward.min()},    {"generate_min_ms", v.generate.min()},
                 {"forward_spread", v.forward.spread()}, {"generate_spread", v.generate.spread()}};
  }
  j["max_abs_logit_diff_merged_unmerged"] = max_abs_diff(variants[2].logits, variants[1].logits);
  j["same_tokens_merged_unmerged"] = variants[2].tokens == variants[1].tokens;
  fmt::print("{}\n", j.dump());
}

// The flags; returns --config's option (whether it was given decides how --weights is read).
CLI::Option* add_flags(CLI::App& app, Options& o) {
  app.add_option("--weights", o.weights, "Hugging Face model folder or .safetensors (default: random init)");
  app.add_option("--rank", o.rank, "LoRA rank r")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
  app.add_option("--alpha", o.alpha, "LoRA alpha")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--targets", o.targets,
                 "LoRA targets: q,k,v, attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj or patterns")
      ->capture_default_str();
  app.add_option("--b-std", o.b_std, "standard deviation of LoRA's B (random so the merge is real)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seq", o.seq, "tokens in the forward pass (batch 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  app.add_option("--prompt-tokens", o.prompt_tokens, "prompt length before generating")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  app.add_option("--new-tokens", o.new_tokens, "tokens generated (greedy, KV cache)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  app.add_option("--repeats", o.repeats, "timed runs per variant (the median is reported), after one warm-up run")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads for OpenBLAS and OpenMP")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda[:N]")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the random model, the adapters and the tokens")->capture_default_str();
  app.add_flag("--json", o.json, "end with one JSON line: each variant's median and fastest times (ms) and spreads");
  return app
      .add_option("--config", o.config,
                  "preset (gpt2, ..., tiny, smollm2-135m, llama-tiny) or config.json, for the random "
                  "model or a bare .safetensors")
      ->capture_default_str();
}

// Builds the models and the workload, runs every variant interleaved round-robin, prints the table, the
// verdicts and (--json) the figures.
void run_benchmark(const Options& o, bool config_given) {
  set_num_threads(o.threads);
  const Device device = Device::parse(o.device);
  const Models m = build_models(o, config_given ? o.config : "", device);
  const models::ModelDims c = m.base->dims();
  std::vector<Variant> variants;
  variants.push_back({"base", m.base.get(), false});
  variants.push_back({"LoRA unmerged", m.lora.get(), false});
  variants.push_back({"LoRA merged", m.lora.get(), true});
  variants.push_back({"merged, unwrapped", m.unwrapped.get(), false});
  variants.push_back({"base, 2nd copy", m.base_again.get(), false});

  Workload w;
  w.ids = Tensor::from_vector(random_ids(o.seq, c.vocab_size, o.seed + 1), {1, o.seq}, device);
  w.prompt = random_ids(o.prompt_tokens, c.vocab_size, o.seed + 2);
  w.sampling.max_new_tokens = o.new_tokens;
  w.sampling.temperature = 0.0;
  w.sampling.stop_at_eos = false;  // always generate new_tokens tokens

  fmt::print("{} {} ({} layers, hidden {}), {} parameters, device {}, {} threads\n", m.base->model_type(),
             o.weights.empty() ? "'" + o.config + "' (random init)" : o.weights, c.n_layer, c.hidden,
             m.base->num_parameters(), device.str(), num_threads());
  fmt::print("LoRA r={} alpha={} on {}: {} adapted layers, {} adapter parameters, B ~ N(0, {})\n", o.rank, o.alpha,
             o.targets, m.summary.adapted_layers, m.summary.trainable_params, o.b_std);
  fmt::print("forward: 1 x {} tokens; generate: {} tokens greedy with the KV cache after a {}-token prompt\n", o.seq,
             o.new_tokens, o.prompt_tokens);
  fmt::print("median of {} runs per variant after one warm-up, interleaved round-robin\n\n", o.repeats);
  std::fflush(stdout);

  const double load_before = tools::load_average();
  for (Variant& v : variants) run_variant(v, *m.lora, w, false);  // warm-up, and the outputs to compare
  for (int r = 0; r < o.repeats; ++r) {
    for (size_t i = 0; i < variants.size(); ++i)
      run_variant(variants[(size_t(r) + i) % variants.size()], *m.lora, w, true);
  }
  print_table(variants, o, load_before, tools::load_average());
  print_verdicts(variants, o);
  if (o.json) print_json(variants);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Benchmark causal-LM inference (GPT-2 small by default): base, unmerged LoRA, merged LoRA (the zero-latency "
      "claim)."};
  const CLI::Option* config_opt = add_flags(app, o);
  CLI11_PARSE(app, argc, argv);
  try {
    run_benchmark(o, config_opt->count() > 0);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
