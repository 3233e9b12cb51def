// A compact base in a Hugging Face folder: the layout's entries, its metadata, and reading one weight back.
#include "models/compact_checkpoint.h"

#include <cmath>
#include <cstring>

#include "core/json.h"
#include "core/json_object_reader.h"
#include "models/hf_checkpoint.h"
#include "nn/layers.h"
#include "nn/quantized_linear.h"

namespace lora::models {
namespace {

constexpr int64_t kMaxSide = int64_t(1) << 31;

// The formats a file may name, by their canonical names only (no aliases such as "int8").
std::optional<QuantFormat> stored_format(const std::string& name) {
  for (QuantFormat f : {QuantFormat::BF16, QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4})
    if (quant_format_name(f) == name) return f;
  return std::nullopt;
}

}  // namespace

std::vector<StoredTensorEntry> stored_tensor_entries(const StoredCompactWeight& w) {
  const int64_t bytes = quantized_data_bytes(w.format, w.rows, w.cols);
  switch (w.format) {
    case QuantFormat::BF16:
      return {{w.name, "BF16", Shape{w.rows, w.cols}}};
    case QuantFormat::Q8_0:
    case QuantFormat::Q4_0:
      return {{w.name, "U8", Shape{w.rows, bytes / w.rows}}};
    case QuantFormat::NF4: {
      const int64_t blocks = (w.rows * w.cols + kNf4Block - 1) / kNf4Block;
      if (!w.double_quant) return {{w.name, "U8", Shape{bytes}}, {w.name + ".absmax", "F32", Shape{blocks}}};
      return {{w.name, "U8", Shape{bytes}},
              {w.name + ".absmax_codes", "I8", Shape{blocks}},
              {w.name + ".absmax_scale", "F32", Shape{(blocks + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock}},
              {w.name + ".absmax_mean", "F32", Shape{1}}};
    }
    case QuantFormat::F32:
      break;
  }
  LORA_FAIL("stored_tensor_entries: f32 is not a compact format");
}

std::vector<StoredCompactWeight> parse_compact_weights_metadata(const std::string& text, const std::string& source) {
  const std::string where = fmt::format("{}: metadata '{}'", source, kCompactWeightsMetadataKey);
  const nlohmann::json j = parse_json(text, where);
  LORA_CHECK(j.is_object(), "{}: expected a JSON object of compact weights, got {}", where, json_type_name(j));
  std::vector<StoredCompactWeight> out;
  for (const auto& [name, entry] : j.items()) {
    const std::string context = fmt::format("{}: compact weight '{}'", where, name);
    LORA_CHECK(!name.empty(), "{}: a compact weight has an empty name", where);
    LORA_CHECK(entry.is_object(), "{}: expected an object, got {}", context, json_type_name(entry));
    JsonObjectReader r(entry, context);
    StoredCompactWeight w;
    w.name = name;
    const std::string format = r.required_string("format");
    const std::optional<QuantFormat> f = stored_format(format);
    LORA_CHECK(f.has_value(), "{}: format '{}' is not one lora.cpp stores (bf16, q8_0, q4_0, nf4)", context, format);
    w.format = *f;
    const nlohmann::json shape = r.value("shape");
    LORA_CHECK(shape.is_array() && shape.size() == 2 && shape[0].is_number_integer() && shape[1].is_number_integer(),
               "{}: 'shape' must be [rows, cols], two integers", context);
    for (int k = 0; k < 2; ++k) {
      // Read as signed or unsigned, whichever it is, before the range check (a huge unsigned is not negative).
      const bool in_range =
          shape[k].is_number_unsigned() ? shape[k].get<uint64_t>() < uint64_t(kMaxSide) : shape[k].get<int64_t>() > 0;
      LORA_CHECK(in_range && shape[k].get<int64_t>() > 0, "{}: 'shape' [{}, {}]: each side must be in [1, 2^31)",
                 context, shape[0].dump(), shape[1].dump());
    }
    w.rows = shape[0].get<int64_t>(), w.cols = shape[1].get<int64_t>();
    const nlohmann::json double_quant = r.value("double_quant");
    LORA_CHECK(double_quant.is_boolean(), "{}: 'double_quant' must be true or false", context);
    w.double_quant = double_quant.get<bool>();
    r.finish();
    LORA_CHECK(!w.double_quant || w.format == QuantFormat::NF4, "{}: double quantization is nf4's, not {}'s", context,
               format);
    LORA_CHECK((w.format != QuantFormat::Q8_0 && w.format != QuantFormat::Q4_0) || w.cols % kQuantBlock == 0,
               "{}: {} rows are whole blocks of {} weights; {} columns are not", context, format, kQuantBlock, w.cols);
    out.push_back(std::move(w));
  }
  return out;
}

std::map<std::string, StoredCompactWeight> stored_compact_weights(const HFWeights& weights) {
  std::map<std::string, StoredCompactWeight> out;
  for (size_t i = 0; i < weights.num_files(); ++i) {
    const SafeTensorsFile& file = weights.file(i);
    const auto it = file.metadata().find(kCompactWeightsMetadataKey);
    if (it == file.metadata().end()) continue;
    const std::string source = fmt::format("checkpoint file '{}'", file.path());
    for (StoredCompactWeight& w : parse_compact_weights_metadata(it->second, source)) {
      for (const StoredTensorEntry& e : stored_tensor_entries(w)) {
        LORA_CHECK(file.contains(e.key), "{}: holds no tensor '{}' ({} {}), which its {} weight '{}' is stored as",
                   source, e.key, e.dtype, e.shape.str(), quant_format_name(w.format), w.name);
        const TensorInfo& info = file.info(e.key);
        LORA_CHECK(info.dtype_name == e.dtype && info.shape == e.shape,
                   "{}: tensor '{}' is {} {}; the {} weight '{}' of {} x {} stores it as {} {}", source, e.key,
                   info.dtype_name, info.shape.str(), quant_format_name(w.format), w.name, w.rows, w.cols, e.dtype,
                   e.shape.str());
      }
      const std::string name = w.name;
      LORA_CHECK(out.emplace(name, std::move(w)).second, "checkpoint '{}': compact weight '{}' is declared twice",
                 weights.path(), name);
    }
  }
  return out;
}

std::set<std::string> stored_compact_keys(const std::map<std::string, StoredCompactWeight>& stored) {
  std::set<std::string> keys;
  for (const auto& [name, w] : stored)
    for (const StoredTensorEntry& e : stored_tensor_entries(w)) keys.insert(e.key);
  return keys;
}

std::set<std::string> stored_format_names(const std::map<std::string, StoredCompactWeight>& stored) {
  std::set<std::string> formats;
  for (const auto& [name, w] : stored) formats.insert(std::string(quant_format_name(w.format)));
  return formats;
}

std::string stored_formats_text(const std::map<std::string, StoredCompactWeight>& stored) {
  std::string text;
  for (const std::string& f : stored_format_names(stored)) text += (text.empty() ? "" : ", ") + f;
  return text;
}

bool is_compact_table(const CausalLM& model, const std::string& key) {
  const std::string name = model.hf_key_to_name(key);
  const std::string head = model.output_head_path();
  return name == model.hf_name(model.token_embedding_path() + ".weight") ||
         (!head.empty() && name == model.hf_name(head + ".weight"));
}

QuantFormat dominant_stored_format(const std::map<std::string, StoredCompactWeight>& stored) {
  std::map<QuantFormat, int64_t> elements;
  for (const auto& [name, w] : stored) elements[w.format] += w.rows * w.cols;
  QuantFormat best = QuantFormat::F32;
  int64_t most = 0;
  for (const auto& [format, n] : elements)
    if (n > most) best = format, most = n;
  return best;
}

QuantizedWeight read_compact_weight(const HFWeights& weights, const StoredCompactWeight& w) {
  QuantizedWeight q = empty_quantized_weight(w.format, w.rows, w.cols, w.double_quant);
  const std::string where =
      fmt::format("checkpoint '{}': compact weight '{}' ({})", weights.path(), w.name, quant_format_name(w.format));
  weights.copy_raw(w.name, q.data.raw_data());
  const auto finite_half = [](uint16_t h) { return (h & 0x7C00) != 0x7C00; };  // exponent not all ones
  const auto finite_bf16 = [](uint16_t b) { return (b & 0x7F80) != 0x7F80; };
  // nf4's absmaxes and their scales are magnitudes (the quantizer makes them >= 0): a negative one would flip
  // a block's signs without a trace, so it is refused like inf and nan.
  const auto check_magnitudes = [&](const Tensor& t, const std::string& part) {
    const float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      LORA_CHECK(std::isfinite(v[i]) && v[i] >= 0.0f, "{}: {} element {} is {} (expected a finite value >= 0)", where,
                 part, i, v[i]);
  };
  switch (w.format) {
    case QuantFormat::BF16: {
      const uint16_t* v = static_cast<const uint16_t*>(q.data.raw_data());
      for (int64_t i = 0; i < w.rows * w.cols; ++i)
        LORA_CHECK(finite_bf16(v[i]), "{}: element {} (row {}) is inf or nan", where, i, i / w.cols);
      break;
    }
    case QuantFormat::Q8_0:
    case QuantFormat::Q4_0: {
      // The blocks begin with their fp16 scale d, whichever the format.
      const size_t block_bytes = w.format == QuantFormat::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
      const auto* bytes = static_cast<const uint8_t*>(q.data.raw_data());
      const int64_t blocks = w.rows * (w.cols / kQuantBlock);
      for (int64_t b = 0; b < blocks; ++b) {
        uint16_t d;
        std::memcpy(&d, bytes + static_cast<size_t>(b) * block_bytes, sizeof d);
        LORA_CHECK(finite_half(d), "{}: the scale of block {} (row {}) is inf or nan", where, b,
                   b / (w.cols / kQuantBlock));
      }
      break;
    }
    case QuantFormat::NF4:
      if (!w.double_quant) {
        weights.copy_raw(w.name + ".absmax", q.scale.raw_data());
        check_magnitudes(q.scale, "absmax");
      } else {
        weights.copy_raw(w.name + ".absmax_codes", q.absmax_codes.raw_data());
        weights.copy_raw(w.name + ".absmax_scale", q.absmax_scale.raw_data());
        check_magnitudes(q.absmax_scale, "absmax_scale");
        weights.copy_raw(w.name + ".absmax_mean", &q.absmax_mean);
        LORA_CHECK(std::isfinite(q.absmax_mean), "{}: absmax_mean is {}", where, q.absmax_mean);
      }
      break;
    case QuantFormat::F32:
      break;
  }
  return q;
}

std::vector<std::pair<StoredCompactWeight, std::shared_ptr<const QuantizedWeight>>> compact_weights_to_save(
    const CausalLM& model) {
  std::vector<std::pair<StoredCompactWeight, std::shared_ptr<const QuantizedWeight>>> out;
  for (const auto& [path, weight] : nn::named_compact_weights(model)) {
    const std::string name = model.hf_name(path + ".weight");
    LORA_CHECK(!name.empty(), "saving '{}': the compact weight of '{}' has no Hugging Face name", model.model_type(),
               path);
    out.push_back({{name, weight->format, weight->rows, weight->cols, weight->double_quant}, weight});
  }
  return out;
}

std::vector<SafeTensorsRecord> compact_weight_records(const StoredCompactWeight& w, const QuantizedWeight& weight) {
  const std::vector<StoredTensorEntry> entries = stored_tensor_entries(w);
  std::vector<SafeTensorsRecord> records;
  records.push_back({entries[0].key, weight.data, entries[0].dtype, entries[0].shape});
  if (w.format == QuantFormat::NF4 && !w.double_quant) {
    records.push_back({entries[1].key, weight.scale, entries[1].dtype, entries[1].shape});
  } else if (w.format == QuantFormat::NF4) {
    records.push_back({entries[1].key, weight.absmax_codes, entries[1].dtype, entries[1].shape});
    records.push_back({entries[2].key, weight.absmax_scale, entries[2].dtype, entries[2].shape});
    records.push_back({entries[3].key, Tensor::from_vector(std::vector<float>{weight.absmax_mean}, {1}),
                       entries[3].dtype, entries[3].shape});
  }
  return records;
}

std::string compact_weights_metadata(const std::vector<StoredCompactWeight>& weights) {
  nlohmann::json j = nlohmann::json::object();
  for (const StoredCompactWeight& w : weights) {
    j[w.name] = {
        {"format", quant_format_name(w.format)}, {"shape", {w.rows, w.cols}}, {"double_quant", w.double_quant}};
  }
  return j.dump();
}

nlohmann::json compact_quantization_config(const std::vector<StoredCompactWeight>& weights) {
  std::set<std::string> formats;
  for (const StoredCompactWeight& w : weights) formats.insert(std::string(quant_format_name(w.format)));
  return {{"quant_method", kCompactQuantMethod}, {"formats", formats}};
}

std::string compact_weight_site(const CausalLM& model, const std::string& name, const std::string& source) {
  LORA_CHECK(name.ends_with(".weight"), "{}: '{}' is stored compact, but it is not a layer's weight", source, name);
  const std::string path = name.substr(0, name.size() - std::string(".weight").size());
  if (path == model.token_embedding_path()) return path;
  std::shared_ptr<nn::Module> module;
  for (const auto& [p, m] : model.named_modules())
    if (p == path) module = m;
  LORA_CHECK(std::dynamic_pointer_cast<nn::Linear>(module) != nullptr,
             "{}: '{}' is stored compact, but only linear layers and the token embedding can be", source, name);
  return path;
}

}  // namespace lora::models
