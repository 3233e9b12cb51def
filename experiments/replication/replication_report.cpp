// replicate_lora's report: results.json, results.md (the tables, the paper's claims each marked met or
// missed with its figure, the fairness check, the invariant checks), the SVG plots and the references; and
// run_all(), which runs the stages in order.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "backends/backend.h"
#include "experiments/replication/replication_internal.h"
#include "experiments/replication/text_metrics.h"
#include "models/registry.h"
#include "tools/svg_plot.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

namespace {

json read_if(const fs::path& p) {
  return fs::exists(p) ? read_json(p) : json();
}

std::string mib(int64_t bytes) {
  return fmt::format("{:.1f}", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

std::string size_text(int64_t bytes) {
  if (bytes >= 1024 * 1024) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024.0);
}

// A claim: met (true/false), or null when what it needs was not measured; `figure` says what was found.
json claim(const std::string& text, const json& met, const std::string& figure) {
  return {{"claim", text}, {"met", met}, {"figure", figure}};
}

std::string verdict(const json& c) {
  return c["met"].is_null() ? "not measured" : c["met"].get<bool>() ? "**met**" : "**missed**";
}

const json* find_run(const json& runs, const std::string& name) {
  for (const auto& r : runs) {
    if (r["name"] == name) return &r;
  }
  return nullptr;
}

}  // namespace

// The paper's claims, from the gathered results. Each criterion is stated in its figure text.
json evaluate_claims(const json& base, const json& runs, const json& switching, const json& merging,
                     const json& timing) {
  json claims = json::object();
  const json *full = find_run(runs, "full"), *r8 = find_run(runs, "lora_qv_r8"), *r1 = find_run(runs, "lora_qv_r1");
  const bool have_base = !base.is_null() && base.contains("heldout_loss");
  const double base_loss = have_base ? base["heldout_loss"].get<double>() : 0.0;
  auto drop = [&](const json* r) { return base_loss - (*r)["heldout_loss"].get<double>(); };
  auto bleu = [](const json* r) { return r->contains("eval") ? (*r)["eval"]["bleu"].get<double>() : -1.0; };

  // 1. LoRA q,v r = 8 recovers >= 90% of full fine-tuning's drop in held-out loss, and its BLEU is at least 90% of
  // full's.
  if (have_base && full && r8 && bleu(full) >= 0 && bleu(r8) >= 0) {
    const double recovered = drop(r8) / drop(full), bleu_ratio = bleu(full) > 0 ? bleu(r8) / bleu(full) : 1.0;
    claims["1_lora_matches_full"] = claim(
        "LoRA q,v r=8 recovers at least 90% of full fine-tuning's drop in held-out loss, and its BLEU is within 10% of "
        "full's",
        recovered >= 0.9 && bleu_ratio >= 0.9,
        fmt::format("held-out loss: base {:.4f}, full {:.4f}, LoRA r=8 {:.4f}: {:.1f}% of full's drop recovered; BLEU "
                    "{:.4f} (full) vs {:.4f} (r=8): {:.1f}% of full's",
                    base_loss, (*full)["heldout_loss"].get<double>(), (*r8)["heldout_loss"].get<double>(),
                    100 * recovered, bleu(full), bleu(r8), 100 * bleu_ratio));
  } else {
    claims["1_lora_matches_full"] =
        claim("LoRA q,v r=8 matches full fine-tuning", nullptr, "the base, full or r=8 run is missing");
  }
  // 2. r = 1 within 5% (relative) of r = 8's drop; where the rank sweep saturates.
  if (have_base && r1 && r8) {
    const double ratio = drop(r1) / drop(r8);
    double best = 0;
    std::vector<std::pair<int64_t, double>> ranks;
    for (const auto& r : runs) {
      if (r["mode"] == "lora" && r["targets"] == "q,v") ranks.emplace_back(r["rank"].get<int64_t>(), drop(&r));
    }
    std::sort(ranks.begin(), ranks.end());
    for (const auto& [rank, dr] : ranks) best = std::max(best, dr);
    int64_t saturates = 0;
    for (const auto& [rank, dr] : ranks) {
      if (saturates == 0 && dr >= 0.95 * best) saturates = rank;
    }
    claims["2_small_rank_suffices"] = claim(
        "LoRA q,v r=1 is within 5% (relative) of r=8's drop in held-out loss", ratio >= 0.95,
        fmt::format("drop r=1 {:.4f} vs r=8 {:.4f}: {:.1f}%; the q,v ranks reach 95% of their best drop at r = {}",
                    drop(r1), drop(r8), 100 * ratio, saturates));
  } else {
    claims["2_small_rank_suffices"] = claim("a very small rank suffices", nullptr, "the r=1 or r=8 run is missing");
  }
  // 3. Faster steps and less memory: the step time measured apart on a quiet machine, memory by the allocator
  // (the fine-tuning runs' peaks, or the measurement's own when the runs are not there yet).
  if ((full && r8) || !timing.is_null()) {
    const bool from_runs = full && r8;
    const double mem_full = from_runs ? (*full)["memory"]["global_peak_bytes"].get<double>()
                                      : timing["variants"]["full"]["peak_bytes"].get<double>();
    const double mem_r8 = from_runs ? (*r8)["memory"]["global_peak_bytes"].get<double>()
                                    : timing["variants"]["lora_qv_r8"]["peak_bytes"].get<double>();
    if (!timing.is_null()) {
      const double t = timing["variants"]["lora_qv_r8"]["vs_full"].get<double>();
      claims["3_faster_less_memory"] = claim(
          "LoRA trains faster per step and needs less memory", t < 1.0 && mem_r8 < mem_full,
          fmt::format("step time LoRA r=8 / full = {:.3f} (medians {:.4f} s vs {:.4f} s, measured apart on {}, load {} "
                      "before, {} after); peak memory {} MiB vs {} MiB ({:.3f})",
                      t, timing["variants"]["lora_qv_r8"]["median_s"].get<double>(),
                      timing["variants"]["full"]["median_s"].get<double>(),
                      timing.value("weights", std::string("the base")),
                      timing["load_average_before"].get<std::string>(), timing["load_average_after"].get<std::string>(),
                      mib(static_cast<int64_t>(mem_r8)), mib(static_cast<int64_t>(mem_full)), mem_r8 / mem_full));
    } else {
      claims["3_faster_less_memory"] = claim(
          "LoRA trains faster per step and needs less memory", nullptr,
          fmt::format(
              "step time not measured on a quiet machine (--step-timing); peak memory {} MiB (r=8) vs {} MiB (full)",
              mib(static_cast<int64_t>(mem_r8)), mib(static_cast<int64_t>(mem_full))));
    }
  }
  if (!claims.contains("3_faster_less_memory")) {
    claims["3_faster_less_memory"] = claim("LoRA trains faster per step and needs less memory", nullptr,
                                           "neither the runs nor --step-timing have run");
  }
  // 4. A task in a file thousands of times smaller (here: the r = 8 adapter at least 1,000 x smaller).
  if (full && r8) {
    const double ratio = (*full)["saved_bytes"].get<double>() / (*r8)["saved_bytes"].get<double>();
    const double ratio1 = r1 ? (*full)["saved_bytes"].get<double>() / (*r1)["saved_bytes"].get<double>() : 0.0;
    claims["4_small_task_file"] = claim(
        "a task is stored in a file thousands of times smaller than the model (r=8 adapter at least 1,000 x smaller)",
        ratio >= 1000,
        fmt::format("checkpoint {} vs adapter {} (r=8): 1/{:.0f}; r=1: 1/{:.0f}",
                    size_text((*full)["saved_bytes"].get<int64_t>()), size_text((*r8)["saved_bytes"].get<int64_t>()),
                    ratio, ratio1));
  } else {
    claims["4_small_task_file"] = claim("a task is stored in a file thousands of times smaller than the model", nullptr,
                                        "the full or r=8 run is missing");
  }
  // 5. One base, many tasks: outputs identical after switching back, a switch far cheaper than a reload.
  if (!switching.is_null() && switching.contains("unmerged")) {
    const double sw = switching["unmerged"]["median_switch_s"].get<double>(),
                 reload = switching["median_base_reload_s"].get<double>();
    const bool same = switching["unmerged"]["outputs_identical_after_switching_back"].get<bool>() &&
                      switching["merged"]["outputs_identical_after_switching_back"].get<bool>();
    claims["5_switching"] = claim(
        "one resident base serves many tasks by switching adapters (identical outputs, a switch "
        "under a tenth of a reload)",
        same && sw < reload / 10,
        fmt::format("switch {:.2f} ms (unmerged), {:.2f} ms (merged) vs {:.0f} ms to reload the "
                    "base; outputs identical after switching back: {}",
                    1e3 * sw, 1e3 * switching["merged"]["median_switch_s"].get<double>(), 1e3 * reload, same));
  } else {
    claims["5_switching"] =
        claim("one resident base serves many tasks by switching adapters", nullptr, "the switching stage has not run");
  }
  // 6. Merged inference costs what the base costs: within the noise (base against base), or 2%.
  if (!merging.is_null()) {
    const auto& l = merging["latency"];
    const double m = l["merged_vs_base"].get<double>(), noise = l["noise_floor"].get<double>();
    claims["6_merged_no_latency"] = claim(
        "merging adds no inference latency (merged within max(noise floor, 2%) of the base)",
        std::abs(m) <= std::max(noise, 0.02),
        fmt::format("merged {:+.1f}% vs base, base vs base {:.1f}% (noise floor), unmerged {:+.1f}%; {}/{} generations "
                    "identical",
                    100 * m, 100 * noise, 100 * l["unmerged_vs_base"].get<double>(),
                    merging["generations_identical"].get<int64_t>(), merging["generations_compared"].get<int64_t>()));
  } else {
    claims["6_merged_no_latency"] =
        claim("merging adds no inference latency", nullptr, "the merging stage has not run");
  }
  return claims;
}

int write_report(const Options& o, const Data& d, double wall_seconds) {
  const fs::path report(o.report_dir);
  json refs = json::array();
  for (const auto& g : d.test) refs.push_back(g.refs);
  write_text_atomically(report / "references.json", refs.dump(1) + "\n");
  std::string mr_text;
  for (const auto& g : d.test) mr_text += g.mr + "\n";
  write_text_atomically(report / "test_mrs.txt", mr_text);

  const json pretrain = read_if(fs::path(o.out) / "pretrain.json"),
             base_eval = read_if(run_dir(o, "base") / "eval.json");
  json base;
  if (!base_eval.is_null()) {
    base = {{"heldout_loss", base_eval["heldout_loss"]},
            {"corpus_heldout_loss", base_eval["corpus_heldout_loss"]},
            {"eval", base_eval}};
  }
  json runs = json::array(), checks, sweep_rows = json::array();
  std::vector<PlotSeries> series;
  bool lora_falls = true, base_same = true, size_ok = true, any_lora = false;
  for (const auto& spec : o.selected_runs()) {
    // Invariants over every run of the sweep; the table over each configuration's chosen run.
    std::vector<double> lrs = sweep_lrs(o, spec);
    std::sort(lrs.begin(), lrs.end());
    for (double lr : lrs) {
      const json t = read_if(sweep_dir(o, spec.name, lr) / "train.json");
      if (t.is_null()) continue;
      sweep_rows.push_back({{"name", spec.name},
                            {"lr", lr},
                            {"heldout_loss", t["heldout_loss"]},
                            {"diverged_at_step", t.value("diverged_at_step", json())}});
      if (spec.lora && !t["heldout_loss"].is_null()) {
        any_lora = true;
        lora_falls = lora_falls && t["curve"].back()[1].get<double>() < t["curve"].front()[1].get<double>();
        base_same = base_same && t["base_bit_identical"].get<bool>();
        size_ok = size_ok && t["adapter_data_bytes"] == t["expected_adapter_data_bytes"];
      }
    }
    const fs::path chosen = chosen_dir(o, spec.name);
    if (chosen.empty()) continue;
    json r = read_json(chosen / "train.json");
    r["chosen"] = read_json(run_dir(o, spec.name) / "chosen.json");
    const json eval = read_if(run_dir(o, spec.name) / "eval.json");
    if (!eval.is_null()) r["eval"] = eval;
    r["generations_file"] = eval.is_null() ? json() : eval["generations_file"];
    r["references_file"] = "references.json";
    runs.push_back(r);
    PlotSeries s{fmt::format("{} (lr {})", spec.name, lr_text(r["lr"].get<double>())), {}, {}};
    for (const auto& p : r["curve"]) s.x.push_back(p[0].get<double>()), s.y.push_back(p[1].get<double>());
    series.push_back(s);
  }
  if (any_lora) {  // checked over every LoRA run of the sweeps; absent until one has run
    checks["lora_heldout_loss_falls"] = lora_falls;
    checks["lora_base_weights_bit_identical"] = base_same;
    checks["adapter_size_as_computed"] = size_ok;
  }
  const json switching = read_if(fs::path(o.out) / "switching.json"),
             merging = read_if(fs::path(o.out) / "merging.json");
  const json subspace = read_if(fs::path(o.out) / "subspace.json"),
             timing = read_if(fs::path(o.out) / "step_timing.json");
  if (!switching.is_null())
    checks["switching_outputs_identical"] = switching["unmerged"]["outputs_identical_after_switching_back"];
  if (!merging.is_null())
    checks["merged_generations_equal_unmerged"] = merging["generations_identical"] == merging["generations_compared"];
  // The metrics on inputs with known answers: identical text scores 1, disjoint text 0.
  const std::vector<std::vector<std::string>> known_refs = {{"the cat sat on the mat", "a cat was on the mat"}};
  checks["metrics_known_inputs"] = corpus_bleu_text({"the cat sat on the mat"}, known_refs).bleu == 1.0 &&
                                   corpus_rouge_l({"the cat sat on the mat"}, known_refs) == 1.0 &&
                                   corpus_bleu_text({"dogs run"}, known_refs).bleu == 0.0;
  bool all_ok = true;
  for (const auto& [k, v] : checks.items()) all_ok = all_ok && v.get<bool>();

  json fairness;
  if (!base.is_null()) {
    const double ratio = base["heldout_loss"].get<double>() / base["corpus_heldout_loss"].get<double>();
    fairness = {{"e2e_reference_loss_before_finetuning", base["heldout_loss"]},
                {"corpus_heldout_loss", base["corpus_heldout_loss"]},
                {"ratio", ratio},
                {"limit", 1.5},
                {"met", ratio <= 1.5}};
  }
  const json claims = evaluate_claims(base, runs, switching, merging, timing);

  // ---- Tables
  const json* full = find_run(runs, "full");
  const double full_saved = full ? (*full)["saved_bytes"].get<double>() : 0.0;
  std::string table =
      "| run | lr | trainable params | % of all | held-out loss | drop recovered vs full | BLEU | ROUGE-L | median "
      "step (s) "
      "| peak memory (MiB) | grads + optimizer (MiB) | saved | saved vs full |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  if (!base.is_null()) {
    table += fmt::format("| base (not fine-tuned) | - | 0 | 0% | {:.4f} | 0% | {:.4f} | {:.4f} | - | - | - | - | - |\n",
                         base["heldout_loss"].get<double>(), base_eval["bleu"].get<double>(),
                         base_eval["rouge_l"].get<double>());
  }
  for (const auto& r : runs) {
    const auto& m = r["memory"];
    const int64_t grads_opt =
        m["category_peaks"]["gradients"].get<int64_t>() + m["category_peaks"]["optimizer_state"].get<int64_t>();
    std::string recovered = "-";
    if (!base.is_null() && full) {
      const double b = base["heldout_loss"].get<double>();
      recovered = fmt::format(
          "{:.1f}%", 100 * (b - r["heldout_loss"].get<double>()) / (b - (*full)["heldout_loss"].get<double>()));
    }
    table += fmt::format(
        "| {} | {} | {} | {:.3f}% | {:.4f} | {} | {} | {} | {:.3f} | {} | {} | {} | {} |\n",
        r["name"].get<std::string>(), lr_text(r["lr"].get<double>()), r["trainable_params"].get<int64_t>(),
        100.0 * r["trainable_params"].get<double>() / r["total_params"].get<double>(), r["heldout_loss"].get<double>(),
        recovered, r.contains("eval") ? fmt::format("{:.4f}", r["eval"]["bleu"].get<double>()) : "-",
        r.contains("eval") ? fmt::format("{:.4f}", r["eval"]["rouge_l"].get<double>()) : "-",
        r["median_step_s"].get<double>(), mib(m["global_peak_bytes"].get<int64_t>()), mib(grads_opt),
        size_text(r["saved_bytes"].get<int64_t>()),
        full_saved > 0 ? fmt::format("1/{:.0f}", full_saved / r["saved_bytes"].get<double>()) : "-");
  }
  std::string sweep_table = "| run | lr | held-out loss |\n|---|---:|---:|\n";
  for (const auto& s : sweep_rows) {
    const fs::path chosen = chosen_dir(o, s["name"].get<std::string>());
    const bool is_chosen = !chosen.empty() && chosen.filename() == "lr-" + lr_text(s["lr"].get<double>());
    const std::string loss =
        s["heldout_loss"].is_null()
            ? fmt::format("diverged at step {}", s["diverged_at_step"].get<int64_t>())
            : fmt::format("{:.4f}{}", s["heldout_loss"].get<double>(), is_chosen ? " (chosen)" : "");
    sweep_table +=
        fmt::format("| {} | {} | {} |\n", s["name"].get<std::string>(), lr_text(s["lr"].get<double>()), loss);
  }
  std::string memory_table = "| run |";
  for (int c = 0; c < kNumMemoryCategories; ++c)
    memory_table += fmt::format(" {} |", category_name(static_cast<MemoryCategory>(c)));
  memory_table += " total at peak |\n|---|";
  for (int c = 0; c <= kNumMemoryCategories; ++c) memory_table += "---:|";
  memory_table += "\n";
  for (const auto& r : runs) {
    memory_table += "| " + r["name"].get<std::string>() + " |";
    int64_t total = 0;
    for (int c = 0; c < kNumMemoryCategories; ++c) {
      const int64_t v =
          r["memory"]["at_global_peak"][std::string(category_name(static_cast<MemoryCategory>(c)))].get<int64_t>();
      memory_table += " " + mib(v) + " |";
      total += v;
    }
    memory_table += " " + mib(total) + " |\n";
  }

  json results = {{"command", o.command},
                  {"quick", o.quick},
                  {"device", o.device},
                  {"wall_seconds_last_invocation", wall_seconds},
                  {"stage_seconds", read_if(fs::path(o.out) / "timings.json")},
                  {"pretrain", pretrain},
                  {"base", base},
                  {"data",
                   {{"e2e_train_examples", d.train.size()},
                    {"e2e_valid_examples", d.valid.size()},
                    {"e2e_test_mrs", d.test.size()},
                    {"test_mrs_file", "test_mrs.txt"},
                    {"references_file", "references.json"},
                    {"style_text", o.style_text},
                    {"tokenizer", o.weights.empty() ? o.tokenizer_file().filename().string() : o.weights},
                    {"vocab_size", d.vocab_size},
                    {"generation_order",
                     "one line per test MR, in the order of test_mrs.txt and "
                     "references.json (evenly spaced MRs of e2e/test.txt in first-appearance order)"}}},
                  {"lora_alpha", o.lora_alpha},
                  {"full_lrs", o.full_lrs},
                  {"lora_lrs", o.lora_lrs},
                  {"runs", runs},
                  {"sweep", sweep_rows},
                  {"style", read_if(run_dir(o, "style_r8") / "train.json")},
                  {"switching", switching},
                  {"merging", merging},
                  {"subspace", subspace},
                  {"step_timing", timing},
                  {"fairness", fairness},
                  {"claims", claims},
                  {"checks", checks}};
  write_text_atomically(report / "results.json", results.dump(1) + "\n");

  // ---- Plots
  if (!series.empty()) {
    write_text_atomically(
        report / "loss_curves.svg",
        line_plot_svg(series, {.title = "E2E validation loss during fine-tuning (each run at its chosen lr)",
                               .x_label = "fine-tuning step",
                               .y_label = "validation loss (reference tokens)"}));
  }
  {
    PlotSeries qv{"LoRA q,v", {}, {}}, full_line{"full fine-tuning", {}, {}},
        base_line{"base (not fine-tuned)", {}, {}};
    for (const auto& r : runs) {
      if (r["mode"] == "lora" && r["targets"] == "q,v") {
        qv.x.push_back(std::log2(r["rank"].get<double>())), qv.y.push_back(r["heldout_loss"].get<double>());
      }
    }
    if (qv.x.size() >= 2) {
      std::vector<size_t> idx(qv.x.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return qv.x[a] < qv.x[b]; });
      PlotSeries sorted{qv.name, {}, {}};
      for (size_t i : idx) sorted.x.push_back(qv.x[i]), sorted.y.push_back(qv.y[i]);
      std::vector<PlotSeries> rank_series = {sorted};
      const double lo = sorted.x.front(), hi = sorted.x.back();
      if (full)
        rank_series.push_back(
            {full_line.name, {lo, hi}, {(*full)["heldout_loss"].get<double>(), (*full)["heldout_loss"].get<double>()}});
      if (!base.is_null())
        rank_series.push_back(
            {base_line.name, {lo, hi}, {base["heldout_loss"].get<double>(), base["heldout_loss"].get<double>()}});
      write_text_atomically(
          report / "rank_sweep.svg",
          line_plot_svg(rank_series, {.title = "E2E validation loss after fine-tuning against LoRA's rank",
                                      .x_label = "log2 rank (0: r = 1, 3: r = 8, 6: r = 64)",
                                      .y_label = "validation loss"}));
    }
  }

  // ---- results.md
  std::string md =
      "## Fine-tuning runs (each configuration at the learning rate its sweep chose on the validation set)\n\n" +
      table + "\n## Learning-rate sweeps (E2E validation loss after the last step)\n\n" + sweep_table +
      "\n## Memory at the peak, by category (MiB)\n\n" + memory_table;
  if (!pretrain.is_null() && pretrain.contains("evals")) {
    md +=
        "\n## Pre-training: held-out corpus loss and E2E validation loss (measured, never trained on)\n\n"
        "| step | corpus held-out loss | E2E validation loss | ratio |\n|---:|---:|---:|---:|\n";
    const json side = pretrain.value("e2e_validation_evals", json::array());
    for (const auto& e : pretrain["evals"]) {
      std::string e2e = "-", ratio = "-";
      for (const auto& v : side) {
        if (v[0] == e[0])
          e2e = fmt::format("{:.4f}", v[1].get<double>()),
          ratio = fmt::format("{:.3f}", v[1].get<double>() / e[1].get<double>());
      }
      md += fmt::format("| {} | {:.4f} | {} | {} |\n", e[0].get<int64_t>(), e[1].get<double>(), e2e, ratio);
    }
  }
  if (!fairness.is_null()) {
    md += fmt::format(
        "\n## Is the base fair?\n\nE2E reference loss before fine-tuning {:.4f}, corpus held-out loss {:.4f}: "
        "ratio {:.3f} (at most 1.5 asked): {}\n",
        fairness["e2e_reference_loss_before_finetuning"].get<double>(), fairness["corpus_heldout_loss"].get<double>(),
        fairness["ratio"].get<double>(), fairness["met"].get<bool>() ? "met" : "missed");
  }
  md += "\n## The paper's claims\n\n| claim | figure | verdict |\n|---|---|---|\n";
  for (const auto& [k, c] : claims.items()) {
    md += fmt::format("| {}. {} | {} | {} |\n", k.substr(0, 1), c["claim"].get<std::string>(),
                      c["figure"].get<std::string>(), verdict(c));
  }
  if (!subspace.is_null()) {
    md +=
        "\n## Subspace similarity of the r = 8 and r = 64 adapters' A (phi at i = 1, j = 64; 1 = contained)\n\n"
        "| matrix | phi(1, 1) | phi(1, 64) | phi(8, 64) | mean |\n|---|---:|---:|---:|---:|\n";
    for (const auto& l : subspace["layers"]) {
      md += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n", l["matrix"].get<std::string>(),
                        l["phi_1_1"].get<double>(), l["phi_1_64"].get<double>(), l["phi_8_64"].get<double>(),
                        l["mean"].get<double>());
    }
    md += fmt::format("| two random matrices | | {:.3f} | | |\n", subspace["random_baseline_phi_1_64"].get<double>());
  }
  md += "\n## Checks\n\n";
  for (const auto& [k, v] : checks.items()) md += fmt::format("- {}: {}\n", k, v.get<bool>() ? "passed" : "FAILED");
  write_text_atomically(report / "results.md", md);
  fmt::print("\n{}\nreport: {}\n", md, report.string());
  return all_ok ? 0 : 2;
}

// ---------------------------------------------------------------------------------------------------

int run_all(const Options& o) {
  const auto t0 = Clock::now();
  fmt::print("replicate_lora{}: out {}, report {}, device {}, {} threads\n", o.quick ? " --quick" : "", o.out,
             o.report_dir, o.device, num_threads());
  const int64_t context =
      o.weights.empty() ? o.pre.seq : models::resolve_config(o.weights, "").json.value("n_positions", int64_t{1024});
  const Data d = load_data(o, context);
  fmt::print(
      "data: vocabulary {}, {} pre-training tokens ({} held out), style text {} + {} tokens, E2E {} train / {} "
      "valid examples, {} test MRs\n",
      d.vocab_size, d.corpus_train.size(), d.corpus_val.size(), d.style_train.size(), d.style_val.size(),
      d.train.size(), d.valid.size(), d.test.size());
  if (o.report_only) return write_report(o, d, seconds_since(t0));
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
  if (o.step_timing) {
    stage_step_timing(o, d);
    return write_report(o, d, seconds_since(t0));
  }
  if (int rc = timed("pretrain", [&] { return stage_pretrain(o, d); })) return rc;
  if (o.pretrain_only) return 0;
  timed("evaluate_base", [&] { return stage_evaluate_base(o, d); });
  auto configuration = [&](const RunSpec& spec) {
    // The sweep may grow as its runs finish (an edge that holds the best is followed): re-read it each time.
    for (size_t i = 0; i < sweep_lrs(o, spec).size(); ++i) {
      const double lr = sweep_lrs(o, spec)[i];
      timed("finetune_" + spec.name + "_lr" + lr_text(lr), [&] { return stage_finetune(o, d, spec, lr); });
    }
    stage_choose(o, spec);
    timed("evaluate_" + spec.name, [&] { return stage_evaluate(o, d, spec); });
  };
  // Claim 1's runs first, then what uses them (the second task, switching, merging), then the rank sweep.
  bool adapters_done = false;
  for (const auto& spec : o.selected_runs()) {
    configuration(spec);
    if (spec.name == "lora_qv_r8") {
      timed("style", [&] { return stage_style(o, d); });
      timed("switching", [&] { return stage_switching(o, d); });
      timed("merging", [&] { return stage_merging(o, d); });
      adapters_done = true;
    }
  }
  if (!adapters_done) {
    timed("style", [&] { return stage_style(o, d); });
    timed("switching", [&] { return stage_switching(o, d); });
    timed("merging", [&] { return stage_merging(o, d); });
  }
  timed("subspace", [&] { return stage_subspace(o); });
  return write_report(o, d, seconds_since(t0));
}

}  // namespace lora::replicate
