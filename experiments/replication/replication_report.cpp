// replicate_lora's adapter switching and merging stages, the report (results.json, results.md, the SVG
// plot, references) with the invariant checks, and run_all(), which runs the stages in order.
#include <fmt/format.h>

#include <algorithm>

#include "backends/backend.h"
#include "models/registry.h"
#include "models/lora.h"
#include "nn/lora/adapter.h"
#include "tools/replication_internal.h"
#include "tools/svg_plot.h"
#include "tools/text_metrics.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

namespace {

double median(std::vector<double> v) {
  LORA_CHECK(!v.empty(), "median of nothing");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

fs::path e2e_adapter(const Options& o) { return run_dir(o, "lora_qv_r8") / "adapter"; }

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Two adapters on one resident base, switched by nn::AdapterBank (unwrap, wrap; merge when asked).

int stage_switching(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "switching.json";
  if (fs::exists(done)) return fmt::print("switching: done\n"), 0;
  const fs::path style = run_dir(o, "style_r8") / "adapter";
  if (!fs::exists(e2e_adapter(o)) || !fs::exists(style)) {
    fmt::print("switching: skipped (needs the lora_qv_r8 and style adapters)\n");
    return 0;
  }
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
  json result = {{"base_resident", "one model object; AdapterBank::activate unwraps the current adapter and wraps "
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
                   {"e2e_tokens", a1}, {"style_tokens", s1},
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
    losses[name] = {{"e2e_valid_loss", heldout_example_loss(*model, d.valid, o.ft_batch, 50256)},
                    {"style_heldout_loss", heldout_window_loss(*model, d.style_val, o.ft_batch,
                                                               std::min<int64_t>(o.pre.seq, model->dims().context_length),
                                                               o.quick ? 2 : 8)}};
  }
  nn::remove_lora(*model);
  losses["base"] = {{"e2e_valid_loss", heldout_example_loss(*model, d.valid, o.ft_batch, 50256)},
                    {"style_heldout_loss", heldout_window_loss(*model, d.style_val, o.ft_batch,
                                                               std::min<int64_t>(o.pre.seq, model->dims().context_length),
                                                               o.quick ? 2 : 8)}};
  result["losses"] = losses;
  // For scale: what switching would cost if the base were loaded again from disk.
  std::vector<double> reloads;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = Clock::now();
    auto again = load_base(o);
    reloads.push_back(seconds_since(t0));
  }
  result["median_base_reload_s"] = median(reloads);
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Merging: merged generations equal unmerged ones; latency of base, unmerged and merged, alternating.

int stage_merging(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "merging.json";
  if (fs::exists(done)) return fmt::print("merging: done\n"), 0;
  if (!fs::exists(e2e_adapter(o))) return fmt::print("merging: skipped (needs the lora_qv_r8 adapter)\n"), 0;
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
  json result = {{"generations_identical", same}, {"generations_compared", merged_out.size()},
                 {"max_abs_logit_difference", logit_diff}, {"latency", latency}};
  fmt::print("merging: {}/{} generations identical, max |logit diff| {:.2e}; per token: base {:.2f} ms, unmerged "
             "{:.2f} ms, merged {:.2f} ms, base again {:.2f} ms\n", same, merged_out.size(), logit_diff, 1e3 * b,
             1e3 * median(times["unmerged"]), 1e3 * median(times["merged"]), 1e3 * median(times["base_b"]));
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The report

namespace {

json read_if(const fs::path& p) { return fs::exists(p) ? read_json(p) : json(); }

std::string mib(int64_t bytes) { return fmt::format("{:.1f}", static_cast<double>(bytes) / (1024.0 * 1024.0)); }

std::string size_text(int64_t bytes) {
  if (bytes >= 1024 * 1024) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024.0);
}

}  // namespace

int write_report(const Options& o, const Data& d, double wall_seconds) {
  const fs::path report(o.report_dir);
  json refs = json::array(), mrs = json::array();
  for (const auto& g : d.test) refs.push_back(g.refs), mrs.push_back(g.mr);
  write_text_atomically(report / "references.json", refs.dump(1) + "\n");
  std::string mr_text;
  for (const auto& g : d.test) mr_text += g.mr + "\n";
  write_text_atomically(report / "test_mrs.txt", mr_text);

  json runs = json::array(), checks;
  std::vector<PlotSeries> series;
  bool lora_falls = true, base_same = true, size_ok = true;
  double full_saved_bytes = 0;  // 0: no full fine-tuning run
  std::string table =
      "| run | trainable params | % of all | held-out loss | BLEU | ROUGE-L | median step (s) | peak memory (MiB) | "
      "grads + optimizer (MiB) | saved | saved vs full |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::string memory_table = "| run |";
  for (int c = 0; c < kNumMemoryCategories; ++c) memory_table += fmt::format(" {} |", category_name(static_cast<MemoryCategory>(c)));
  memory_table += " total at peak |\n|---|" + std::string("---:|") + "---:|---:|---:|---:|---:|---:|\n";
  for (const auto& spec : o.selected_runs()) {
    json train = read_if(run_dir(o, spec.name) / "train.json"), eval = read_if(run_dir(o, spec.name) / "eval.json");
    if (train.is_null()) continue;
    json r = train;
    if (!eval.is_null()) r["eval"] = eval;
    r["generations_file"] = eval.is_null() ? json() : eval["generations_file"];
    r["references_file"] = "references.json";
    runs.push_back(r);
    const json& curve = train["curve"];
    PlotSeries s{spec.name, {}, {}};
    for (const auto& p : curve) s.x.push_back(p[0].get<double>()), s.y.push_back(p[1].get<double>());
    series.push_back(s);
    if (spec.lora) {
      lora_falls = lora_falls && curve.back()[1].get<double>() < curve.front()[1].get<double>();
      base_same = base_same && train["base_bit_identical"].get<bool>();
      size_ok = size_ok && train["adapter_data_bytes"] == train["expected_adapter_data_bytes"];
    }
    if (!spec.lora) full_saved_bytes = train["saved_bytes"].get<double>();
  }
  for (const auto& r : runs) {
    const auto& m = r["memory"];
    const int64_t grads_opt = m["category_peaks"]["gradients"].get<int64_t>() + m["category_peaks"]["optimizer_state"].get<int64_t>();
    const double all = r["total_params"].get<double>(), saved = r["saved_bytes"].get<double>();
    table += fmt::format("| {} | {} | {:.3f}% | {:.4f} | {} | {} | {:.3f} | {} | {} | {} | {} |\n",
                         r["name"].get<std::string>(), r["trainable_params"].get<int64_t>(),
                         100.0 * r["trainable_params"].get<double>() / all, r["curve"].back()[1].get<double>(),
                         r.contains("eval") ? fmt::format("{:.4f}", r["eval"]["bleu"].get<double>()) : "-",
                         r.contains("eval") ? fmt::format("{:.4f}", r["eval"]["rouge_l"].get<double>()) : "-",
                         r["median_step_s"].get<double>(), mib(m["global_peak_bytes"].get<int64_t>()), mib(grads_opt),
                         size_text(r["saved_bytes"].get<int64_t>()),
                         full_saved_bytes > 0 ? fmt::format("1/{:.0f}", full_saved_bytes / saved) : "-");
    memory_table += "| " + r["name"].get<std::string>() + " |";
    int64_t total = 0;
    for (int c = 0; c < kNumMemoryCategories; ++c) {
      const int64_t v = m["at_global_peak"][std::string(category_name(static_cast<MemoryCategory>(c)))].get<int64_t>();
      memory_table += " " + mib(v) + " |";
      total += v;
    }
    memory_table += " " + mib(total) + " |\n";
  }
  checks["lora_heldout_loss_falls"] = lora_falls;
  checks["lora_base_weights_bit_identical"] = base_same;
  checks["adapter_size_as_computed"] = size_ok;
  const json switching = read_if(fs::path(o.out) / "switching.json"), merging = read_if(fs::path(o.out) / "merging.json");
  if (!switching.is_null()) checks["switching_outputs_identical"] = switching["unmerged"]["outputs_identical_after_switching_back"];
  if (!merging.is_null()) checks["merged_generations_equal_unmerged"] = merging["generations_identical"] == merging["generations_compared"];
  // The metrics on inputs with known answers: identical text scores 1, disjoint text 0.
  const std::vector<std::vector<std::string>> known_refs = {{"the cat sat on the mat", "a cat was on the mat"}};
  checks["metrics_known_inputs"] = corpus_bleu_text({"the cat sat on the mat"}, known_refs).bleu == 1.0 &&
                                   corpus_rouge_l({"the cat sat on the mat"}, known_refs) == 1.0 &&
                                   corpus_bleu_text({"dogs run"}, known_refs).bleu == 0.0;
  bool all_ok = true;
  for (const auto& [k, v] : checks.items()) all_ok = all_ok && v.get<bool>();

  json results = {{"command", o.command}, {"quick", o.quick}, {"wall_seconds_last_invocation", wall_seconds},
                  {"stage_seconds", read_if(fs::path(o.out) / "timings.json")},
                  {"pretrain", read_if(fs::path(o.out) / "pretrain.json")},
                  {"data", {{"e2e_train_examples", d.train.size()}, {"e2e_valid_examples", d.valid.size()},
                            {"e2e_test_mrs", d.test.size()}, {"test_mrs_file", "test_mrs.txt"},
                            {"references_file", "references.json"}, {"style_text", o.style_text},
                            {"generation_order", "one line per test MR, in the order of test_mrs.txt and "
                                                 "references.json (evenly spaced MRs of e2e/test.txt in first-appearance order)"}}},
                  {"runs", runs}, {"style", read_if(run_dir(o, "style_r8") / "train.json")},
                  {"switching", switching}, {"merging", merging}, {"checks", checks}};
  write_text_atomically(report / "results.json", results.dump(1) + "\n");
  if (!series.empty()) {
    write_text_atomically(report / "loss_curves.svg",
                          line_plot_svg(series, {.title = "E2E held-out loss during fine-tuning",
                                                 .x_label = "fine-tuning step", .y_label = "held-out loss (reference tokens)"}));
  }
  std::string md = "## Fine-tuning runs\n\n" + table + "\n## Memory at the peak, by category (MiB)\n\n" + memory_table +
                   "\n## Checks\n\n";
  for (const auto& [k, v] : checks.items()) md += fmt::format("- {}: {}\n", k, v.get<bool>() ? "passed" : "FAILED");
  write_text_atomically(report / "results.md", md);
  fmt::print("\n{}\nreport: {}\n", md, report.string());
  return all_ok ? 0 : 2;
}

// ---------------------------------------------------------------------------------------------------

int run_all(const Options& o) {
  const auto t0 = Clock::now();
  fmt::print("replicate_lora{}: out {}, report {}, {} threads\n", o.quick ? " --quick" : "", o.out, o.report_dir,
             num_threads());
  const auto tok = tokenizer::GPT2Tokenizer::load_default();
  const int64_t context = o.weights.empty() ? o.pre.seq
                                            : models::resolve_config(o.weights, "").json.value("n_positions", int64_t{1024});
  const Data d = load_data(o, tok, context);
  fmt::print("data: {} pre-training tokens ({} held out), style text {} + {} tokens, E2E {} train / {} valid examples, "
             "{} test MRs\n", d.corpus_train.size(), d.corpus_val.size(), d.style_train.size(), d.style_val.size(),
             d.train.size(), d.valid.size(), d.test.size());
  const fs::path timings_path = fs::path(o.out) / "timings.json";
  json timings = fs::exists(timings_path) ? read_json(timings_path) : json::object();
  auto timed = [&](const std::string& stage, const std::function<int()>& f) {
    const auto s0 = Clock::now();
    const int rc = f();
    const double dt = seconds_since(s0);
    if (dt > 1.0) {  // stages that actually ran (a skipped one takes milliseconds)
      timings[stage] = timings.value(stage, 0.0) + dt;
      write_json_atomically(timings_path, timings);
    }
    return rc;
  };
  if (int rc = timed("pretrain", [&] { return stage_pretrain(o, d); })) return rc;
  if (o.pretrain_only) return 0;
  for (const auto& spec : o.selected_runs()) {
    timed("finetune_" + spec.name, [&] { return stage_finetune(o, d, spec); });
    timed("evaluate_" + spec.name, [&] { return stage_evaluate(o, d, spec, tok); });
  }
  timed("style", [&] { return stage_style(o, d); });
  timed("switching", [&] { return stage_switching(o, d); });
  timed("merging", [&] { return stage_merging(o, d); });
  return write_report(o, d, seconds_since(t0));
}

}  // namespace lora::replicate
