// Fuzzes the PEFT adapter loader: adapter_config.json (fields, rank/alpha patterns as regular expressions)
// and adapter_model.safetensors (names, shapes, slice metadata), imported into a tiny GPT-2 that then runs
// a forward pass. Input: the config text, a separator, the safetensors bytes.
#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"
#include "models/gpt2/model.h"
#include "nn/lora/adapter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto model = [] {
    auto m = std::make_shared<lora::gpt2::GPT2LMHeadModel>(lora::gpt2::GPT2Config::preset("tiny"), 1);
    m->eval();
    return m;
  }();
  const auto parts = lora::fuzz::split(data, size, "\n--SAFETENSORS--\n");
  if (parts.size() != 2) return 0;
  lora::nn::AdapterState state;
  state.config_json = parts[0];
  try {
    lora::fuzz::MemoryFile file(parts[1]);
    const lora::SafeTensorsFile st = lora::SafeTensorsFile::open(file.path());
    for (const std::string& name : st.names()) {
      if (st.info(name).nbytes() > (size_t{1} << 20)) return 0;
      state.tensors.emplace_back(name, st.load(name));
    }
    state.metadata = st.metadata();
    lora::nn::import_adapter(*model, state, "fuzz");
    lora::NoGradGuard no_grad;
    (void)model->forward(lora::Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {1, 3})).numel();
  } catch (const lora::Error&) {
  }
  return 0;
}
