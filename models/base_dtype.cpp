// --base-dtype resolved against the weights it loads.
#include "models/base_dtype.h"

#include "models/compact_checkpoint.h"
#include "models/gguf/base_blocks.h"
#include "models/gguf/model_io.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"

namespace lora::models {
namespace {

// A compact checkpoint's stored weights split into its body's and its tables' (the token embedding, the head),
// by the names of the model its config describes. Both empty for a float checkpoint.
struct StoredBase {
  std::map<std::string, StoredCompactWeight> body;
  CompactTables tables;
};

StoredBase stored_base(const std::string& weights, const std::string& config_arg) {
  StoredBase out;
  const auto stored = stored_compact_weights(HFWeights::open(weights));
  if (stored.empty()) return out;
  std::shared_ptr<CausalLM> model;
  {
    DefaultDeviceGuard shapes_only(Device::meta());
    model = create_model(resolve_config(weights, config_arg));
  }
  for (const auto& [key, w] : stored) {
    if (!is_compact_table(*model, key))
      out.body.emplace(key, w);
    else if (model->hf_key_to_name(key) == model->hf_name(model->token_embedding_path() + ".weight"))
      out.tables.embedding = w.format;
    else
      out.tables.head = w.format;
  }
  return out;
}

}  // namespace

QuantFormat resolved_base_format(const BaseDtype& base, const std::string& weights, const std::string& config_arg) {
  if (!base.automatic) return base.format;
  if (weights.empty()) return QuantFormat::F32;
  if (gguf_io::is_gguf_path(weights))
    return gguf_io::dominant_auto_format(gguf::File::open(weights, gguf::MetadataArrays::LengthOnly));
  return dominant_stored_format(stored_base(weights, config_arg).body);
}

CompactTables compact_tables(const BaseDtype& base, const std::string& weights, const std::string& config_arg) {
  if (!base.compact() || weights.empty()) return {};
  if (!gguf_io::is_gguf_path(weights)) return stored_base(weights, config_arg).tables;
  const gguf::File file = gguf::File::open(weights, gguf::MetadataArrays::LengthOnly);
  CompactTables tables;
  if (const gguf::TensorInfo* t = file.find_tensor("token_embd.weight")) tables.embedding = gguf_io::table_format(*t);
  if (const gguf::TensorInfo* t = file.find_tensor("output.weight")) tables.head = gguf_io::table_format(*t);
  return tables;
}

}  // namespace lora::models
