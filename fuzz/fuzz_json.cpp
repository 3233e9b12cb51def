// Fuzzes the strict JSON reader every JSON document goes through (core/json.h) and the field-by-field
// object reader (core/json_object_reader.h): parsing must refuse with lora::Error or return a document, never
// crash or hang (duplicate keys at any depth, deep nesting, numbers beyond a double, invalid UTF-8), and the
// ordered parse must agree with the plain one on what it accepts.
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "core/json.h"
#include "core/json_object_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  bool plain_ok = false, ordered_ok = false;
  nlohmann::json j;
  try {
    j = lora::parse_json(text, "fuzz");
    plain_ok = true;
  } catch (const lora::Error&) {
  }
  try {
    (void)lora::parse_json_ordered(text, "fuzz");
    ordered_ok = true;
  } catch (const lora::Error&) {
  }
  if (plain_ok != ordered_ok) std::abort();  // the two parses refuse the same documents
  if (!plain_ok || !j.is_object()) return 0;
  // Read every field as every type: each either returns or refuses with lora::Error.
  try {
    lora::JsonObjectReader r(j, "fuzz");
    for (const auto& [key, value] : j.items()) {
      try {
        (void)r.integer(key, 0, -1000, 1000);
      } catch (const lora::Error&) {
      }
      try {
        (void)r.number(key, 0, -1e9, 1e9);
      } catch (const lora::Error&) {
      }
      try {
        (void)r.boolean(key, false);
      } catch (const lora::Error&) {
      }
      try {
        (void)r.string(key, "");
      } catch (const lora::Error&) {
      }
      try {
        (void)r.object(key);
      } catch (const lora::Error&) {
      }
    }
    r.finish();  // every field was read
  } catch (const lora::Error&) {
    std::abort();  // the constructor accepts any object and finish() has nothing left to refuse
  }
  return 0;
}
