// Fuzzes reading a compact checkpoint (models/compact_checkpoint.h): a safetensors file whose metadata declares
// compact weights. The declarations are parsed and checked against the file's tensors, each declared weight is
// read (its scales checked), and the file is checked against a small GPT-2 built on the meta device (names,
// shapes, which layers may be compact). Anything but a clean read or a lora::Error is a finding.
#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "models/compact_checkpoint.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"

namespace {

const lora::models::CausalLM& meta_gpt2() {
  static const std::shared_ptr<lora::models::CausalLM> model = [] {
    nlohmann::json config = lora::models::preset_config("tiny");
    config["n_embd"] = 64;  // whole blocks of 32 for q8_0 and q4_0
    lora::DefaultDeviceGuard shapes_only(lora::Device::meta());
    return lora::models::create_model({config, "fuzz"}, 0);
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lora::fuzz::MemoryFile file(data, size);
  try {
    const lora::models::HFWeights weights = lora::models::HFWeights::open(file.path());
    const auto stored = lora::models::stored_compact_weights(weights);
    for (const auto& [name, w] : stored) {
      try {
        const lora::QuantizedWeight q = lora::models::read_compact_weight(weights, w);
        (void)q.nbytes();
      } catch (const lora::Error&) {
      }
    }
    lora::models::check_hf_weights(meta_gpt2(), weights);
  } catch (const lora::Error&) {
  }
  return 0;
}
