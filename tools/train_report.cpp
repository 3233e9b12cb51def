// The fine-tuning report: tables and JSON.
#include "tools/train_report.h"

#include <cmath>

#include <sys/resource.h>

#include <fmt/format.h>
#include <algorithm>

#include "core/error.h"

namespace lora::tools {

namespace {
constexpr MemoryCategory kCategories[] = {MemoryCategory::TrainableParameter, MemoryCategory::FrozenParameter,
                                          MemoryCategory::Gradient,           MemoryCategory::OptimizerState,
                                          MemoryCategory::Activation,         MemoryCategory::Workspace};

nlohmann::json figures_json(const MemoryFigures& f) {
  nlohmann::json j;
  for (MemoryCategory c : kCategories) j[std::string(category_name(c))] = f[c];
  j["total"] = f.total();
  return j;
}

MemoryFigures figures_from_json(const nlohmann::json& j) {
  MemoryFigures f;
  for (MemoryCategory c : kCategories)
    f.bytes[static_cast<int>(c)] = j.at(std::string(category_name(c))).get<int64_t>();
  return f;
}

std::string ratio(double a, double b) {
  return b > 0 ? fmt::format("{:.3f}x", a / b) : "-";
}
}  // namespace

std::string human_bytes(int64_t bytes) {
  return format_bytes(bytes);
}

int64_t process_peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

double ModeReport::median_step_time_s() const {
  if (step_times_s.empty()) return 0;
  // The first step allocates optimizer state and warms caches: leave it out when there are others.
  std::vector<double> t(step_times_s.begin() + (step_times_s.size() > 1 ? 1 : 0), step_times_s.end());
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

double ModeReport::tokens_per_s() const {
  const double s = median_step_time_s();
  return s > 0 ? static_cast<double>(batch * seq) / s : 0;
}

nlohmann::json ModeReport::to_json() const {
  nlohmann::json peak = figures_json(memory.peak);
  peak["total"] = memory.global_peak;  // the most held at once (not the sum of category peaks)
  return {
      {"mode", mode},
      {"device", device},
      {"batch", batch},
      {"seq", seq},
      {"trainable_params", trainable_params},
      {"total_params", total_params},
      {"peak_bytes", peak},
      {"live_at_peak_bytes", figures_json(memory.live_at_peak)},
      {"predicted_bytes",
       [&] {
         nlohmann::json j = figures_json(predicted);
         j["total"] = predicted_total;
         return j;
       }()},
      {"peak_rss_bytes", peak_rss_bytes},
      {"step_time_s", median_step_time_s()},
      {"step_times_s", step_times_s},
      {"tokens_per_s", tokens_per_s()},
      {"losses", losses},
      {"val_loss_before", val_loss_before},
      {"val_loss_after", val_loss_after},
      {"skipped_steps", skipped_steps},
      {"ranks", ranks},
      {"comm_engine", comm_engine},
      {"allreduce_bytes_per_step", allreduce_bytes_per_step},
      {"comm_buckets", comm_buckets},
      {"comm_seconds_per_step", comm_seconds_per_step},
      {"comm_hidden_share", comm_hidden_share},
      {"rank_peak_bytes", rank_peak_bytes},
      {"rank_peak_rss_bytes", rank_peak_rss_bytes},
      {"saved_bytes", saved_bytes},
      {"saved_path", saved_path},
  };
}

ModeReport ModeReport::from_json(const nlohmann::json& j) {
  ModeReport r;
  r.mode = j.at("mode");
  r.device = j.value("device", "cpu");
  r.batch = j.at("batch");
  r.seq = j.at("seq");
  r.trainable_params = j.at("trainable_params");
  r.total_params = j.at("total_params");
  r.memory.peak = figures_from_json(j.at("peak_bytes"));
  r.memory.global_peak = j.at("peak_bytes").at("total");
  r.memory.live_at_peak = figures_from_json(j.at("live_at_peak_bytes"));
  r.predicted = figures_from_json(j.at("predicted_bytes"));
  r.predicted_total = j.at("predicted_bytes").value("total", int64_t{0});
  r.peak_rss_bytes = j.at("peak_rss_bytes");
  r.step_times_s = j.at("step_times_s").get<std::vector<double>>();
  r.losses = j.at("losses").get<std::vector<double>>();
  // null: there was no held-out data (NaN, which JSON cannot hold)
  const auto loss_or_nan = [&](const char* key) {
    return j.at(key).is_null() ? std::nan("") : j.at(key).get<double>();
  };
  r.val_loss_before = loss_or_nan("val_loss_before");
  r.val_loss_after = loss_or_nan("val_loss_after");
  r.skipped_steps = j.value("skipped_steps", int64_t{0});
  r.ranks = j.value("ranks", 1);
  r.comm_engine = j.value("comm_engine", "");
  r.allreduce_bytes_per_step = j.value("allreduce_bytes_per_step", int64_t{0});
  r.comm_buckets = j.value("comm_buckets", int64_t{0});
  r.comm_seconds_per_step = j.value("comm_seconds_per_step", 0.0);
  r.comm_hidden_share = j.value("comm_hidden_share", 0.0);
  r.rank_peak_bytes = j.value("rank_peak_bytes", std::vector<int64_t>{});
  r.rank_peak_rss_bytes = j.value("rank_peak_rss_bytes", std::vector<int64_t>{});
  r.saved_bytes = j.at("saved_bytes");
  r.saved_path = j.value("saved_path", "");
  return r;
}

std::string ModeReport::table() const {
  std::string s = fmt::format(
      "Memory of one training step, {} mode, batch {} x {} tokens on {} (measured by the "
      "allocator)\n",
      mode, batch, seq, device);
  s += fmt::format("  {:<18} {:>14} {:>14} {:>14}\n", "category", "live at peak", "peak", "predicted");
  for (MemoryCategory c : kCategories) {
    s += fmt::format("  {:<18} {:>14} {:>14} {:>14}\n", category_name(c), human_bytes(memory.live_at_peak[c]),
                     human_bytes(memory.peak[c]), human_bytes(predicted[c]));
  }
  s += fmt::format("  {:<18} {:>14} {:>14} {:>14}\n", "total (tracker)", human_bytes(memory.live_at_peak.total()),
                   human_bytes(memory.global_peak), human_bytes(predicted_total));
  s += fmt::format(
      "  {:<18} {:>14}   (process high-water mark: tracker peak + code, libraries, tokenizer, data,\n"
      "  {:<18} {:>14}    BLAS buffers and allocator slack)\n",
      "peak RSS", human_bytes(peak_rss_bytes), "", "");
  if (ranks > 1) {
    s += fmt::format(
        "Data parallelism: {} ranks over {}; per step {} of gradients all-reduced in {} bucket(s), {:.3f} s "
        "in communication, {:.0f}% of it hidden behind backward\n",
        ranks, comm_engine, human_bytes(allreduce_bytes_per_step), comm_buckets, comm_seconds_per_step,
        100 * comm_hidden_share);
    for (size_t r = 0; r < rank_peak_bytes.size(); ++r) {
      s += fmt::format("  rank {}: tracker peak {}, peak RSS {}\n", r, human_bytes(rank_peak_bytes[r]),
                       human_bytes(r < rank_peak_rss_bytes.size() ? rank_peak_rss_bytes[r] : 0));
    }
  }
  return s;
}

std::string comparison_table(const ModeReport& full, const ModeReport& lora) {
  std::string s =
      fmt::format("\nFull fine-tuning vs LoRA, batch {} x {} tokens, {}\n", full.batch, full.seq, full.device);
  s += fmt::format("  {:<26} {:>16} {:>16} {:>12}\n", "", "full", "lora", "lora/full");
  auto row = [&](const std::string& name, double a, double b, const std::string& fa, const std::string& fb) {
    s += fmt::format("  {:<26} {:>16} {:>16} {:>12}\n", name, fa, fb, ratio(b, a));
  };
  auto bytes_row = [&](const std::string& name, int64_t a, int64_t b) {
    row(name, static_cast<double>(a), static_cast<double>(b), human_bytes(a), human_bytes(b));
  };
  row("trainable parameters", full.trainable_params, lora.trainable_params, fmt::format("{}", full.trainable_params),
      fmt::format("{}", lora.trainable_params));
  row("total parameters", full.total_params, lora.total_params, fmt::format("{}", full.total_params),
      fmt::format("{}", lora.total_params));
  for (MemoryCategory c : kCategories) {
    bytes_row(fmt::format("peak {}", category_name(c)), full.memory.peak[c], lora.memory.peak[c]);
  }
  bytes_row("peak total (tracker)", full.memory.global_peak, lora.memory.global_peak);
  bytes_row("peak RSS (process)", full.peak_rss_bytes, lora.peak_rss_bytes);
  row("step time (median)", full.median_step_time_s(), lora.median_step_time_s(),
      fmt::format("{:.3f} s", full.median_step_time_s()), fmt::format("{:.3f} s", lora.median_step_time_s()));
  row("tokens/s", full.tokens_per_s(), lora.tokens_per_s(), fmt::format("{:.0f}", full.tokens_per_s()),
      fmt::format("{:.0f}", lora.tokens_per_s()));
  bytes_row("saved on disk", full.saved_bytes, lora.saved_bytes);
  row("held-out loss after", full.val_loss_after, lora.val_loss_after, fmt::format("{:.4f}", full.val_loss_after),
      fmt::format("{:.4f}", lora.val_loss_after));
  return s;
}

std::string variants_table(const std::vector<std::string>& names, const std::vector<ModeReport>& reports) {
  LORA_CHECK(!reports.empty() && names.size() == reports.size(), "variants_table: {} names for {} reports",
             names.size(), reports.size());
  const ModeReport& first = reports[0];
  std::string s = fmt::format("\nVariants, batch {} x {} tokens, {} (x: against {})\n", first.batch, first.seq,
                              first.device, names[0]);
  s += fmt::format("  {:<26}", "");
  for (const std::string& n : names) s += fmt::format(" {:>22}", n);
  s += "\n";
  // A row: each column's figure, and after the first its ratio to the first.
  auto row = [&](const std::string& name, auto value, auto format) {
    s += fmt::format("  {:<26}", name);
    for (size_t i = 0; i < reports.size(); ++i) {
      const double v = static_cast<double>(value(reports[i]));
      const std::string cell = format(reports[i]) + (i ? " (" + ratio(v, static_cast<double>(value(first))) + ")" : "");
      s += fmt::format(" {:>22}", cell);
    }
    s += "\n";
  };
  auto bytes_row = [&](const std::string& name, auto value) {
    row(name, value, [&](const ModeReport& r) { return human_bytes(value(r)); });
  };
  row(
      "trainable parameters", [](const ModeReport& r) { return r.trainable_params; },
      [](const ModeReport& r) { return fmt::format("{}", r.trainable_params); });
  for (MemoryCategory c : kCategories) {
    bytes_row(fmt::format("peak {}", category_name(c)), [c](const ModeReport& r) { return r.memory.peak[c]; });
  }
  bytes_row("peak total (tracker)", [](const ModeReport& r) { return r.memory.global_peak; });
  bytes_row("predicted peak total", [](const ModeReport& r) { return r.predicted_total; });
  bytes_row("peak RSS (process)", [](const ModeReport& r) { return r.peak_rss_bytes; });
  row(
      "step time (median)", [](const ModeReport& r) { return r.median_step_time_s(); },
      [](const ModeReport& r) { return fmt::format("{:.3f} s", r.median_step_time_s()); });
  row(
      "held-out loss after", [](const ModeReport& r) { return r.val_loss_after; },
      [](const ModeReport& r) { return fmt::format("{:.4f}", r.val_loss_after); });
  return s;
}

}  // namespace lora::tools
