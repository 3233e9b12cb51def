// Fuzzes the GGUF reader (core/gguf.h) and what reads its metadata: every tensor it accepted decoded row by
// row and, when 2-D, held as a compact base weight (models/gguf/base_blocks.h: kept or converted), the model config its
// metadata describes (models/gguf/arch.h), and its tokenizer (models/gguf/ tokenizer.h) built and run. Anything but a
// clean result or a lora::Error is a finding.
#include <vector>

#include "core/error.h"
#include "core/gguf.h"
#include "core/gguf_quants.h"
#include "models/gguf/arch.h"
#include "models/gguf/base_blocks.h"
#include "models/gguf/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so that AddressSanitizer sees any read past the end.
  const std::vector<uint8_t> bytes(data, data + size);
  // Validating the metadata's arrays without keeping them must accept and refuse exactly what keeping them does.
  bool lean_accepted = true;
  try {
    (void)lora::gguf::File::parse(bytes.data(), bytes.size(), "fuzz.gguf", lora::gguf::MetadataArrays::LengthOnly);
  } catch (const lora::Error&) {
    lean_accepted = false;
  }
  bool accepted = false;
  try {
    const lora::gguf::File f = lora::gguf::File::parse(bytes.data(), bytes.size(), "fuzz.gguf");
    accepted = true;
    for (const lora::gguf::TensorInfo& t : f.tensors()) {
      // Bounded work per input: the file holds these bytes (validated), but a row of 2^61 elements in a tensor
      // of no rows holds none, and would only exhaust the harness's own buffer.
      if (!lora::gguf::type_traits(t.type).dequantizable || t.elements() > (int64_t(1) << 20) || t.rows() == 0 ||
          t.ne[0] > (int64_t(1) << 20)) {
        continue;
      }
      std::vector<float> row(static_cast<size_t>(t.ne[0]));
      const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(t.rows());
      for (int64_t r = 0; r < t.rows(); ++r)
        lora::gguf::dequantize_row(t.type, t.data + r * row_bytes, row.data(), t.ne[0]);
      if (t.ne.size() == 2) {
        for (const lora::QuantFormat format :
             {lora::models::gguf_io::auto_base_format(t.type), lora::QuantFormat::Q4_0}) {
          if (format == lora::QuantFormat::F32) continue;
          try {
            (void)lora::models::gguf_io::base_weight_from_gguf(f, t, format, t.ne[1] % 4 == 0 ? 2 : 0);
          } catch (const lora::Error&) {
          }
        }
      }
    }
    try {
      (void)lora::models::gguf_io::config_from_gguf(f);
    } catch (const lora::Error&) {
    }
    try {
      const auto tok = lora::models::gguf_io::load_gguf_tokenizer(f);
      const auto ids = tok->encode("Hello, world! 123 ünï", {.add_special_tokens = true});
      (void)tok->decode(ids, {});
    } catch (const lora::Error&) {
    }
  } catch (const lora::Error&) {
  }
  if (accepted != lean_accepted) __builtin_trap();  // `accepted` is set once the parse returned
  return 0;
}
