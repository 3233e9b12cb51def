// Training checkpoints: writing one as a commit, finding the newest, and resuming only the run that wrote it.
#include "train/checkpoint.h"

#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/finite.h"
#include "core/atomic_file.h"
#include "core/files.h"
#include "core/json.h"
#include "core/json_object_reader.h"
#include "core/safetensors.h"
#include "nn/quantized_linear.h"
#include "train/fault_injection.h"

namespace lora::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "lora.cpp training checkpoint";
constexpr int kVersion = 2;  // 2: the data's position is its BatchSource's state
constexpr const char* kPrefix = "checkpoint-";

// 64-bit FNV-1a over bytes, extended word by word (fast enough to hash a model's weights at start-up).
struct Hasher {
  uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void text(const std::string& s) { bytes(s.data(), s.size() + 1); }
};

// checkpoint-<step> -> step, or -1 for other names.
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::strlen(kPrefix));
  int64_t step = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  return ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() ? step : -1;
}

std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const int64_t step = checkpoint_step(it->path().filename().string());
    if (step >= 0 && is_regular_file((it->path() / "state.json").string())) out.emplace_back(step, it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What differs between two JSON objects, key by key, as "key: a -> b" lines (nested objects by path).
void describe_differences(const json& saved, const json& now, const std::string& prefix, std::string& out) {
  for (const auto& [key, value] : saved.items()) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (!now.contains(key))
      out += fmt::format("\n  {}: {} in the checkpoint, absent now", path, value.dump());
    else if (value.is_object() && now[key].is_object())
      describe_differences(value, now[key], path, out);
    else if (value != now[key])
      out += fmt::format("\n  {}: {} in the checkpoint, {} now", path, value.dump(), now[key].dump());
  }
  for (const auto& [key, value] : now.items()) {
    if (!saved.contains(key))
      out += fmt::format("\n  {}: absent in the checkpoint, {} now", prefix.empty() ? key : prefix + "." + key,
                         value.dump());
  }
}

}  // namespace

std::string RunIdentity::fingerprint(const models::CausalLM& model) {
  Hasher h;
  NoGradGuard no_grad;
  for (const auto& [name, p] : model.named_parameters()) {
    if (p.requires_grad()) continue;  // trainable weights travel in the checkpoint itself
    h.text(name);
    h.text(p.shape().str());
    const Tensor host = p.to(Device::cpu());
    h.bytes(host.raw_data(), host.nbytes());
  }
  // A compact base's weights are not parameters: each quantized layer's (and compact embedding's) format,
  // shape and every tensor of its encoding (a q8_0 base of other values, or the same values as q4_0, is
  // another base).
  for (const auto& [path, compact] : nn::named_compact_weights(model)) {
    const QuantizedWeight& w = *compact;
    h.text(path);
    h.text(fmt::format("{} [{}, {}] dq {} {}", quant_format_name(w.format), w.rows, w.cols, w.double_quant,
                       w.absmax_mean));
    for (const Tensor* t : {&w.data, &w.scale, &w.absmax_codes, &w.absmax_scale}) {
      if (!t->defined()) continue;
      const Tensor host = t->to(Device::cpu());
      h.bytes(host.raw_data(), host.nbytes());
    }
  }
  return fmt::format("{:016x}", h.h);
}

std::string save_training_checkpoint(const std::string& dir, const models::CausalLM& model,
                                     const optim::Optimizer& optimizer, const RunIdentity& identity,
                                     const TrainingProgress& progress, int keep) {
  LORA_CHECK(keep >= 1, "checkpoints: keep {} must be at least 1", keep);
  const auto trainable = model.named_parameters(/*trainable_only=*/true);
  require_finite(trainable, "saving a training checkpoint to '" + dir + "'");
  std::map<std::string, uint64_t> counters;
  for (const auto& [name, counter] : model.named_rng_counters()) counters[name] = *counter;
  const json state = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", progress.step},
      {"skipped_steps", progress.skipped_steps},
      {"identity",
       {{"settings", identity.settings},
        {"model", identity.model},
        {"frozen_weights", identity.frozen_fingerprint},
        {"data", identity.data}}},
      {"data_position", progress.data},
      {"rng_counters", counters},
      {"losses", progress.losses},
      {"evals", progress.evals},
      {"best",
       {{"step", progress.best_step}, {"eval_loss", progress.best_eval}, {"evals_since", progress.evals_since_best}}}};
  const fs::path path = fs::path(dir) / fmt::format("{}{:09d}", kPrefix, progress.step);
  write_directory_atomically(path.string(), [&](const std::string& staging) {
    save_safetensors((fs::path(staging) / "trainable.safetensors").string(), trainable, {{"format", "lora.cpp"}});
    optimizer.save_state((fs::path(staging) / "optimizer.safetensors").string());
    if (!progress.best_weights.empty()) {
      save_safetensors((fs::path(staging) / "best.safetensors").string(), progress.best_weights,
                       {{"format", "lora.cpp"}});
    }
    write_file_atomically((fs::path(staging) / "state.json").string(),
                          [&](std::ostream& out) { out << state.dump(1) << "\n"; });
    fault_point("checkpoint-commit");  // tests kill the process here: the staging folder is complete, not committed
  });
  // Older checkpoints beyond `keep` (the new one is complete and in place first).
  auto all = checkpoints_in(dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i].second, ec);
  }
  return path.string();
}

std::string latest_checkpoint(const std::string& dir) {
  const auto all = checkpoints_in(dir);
  return all.empty() ? "" : all.back().second.string();
}

TrainingProgress load_training_checkpoint(const std::string& path, models::CausalLM& model, optim::Optimizer& optimizer,
                                          const RunIdentity& identity) {
  // state.json, read strictly (core/json_object_reader.h): every field typed and none left unread, so a
  // checkpoint of another format version or a hand-edited one is refused rather than half-understood.
  const std::string context = fmt::format("checkpoint '{}': state.json", path);
  JsonObjectReader state(read_json_file((fs::path(path) / "state.json").string(), "checkpoint state"), context);
  LORA_CHECK(state.string("format", "") == kFormat, "checkpoint '{}': state.json is not a {}", path, kFormat);
  const int64_t version = state.required_integer("version", 0, INT32_MAX);
  LORA_CHECK(version == kVersion, "checkpoint '{}': format version {}, this program reads {}", path, version, kVersion);
  TrainingProgress progress;
  std::map<std::string, uint64_t> counters;
  {
    JsonObjectReader saved(state.object("identity"), context + " 'identity'");
    const json model_now = saved.value("model"), settings = saved.value("settings"), data = saved.value("data");
    const std::string frozen = saved.required_string("frozen_weights");
    saved.finish();
    std::string differences;
    if (model_now != identity.model) describe_differences(model_now, identity.model, "model", differences);
    if (settings != identity.settings) describe_differences(settings, identity.settings, "", differences);
    if (data != identity.data) describe_differences(data, identity.data, "data", differences);
    if (frozen != identity.frozen_fingerprint) {
      differences += fmt::format("\n  frozen weights: fingerprint {} in the checkpoint, {} now (another base model?)",
                                 frozen, identity.frozen_fingerprint);
    }
    LORA_CHECK(differences.empty(), "checkpoint '{}' belongs to another run:{}", path, differences);
  }
  progress.step = state.required_integer("step", 0, INT64_MAX);
  progress.skipped_steps = state.required_integer("skipped_steps", 0, INT64_MAX);
  progress.data = state.value("data_position");
  {
    JsonObjectReader best(state.object("best"), context + " 'best'");
    progress.best_step = best.required_integer("step", -1, INT64_MAX);
    progress.best_eval =
        best.value("eval_loss").is_null() ? progress.best_eval : best.number("eval_loss", 0, -1e308, 1e308);
    progress.evals_since_best = best.required_integer("evals_since", 0, INT64_MAX);
    best.finish();
  }
  try {  // the lists' element types (nlohmann's get<> checks them)
    progress.losses = state.value("losses").get<std::vector<double>>();
    progress.evals = state.value("evals").get<std::vector<std::pair<int64_t, double>>>();
    counters = state.value("rng_counters").get<std::map<std::string, uint64_t>>();
  } catch (const json::exception& e) {
    LORA_FAIL("checkpoint '{}': malformed state.json ({})", path, e.what());
  }
  state.finish();
  LORA_CHECK(progress.step >= 0 && progress.skipped_steps >= 0 && progress.skipped_steps <= progress.step,
             "checkpoint '{}': state.json holds step {} with {} skipped", path, progress.step, progress.skipped_steps);

  // Every check before any change: the trainable tensors' names and shapes, the random streams.
  const SafeTensorsFile weights = SafeTensorsFile::open((fs::path(path) / "trainable.safetensors").string());
  auto trainable = model.named_parameters(/*trainable_only=*/true);
  LORA_CHECK(weights.size() == trainable.size(), "checkpoint '{}' holds {} trainable tensors, this run trains {}", path,
             weights.size(), trainable.size());
  for (const auto& [name, p] : trainable) {
    LORA_CHECK(weights.contains(name), "checkpoint '{}' has no trainable tensor '{}'", path, name);
    LORA_CHECK(weights.info(name).shape == p.shape(), "checkpoint '{}': '{}' has shape {}, this run's has {}", path,
               name, weights.info(name).shape.str(), p.shape().str());
  }
  const auto streams = model.named_rng_counters();
  LORA_CHECK(streams.size() == counters.size(), "checkpoint '{}' holds {} random streams, the model has {}", path,
             counters.size(), streams.size());
  for (const auto& [name, counter] : streams) {
    LORA_CHECK(counters.count(name), "checkpoint '{}' has no random stream '{}'", path, name);
  }
  std::vector<Tensor> values;
  for (const auto& [name, p] : trainable) {
    values.push_back(weights.load(name, p.dtype(), p.device(), MemoryCategory::Workspace));
    LORA_CHECK(all_finite(values.back()), "checkpoint '{}': '{}' holds inf or nan values", path, name);
  }
  const std::string best_path = (fs::path(path) / "best.safetensors").string();
  if (is_regular_file(best_path)) {
    const SafeTensorsFile best = SafeTensorsFile::open(best_path);
    LORA_CHECK(best.size() == trainable.size(),
               "checkpoint '{}': best.safetensors holds {} tensors, this run trains {}", path, best.size(),
               trainable.size());
    for (const auto& [name, p] : trainable) {
      LORA_CHECK(best.contains(name) && best.info(name).shape == p.shape(),
                 "checkpoint '{}': best.safetensors has no '{}' of shape {}", path, name, p.shape().str());
      progress.best_weights.emplace_back(name, best.load(name, p.dtype(), Device::cpu(), MemoryCategory::Workspace));
      LORA_CHECK(all_finite(progress.best_weights.back().second), "checkpoint '{}': best '{}' holds inf or nan", path,
                 name);
    }
  }
  optimizer.load_state((fs::path(path) / "optimizer.safetensors").string());  // checks, then replaces
  NoGradGuard no_grad;
  for (size_t i = 0; i < trainable.size(); ++i) trainable[i].second.copy_from(values[i]);
  for (const auto& [name, counter] : streams) *counter = counters.at(name);
  return progress;
}

}  // namespace lora::train
