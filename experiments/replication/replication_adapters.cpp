// replicate_lora's adapter switching and merging stages: two adapters on one resident base (claim 5), and
// merged against unmerged generations and latency (claim 6).
#include <fmt/format.h>

#include <algorithm>

#include "backends/backend.h"
#include "core/stopwatch.h"
#include "experiments/replication/replication_internal.h"
#include "models/lora.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

namespace {

// The E2E adapter: lora_qv_r8's chosen run ("" before the choice).
fs::path e2e_adapter(const Options& o) {
  const fs::path dir = chosen_dir(o, "lora_qv_r8");
  return dir.empty() ? dir : dir / "adapter";
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Two adapters on one resident base, switched by nn::AdapterBank (unwrap, wrap; merge when asked).

int stage_switching(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "switching.json";
  const fs::path style = run_dir(o, "style_r8") / "adapter";
  if (e2e_adapter(o).empty() || !fs::exists(style)) {
    fmt::print("switching: skipped (needs the lora_qv_r8 and style adapters)\n");
    return 0;
  }
  // The E2E adapter's run fixes the style adapter too (trained at that run's learning rate).
  const json inputs = e2e_adapter(o).string();
  if (stage_current(done, inputs)) return fmt::print("switching: done\n"), 0;
  fmt::print("== adapter switching on one resident base\n");
  auto model = load_base(o);
  const auto base = snapshot_weights(*model);
  nn::AdapterBank bank;
  bank.add_from_dir("e2e", e2e_adapter(o).string());
  bank.add_from_dir("style", style.string());
  const int64_t n_new = o.quick ? 12 : 32;
  std::vector<std::vector<int32_t>> e2e_prompts(d.test_prompts.begin(),
                                                d.test_prompts.begin() + std::min<size_t>(3, d.test_prompts.size()));
  std::vector<std::vector<int32_t>> style_prompts;
  for (size_t start : {size_t{0}, d.style_val.size() / 2}) {
    style_prompts.emplace_back(d.style_val.begin() + static_cast<std::ptrdiff_t>(start),
                               d.style_val.begin() + static_cast<std::ptrdiff_t>(start + 24));
  }
  json result = {{"base_resident",
                  "one model object; AdapterBank::activate unwraps the current adapter and wraps "
                  "the next (merging it when asked); the base weights are never reloaded"}};
  for (bool merged : {false, true}) {
    const std::string key = merged ? "merged" : "unmerged";
    auto gen = [&](const auto& prompts) { return greedy_generate(*model, prompts, n_new); };
    bank.activate(*model, "e2e", merged);
    const auto a1 = gen(e2e_prompts);
    bank.activate(*model, "style", merged);
    const auto s1 = gen(style_prompts);
    bank.activate(*model, "e2e", merged);
    const auto a2 = gen(e2e_prompts);
    bank.activate(*model, "style", merged);
    const auto s2 = gen(style_prompts);
    std::vector<double> times;
    for (int i = 0; i < (o.quick ? 4 : 20); ++i) {
      const auto t0 = Clock::now();
      bank.activate(*model, i % 2 ? "style" : "e2e", merged);
      times.push_back(seconds_since(t0));
    }
    nn::remove_lora(*model);  // back to the bare base: unmerged first
    result[key] = {{"outputs_identical_after_switching_back", a1 == a2 && s1 == s2},
                   {"e2e_tokens", a1},
                   {"style_tokens", s1},
                   {"median_switch_s", median(times)},
                   {"base_bit_identical_after", bit_identical(base, snapshot_weights(*model))},
                   {"base_max_abs_drift_after", max_abs_difference(base, snapshot_weights(*model))}};
    fmt::print("switching ({}): median {:.4f} s per switch, outputs identical after switching back: {}\n", key,
               median(times), a1 == a2 && s1 == s2);
  }
  // Each adapter on each task: the held-out losses show which task each one learned.
  json losses;
  for (const char* name : {"e2e", "style"}) {
    bank.activate(*model, name, false);
    losses[name] = {{"e2e_valid_loss", heldout_example_loss(*model, d.valid, o.ft_batch, d.eot)},
                    {"style_heldout_loss",
                     heldout_window_loss(*model, d.style_val, o.ft_batch,
                                         std::min<int64_t>(o.pre.seq, model->dims().context_length), o.quick ? 2 : 8)}};
  }
  nn::remove_lora(*model);
  losses["base"] = {{"e2e_valid_loss", heldout_example_loss(*model, d.valid, o.ft_batch, d.eot)},
                    {"style_heldout_loss",
                     heldout_window_loss(*model, d.style_val, o.ft_batch,
                                         std::min<int64_t>(o.pre.seq, model->dims().context_length), o.quick ? 2 : 8)}};
  result["losses"] = losses;
  // For scale: what switching would cost if the base were loaded again from disk.
  std::vector<double> reloads;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = Clock::now();
    auto again = load_base(o);
    reloads.push_back(seconds_since(t0));
  }
  result["median_base_reload_s"] = median(reloads);
  result["inputs"] = inputs;
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Merging: merged generations equal unmerged ones; latency of base, unmerged and merged, alternating.

int stage_merging(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "merging.json";
  if (e2e_adapter(o).empty()) return fmt::print("merging: skipped (needs the lora_qv_r8 adapter)\n"), 0;
  const json inputs = e2e_adapter(o).string();
  if (stage_current(done, inputs)) return fmt::print("merging: done\n"), 0;
  fmt::print("== merging: equality and latency\n");
  auto base = load_base(o), lora = load_base(o);
  nn::load_adapter(*lora, e2e_adapter(o).string());
  const auto unmerged_out = greedy_generate(*lora, d.test_prompts, o.max_new_tokens);
  Tensor ids = Tensor::from_vector(d.test_prompts[0], {1, static_cast<int64_t>(d.test_prompts[0].size())});
  std::vector<float> unmerged_logits, merged_logits;
  {
    NoGradGuard no_grad;
    lora->eval();
    unmerged_logits = lora->forward(ids).to_vector<float>();
    nn::merge_lora(*lora);
    merged_logits = lora->forward(ids).to_vector<float>();
  }
  const auto merged_out = greedy_generate(*lora, d.test_prompts, o.max_new_tokens);
  int64_t same = 0;
  for (size_t i = 0; i < merged_out.size(); ++i) same += merged_out[i] == unmerged_out[i];
  double logit_diff = 0;
  for (size_t i = 0; i < merged_logits.size(); ++i) {
    logit_diff = std::max(logit_diff, static_cast<double>(std::abs(merged_logits[i] - unmerged_logits[i])));
  }

  // Latency: greedy generation of a fixed number of tokens from the first test prompt, each variant once
  // per round, the order rotated every round; "base" is measured twice per round (base_a, base_b), whose
  // difference is the noise floor of this machine in this run.
  const int64_t n_new = o.quick ? 8 : 32;
  const std::vector<std::string> variants = {"base_a", "unmerged", "merged", "base_b"};
  std::map<std::string, std::vector<double>> times;
  const std::vector<std::vector<int32_t>> prompt = {d.test_prompts[0]};
  greedy_generate(*base, prompt, n_new, false);  // warm-up
  for (int64_t r = 0; r < o.latency_rounds; ++r) {
    for (size_t k = 0; k < variants.size(); ++k) {
      const std::string& v = variants[(k + static_cast<size_t>(r)) % variants.size()];
      models::CausalLM& m = v.rfind("base", 0) == 0 ? *base : *lora;
      if (v == "merged") nn::merge_lora(*lora);
      if (v == "unmerged") nn::unmerge_lora(*lora);
      const auto t0 = Clock::now();
      greedy_generate(m, prompt, n_new, false);
      times[v].push_back(seconds_since(t0) / static_cast<double>(n_new));
    }
  }
  json latency;
  for (const auto& v : variants) latency[v + "_median_s_per_token"] = median(times[v]);
  const double b = median(times["base_a"]);
  latency["noise_floor"] = std::abs(median(times["base_b"]) - b) / b;
  latency["merged_vs_base"] = median(times["merged"]) / b - 1;
  latency["unmerged_vs_base"] = median(times["unmerged"]) / b - 1;
  latency["rounds"] = o.latency_rounds;
  latency["tokens_per_measurement"] = n_new;
  json result = {{"generations_identical", same},
                 {"generations_compared", merged_out.size()},
                 {"max_abs_logit_difference", logit_diff},
                 {"latency", latency},
                 {"inputs", inputs}};
  fmt::print(
      "merging: {}/{} generations identical, max |logit diff| {:.2e}; per token: base {:.2f} ms, unmerged "
      "{:.2f} ms, merged {:.2f} ms, base again {:.2f} ms\n",
      same, merged_out.size(), logit_diff, 1e3 * b, 1e3 * median(times["unmerged"]), 1e3 * median(times["merged"]),
      1e3 * median(times["base_b"]));
  write_json_atomically(done, result);
  return 0;
}

}  // namespace lora::replicate
