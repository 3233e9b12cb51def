// Fuzzes the safetensors reader: header parsing and validation, then loading every tensor it accepted in
// each conversion it offers. Anything but a clean load or a lora::Error is a finding.
#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lora::fuzz::MemoryFile file(data, size);
  try {
    const lora::SafeTensorsFile st = lora::SafeTensorsFile::open(file.path());
    for (const lora::TensorInfo& info : st.tensors()) {
      if (info.nbytes() > (size_t{1} << 24)) continue;  // the file holds it (validated), but keep runs fast
      for (lora::DType to : {lora::DType::F32, lora::DType::I64}) {
        try {
          const lora::Tensor t = st.load(info.name, to);
          (void)t.numel();
        } catch (const lora::Error&) {
        }
      }
      (void)st.raw(info.name);
    }
  } catch (const lora::Error&) {
  }
  return 0;
}
