// --base-dtype resolved against the weights it loads.
#include "models/base_dtype.h"

#include "models/gguf/base_blocks.h"
#include "models/gguf/model_io.h"

namespace lora::models {

QuantFormat resolved_base_format(const BaseDtype& base, const std::string& weights) {
  if (!base.automatic) return base.format;
  if (weights.empty() || !gguf_io::is_gguf_path(weights)) return QuantFormat::F32;
  return gguf_io::dominant_auto_format(gguf::File::open(weights, gguf::MetadataArrays::LengthOnly));
}

CompactTables compact_tables(const BaseDtype& base, const std::string& weights) {
  if (!base.compact() || weights.empty() || !gguf_io::is_gguf_path(weights)) return {};
  const gguf::File file = gguf::File::open(weights, gguf::MetadataArrays::LengthOnly);
  CompactTables tables;
  if (const gguf::TensorInfo* t = file.find_tensor("token_embd.weight")) tables.embedding = gguf_io::table_format(*t);
  if (const gguf::TensorInfo* t = file.find_tensor("output.weight")) tables.head = gguf_io::table_format(*t);
  return tables;
}

}  // namespace lora::models
