// --base-dtype resolved against the weights it loads.
#include "models/base_dtype.h"

#include "models/gguf/base_blocks.h"
#include "models/gguf/model_io.h"

namespace lora::models {

QuantFormat resolved_base_format(const BaseDtype& base, const std::string& weights) {
  if (!base.automatic) return base.format;
  if (weights.empty() || !gguf_io::is_gguf_path(weights)) return QuantFormat::F32;
  return gguf_io::dominant_auto_format(gguf::File::open(weights));
}

}  // namespace lora::models
