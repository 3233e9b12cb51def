// Hugging Face checkpoints: sharded or single safetensors files, checked against a model, loaded, saved.
#include "models/hf_checkpoint.h"
#include "core/json.h"

#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "backends/finite.h"
#include "core/atomic_file.h"
#include "core/safetensors_format.h"
#include "models/compact_checkpoint.h"
#include "models/quantize_base.h"

namespace lora::models {
namespace fs = std::filesystem;

namespace {

std::string list(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 10; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > 10) s += fmt::format(", ... ({} in all)", v.size());
  return s;
}

// A shard's file name from an index: a plain name in the index's folder, never a path elsewhere.
fs::path shard_path(const fs::path& index, const std::string& name) {
  LORA_CHECK(!name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
                 name != "." && name != ".." && name.find('\0') == std::string::npos,
             "checkpoint index '{}': shard name '{}' is not a plain file name in the index's folder", index.string(),
             name);
  return index.parent_path() / name;
}

}  // namespace

HFWeights HFWeights::open(const std::string& path) {
  std::error_code ec;
  LORA_CHECK(fs::exists(path, ec), "--weights '{}': no such file or folder", path);
  fs::path index, single;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "model.safetensors.index.json", ec))
      index = fs::path(path) / "model.safetensors.index.json";
    else if (fs::exists(fs::path(path) / "model.safetensors", ec))
      single = fs::path(path) / "model.safetensors";
    else
      LORA_FAIL("--weights '{}': the folder has neither model.safetensors nor model.safetensors.index.json", path);
  } else if (path.ends_with(".json")) {
    index = path;
  } else {
    single = path;
  }
  HFWeights w;
  w.path_ = path;
  if (!single.empty()) {
    w.files_.push_back(std::make_unique<SafeTensorsFile>(SafeTensorsFile::open(single.string())));
    for (const std::string& key : w.files_[0]->names()) w.where_[key] = 0;
    return w;
  }
  // model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor name: shard file name}}
  const nlohmann::json j = read_json_file(index.string(), "checkpoint index");
  LORA_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object() && !j["weight_map"].empty(),
             "checkpoint index '{}': expected an object with a non-empty \"weight_map\"", index.string());
  std::map<std::string, size_t> file_of_name;
  for (const auto& [key, file] : j["weight_map"].items()) {
    LORA_CHECK(file.is_string(), "checkpoint index '{}': the shard of '{}' is not a file name", index.string(), key);
    const std::string name = file.get<std::string>();
    auto [it, added] = file_of_name.try_emplace(name, w.files_.size());
    if (added)
      w.files_.push_back(std::make_unique<SafeTensorsFile>(SafeTensorsFile::open(shard_path(index, name).string())));
    LORA_CHECK(w.files_[it->second]->contains(key),
               "checkpoint index '{}': '{}' is listed in shard '{}', which does not "
               "hold it",
               index.string(), key, name);
    w.where_[key] = it->second;
  }
  // Every tensor of every shard must be in the map, in that shard (a stale or mixed index is refused).
  for (const auto& [name, i] : file_of_name) {
    for (const std::string& key : w.files_[i]->names()) {
      auto it = w.where_.find(key);
      LORA_CHECK(it != w.where_.end() && it->second == i,
                 "checkpoint index '{}': shard '{}' holds '{}', which the "
                 "index {}",
                 index.string(), name, key, it == w.where_.end() ? "does not list" : "puts in another shard");
    }
  }
  return w;
}

std::vector<std::string> HFWeights::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, file] : where_) out.push_back(key);
  return out;
}

const TensorInfo& HFWeights::info(const std::string& key) const {
  auto it = where_.find(key);
  LORA_CHECK(it != where_.end(), "checkpoint '{}' has no tensor '{}'", path_, key);
  return files_[it->second]->info(key);
}

Tensor HFWeights::load(const std::string& key, DType dtype) const {
  auto it = where_.find(key);
  LORA_CHECK(it != where_.end(), "checkpoint '{}' has no tensor '{}'", path_, key);
  return files_[it->second]->load(key, dtype);
}

void HFWeights::copy_raw(const std::string& key, void* out) const {
  auto it = where_.find(key);
  LORA_CHECK(it != where_.end(), "checkpoint '{}' has no tensor '{}'", path_, key);
  files_[it->second]->copy_raw(key, out);
}

void HFWeights::release(const std::string& key) const {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  const std::span<const std::byte> bytes = files_[it->second]->raw(key);
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

namespace {

// The model's parameters by HF name with the shape HF stores; the tensor to load each into.
struct Expected {
  Shape hf_shape;
  Tensor param;
  bool transposed = false;
};

std::map<std::string, Expected> expected_tensors(const CausalLM& model) {
  std::map<std::string, Expected> out;
  for (const auto& [name, param] : model.named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;
    const std::string hf = model.hf_name(name);
    if (hf.empty()) continue;
    const bool t = model.hf_transposed(hf);
    out[hf] = {t ? Shape{param.size(1), param.size(0)} : param.shape(), param, t};
  }
  return out;
}

}  // namespace

void check_hf_weights(const CausalLM& model, const HFWeights& weights) {
  const auto expected = expected_tensors(model);
  // A compact base's weights are checked in their own layout ([out, in] in a compact format), and the tensors
  // that go with them (nf4's absmaxes) are theirs, not parameters.
  const auto stored = stored_compact_weights(weights);
  const std::set<std::string> compact_keys = stored_compact_keys(stored);
  std::vector<std::string> misshaped, unexpected, missing;
  std::set<std::string> found;
  for (const std::string& key : weights.keys()) {
    if (const auto compact = stored.find(key); compact != stored.end()) {
      const StoredCompactWeight& w = compact->second;
      const std::string name = model.hf_key_to_name(key);
      auto it = expected.find(name);
      if (name.empty() || it == expected.end()) {
        unexpected.push_back(key);
        continue;
      }
      LORA_CHECK(found.insert(name).second, "checkpoint '{}': '{}' is stored twice (as '{}' too)", weights.path(), name,
                 key);
      compact_weight_site(model, name, fmt::format("checkpoint '{}'", weights.path()));
      if (Shape{w.rows, w.cols} != it->second.param.shape()) {
        misshaped.push_back(fmt::format("{} ({} [{}, {}], model expects [out, in] = {})", key,
                                        quant_format_name(w.format), w.rows, w.cols, it->second.param.shape().str()));
      }
      continue;
    }
    if (compact_keys.count(key)) continue;
    const std::string name = model.hf_key_to_name(key);
    if (name.empty()) continue;
    auto it = expected.find(name);
    if (it == expected.end()) {
      unexpected.push_back(key);
      continue;
    }
    LORA_CHECK(found.insert(name).second, "checkpoint '{}': '{}' is stored twice (as '{}' too)", weights.path(), name,
               key);
    const TensorInfo& info = weights.info(key);
    if (info.shape != it->second.hf_shape) {
      misshaped.push_back(
          fmt::format("{} (file {}, model expects {})", key, info.shape.str(), it->second.hf_shape.str()));
    }
    const bool floating = info.dtype && (*info.dtype == DType::F32 || *info.dtype == DType::F64 ||
                                         *info.dtype == DType::F16 || *info.dtype == DType::BF16);
    LORA_CHECK(floating,
               "checkpoint '{}': tensor '{}' has dtype {}, expected a float type "
               "(F32, BF16, F16, F64)",
               weights.path(), key, info.dtype_name);
  }
  for (const auto& [name, e] : expected) {
    if (!found.count(name)) missing.push_back(name);
  }
  std::string problems;
  if (!missing.empty()) problems += "\n  missing tensors: " + list(missing);
  if (!misshaped.empty()) problems += "\n  mis-shaped tensors: " + list(misshaped);
  if (!unexpected.empty()) problems += "\n  unexpected tensors: " + list(unexpected);
  LORA_CHECK(problems.empty(), "checkpoint '{}' does not match the {} model its config describes:{}", weights.path(),
             model.model_type(), problems);
}

namespace {

// A compact checkpoint loads only as it is stored (load_hf_weights_as_stored): its weights have no float32 form.
void refuse_compact(const HFWeights& weights, const std::string& wanted) {
  const auto stored = stored_compact_weights(weights);
  if (stored.empty()) return;
  LORA_FAIL(
      "checkpoint '{}' holds a compact base ({}: {} weights stored quantized); it loads only as it is stored, not "
      "{} (--base-dtype auto under LoRA or for decoding). A full fine-tune, merging or exporting needs the float "
      "weights it was made from",
      weights.path(), stored_formats_text(stored), stored.size(), wanted);
}

void load_float_parameters(CausalLM& model, const HFWeights& weights, const std::set<std::string>& held) {
  const auto expected = expected_tensors(model);
  const std::set<std::string> compact_keys = stored_compact_keys(stored_compact_weights(weights));
  NoGradGuard no_grad;
  // The rest (embeddings, norms, biases, the head), read as load_hf_weights reads it. A parameter still on the
  // meta device takes the storage its float32 value was read into, so that a large one (GPT-2's 154 MB token
  // embedding) is never held twice, once read and once copied.
  for (const std::string& key : weights.keys()) {
    if (compact_keys.count(key)) continue;
    const std::string name = model.hf_key_to_name(key);
    if (name.empty() || held.count(name)) continue;
    const Expected& e = expected.at(name);
    Tensor value = weights.load(key, DType::F32);
    weights.release(key);
    LORA_CHECK(all_finite(value), "checkpoint '{}': tensor '{}' holds inf or nan values", weights.path(), key);
    if (e.transposed) value = ops::transpose(value, 0, 1).clone();  // contiguous [out, in]
    Tensor param = e.param;
    if (param.device().is_meta()) {
      value.storage()->recharge(param.storage()->category());
      param.impl()->storage = value.storage();
      param.impl()->offset_bytes = 0;
    } else {
      param.copy_from(value.to(param.device()));
    }
  }
  for (const auto& [name, param] : model.named_parameters())  // check_hf_weights found every one in the files
    LORA_CHECK(!param.device().is_meta(), "checkpoint '{}': parameter '{}' was not read", weights.path(), name);
}

}  // namespace

void load_hf_weights(CausalLM& model, const HFWeights& weights) {
  refuse_compact(weights, "in float32");
  check_hf_weights(model, weights);
  load_float_parameters(model, weights, {});
}

nn::QuantizeReport load_hf_weights_compact(CausalLM& model, const HFWeights& weights, QuantFormat format) {
  LORA_CHECK(format != QuantFormat::F32, "load_hf_weights_compact: f32 is not a compact format");
  refuse_compact(weights, fmt::format("quantized again to {}", quant_format_name(format)));
  check_hf_weights(model, weights);
  const auto expected = expected_tensors(model);
  std::map<std::string, std::string> path_of;  // HF name of a body linear weight -> its module path
  for (const std::string& path : base_linear_paths(model)) {
    const std::string hf = model.hf_name(path + ".weight");
    if (!hf.empty()) path_of[hf] = path;
  }
  NoGradGuard no_grad;
  nn::QuantizeReport report;
  std::set<std::string> held;
  for (const std::string& key : weights.keys()) {
    const std::string name = model.hf_key_to_name(key);
    auto it = path_of.find(name);
    if (name.empty() || it == path_of.end()) continue;
    Tensor value = weights.load(key, DType::F32);  // this one weight in float32, released at the end of the turn
    weights.release(key);
    LORA_CHECK(all_finite(value), "checkpoint '{}': tensor '{}' holds inf or nan values", weights.path(), key);
    if (expected.at(name).transposed) value = ops::transpose(value, 0, 1).clone();  // HF [in, out] -> [out, in]
    LORA_CHECK((format != QuantFormat::Q8_0 && format != QuantFormat::Q4_0) || value.size(1) % kQuantBlock == 0,
               "checkpoint '{}': {} stores rows in blocks of {} weights, but '{}' ({}) has {} input features (this "
               "model's layers need bf16 or nf4)",
               weights.path(), quant_format_name(format), kQuantBlock, it->second, key, value.size(1));
    auto weight = std::make_shared<const QuantizedWeight>(quantize_weight(value, format, format == QuantFormat::NF4));
    report.layers += 1;
    report.f32_bytes += static_cast<size_t>(value.numel()) * 4;
    report.quantized_bytes += weight->nbytes();
    replace_with_compact(model, it->second, std::move(weight));
    held.insert(name);
  }
  load_float_parameters(model, weights, held);
  return report;
}

nn::QuantizeReport load_hf_weights_as_stored(CausalLM& model, const HFWeights& weights) {
  check_hf_weights(model, weights);
  const auto stored = stored_compact_weights(weights);
  LORA_CHECK(!stored.empty(), "checkpoint '{}' holds no compact weights (load it with load_hf_weights)",
             weights.path());
  const std::string source = fmt::format("checkpoint '{}'", weights.path());
  NoGradGuard no_grad;
  nn::QuantizeReport report;
  std::set<std::string> held;
  for (const auto& [key, w] : stored) {
    const std::string name = model.hf_key_to_name(key);
    const std::string path = compact_weight_site(model, name, source);
    auto weight = std::make_shared<const QuantizedWeight>(read_compact_weight(weights, w));
    report.layers += 1;
    report.f32_bytes += static_cast<size_t>(w.rows * w.cols) * 4;
    report.quantized_bytes += weight->nbytes();
    if (path == model.token_embedding_path())
      replace_embedding_with_compact(model, std::move(weight));
    else
      replace_with_compact(model, path, std::move(weight));
    held.insert(name);
  }
  load_float_parameters(model, weights, held);
  return report;
}

namespace {

// The files of a model's own layout; everything else in a model folder (a tokenizer, a README) is kept.
bool is_model_file(const std::string& name) {
  return name == "config.json" || name == "model.safetensors" || name == "model.safetensors.index.json" ||
         (name.starts_with("model-") && name.ends_with(".safetensors") && name.find("-of-") != std::string::npos);
}

}  // namespace

void save_hf_checkpoint(const CausalLM& model, const std::string& dir, int64_t max_shard_bytes) {
  LORA_CHECK(max_shard_bytes > 0, "save_hf_checkpoint: max_shard_bytes must be positive");
  const auto state = model.hf_state();
  require_finite(state, "saving the model to '" + dir + "'");  // nothing non-finite is ever written
  // What goes into the files, a group per weight: a float parameter, or a compact weight with the tensors of
  // its encoding (which stay in one shard: models/compact_checkpoint.h).
  struct Group {
    std::vector<SafeTensorsRecord> records;
    std::optional<StoredCompactWeight> compact;
    int64_t bytes = 0;
  };
  std::vector<Group> groups;
  for (const auto& [name, t] : state)
    groups.push_back({{{name, t, std::string(safetensors_dtype_name(t.dtype())), t.shape()}}, std::nullopt, 0});
  std::vector<StoredCompactWeight> compact;
  for (const auto& [stored, weight] : compact_weights_to_save(model)) {
    groups.push_back({compact_weight_records(stored, *weight), stored, 0});
    compact.push_back(stored);
  }
  // Split in order into shards of at most max_shard_bytes (a group larger than that gets a shard alone).
  std::vector<std::vector<const Group*>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (Group& g : groups) {
    for (const SafeTensorsRecord& r : g.records)
      g.bytes += r.shape.numel() * static_cast<int64_t>(safetensors_format::find_dtype(r.dtype_name)->size);
    if (!shards.back().empty() && shard_bytes + g.bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&g);
    shard_bytes += g.bytes;
    total += g.bytes;
  }
  nlohmann::json config = model.hf_config();
  if (!compact.empty()) config["quantization_config"] = compact_quantization_config(compact);
  const auto write_shard = [&](const std::string& path, const std::vector<const Group*>& shard) {
    std::vector<SafeTensorsRecord> records;
    std::vector<StoredCompactWeight> declared;
    for (const Group* g : shard) {
      records.insert(records.end(), g->records.begin(), g->records.end());
      if (g->compact) declared.push_back(*g->compact);
    }
    std::map<std::string, std::string> metadata = {{"format", "pt"}};
    if (!declared.empty()) metadata[kCompactWeightsMetadataKey] = compact_weights_metadata(declared);
    save_safetensors_records(path, records, metadata);
  };
  // Config and weights as one commit (a reader never sees one model's config with another's weights);
  // files of the folder that are not the model's (a tokenizer) stay, the old model's own files go.
  write_directory_atomically(
      dir,
      [&](const std::string& staging) {
        const fs::path out(staging);
        write_file_atomically((out / "config.json").string(), [&](std::ostream& o) { o << config.dump(2) << "\n"; });
        if (shards.size() == 1) {
          write_shard((out / "model.safetensors").string(), shards[0]);
          return;
        }
        nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
        for (size_t i = 0; i < shards.size(); ++i) {
          const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
          write_shard((out / name).string(), shards[i]);
          for (const Group* g : shards[i])
            for (const SafeTensorsRecord& r : g->records) index["weight_map"][r.name] = name;
        }
        write_file_atomically((out / "model.safetensors.index.json").string(),
                              [&](std::ostream& o) { o << index.dump(2) << "\n"; });
      },
      [](const std::string& name) { return !is_model_file(name); });
}

}  // namespace lora::models
