// The safetensors format itself: its dtype table, and the parsing and validation of a header.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace lora::safetensors_format {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

// Throws lora::Error("safetensors file '<path>': <message>").
template <typename... Args>
[[noreturn]] void fail(const std::string& path, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format("safetensors file '{}': {}", path, fmt::format(format, std::forward<Args>(args)...)));
}

// ---- The dtypes a file may hold
enum class Kind { Float, Signed, Unsigned, Bool, Float8 };

struct FileDType {
  std::string_view name;  // "F32", "BF16", "U8", ...
  size_t size;            // bytes per element
  Kind kind;
  std::optional<DType> dtype;  // the lora DType with the same encoding, if any
};

const FileDType* find_dtype(std::string_view name);  // nullptr for a name the format does not define

// ---- The header
struct Header {
  std::vector<TensorInfo> tensors;  // in the header's order
  std::map<std::string, std::string> metadata;
};

// Parses the header text of a file whose data section is `data_size` bytes and checks everything the
// reader relies on: a JSON object (starting with '{') with no duplicate key at any depth; each entry with
// a known dtype, a shape of non-negative integers whose element and byte counts fit in 64 bits, and
// data_offsets [begin, end] inside the data section holding exactly shape x dtype bytes; the entries
// tiling the data section with no overlap, gap or trailing bytes; "__metadata__", if present, an object of
// strings. Throws lora::Error naming `path` and the problem.
Header parse_header(const std::string& path, std::string_view text, uint64_t data_size);

}  // namespace lora::safetensors_format
