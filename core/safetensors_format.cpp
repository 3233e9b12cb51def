// The safetensors format: the dtype table, and header parsing and validation (see safetensors_format.h).
#include "core/safetensors_format.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

namespace lora::safetensors_format {

namespace {

using json = nlohmann::json;

constexpr FileDType kFileDTypes[] = {
    {"F64", 8, Kind::Float, DType::F64},        {"F32", 4, Kind::Float, DType::F32},
    {"F16", 2, Kind::Float, DType::F16},        {"BF16", 2, Kind::Float, DType::BF16},
    {"I64", 8, Kind::Signed, DType::I64},       {"I32", 4, Kind::Signed, DType::I32},
    {"I16", 2, Kind::Signed, std::nullopt},     {"I8", 1, Kind::Signed, std::nullopt},
    {"U64", 8, Kind::Unsigned, std::nullopt},   {"U32", 4, Kind::Unsigned, std::nullopt},
    {"U16", 2, Kind::Unsigned, std::nullopt},   {"U8", 1, Kind::Unsigned, std::nullopt},
    {"BOOL", 1, Kind::Bool, std::nullopt},      {"F8_E5M2", 1, Kind::Float8, std::nullopt},
    {"F8_E4M3", 1, Kind::Float8, std::nullopt},
};

// "a, b, c". (Not fmt::join: with fmt 9 it trips a GCC 12 -Wstringop-overflow false positive at -O3.)
template <typename Range>
std::string join(const Range& items) {
  std::string out;
  bool first = true;
  for (const auto& item : items) {
    out += first ? "" : ", ";
    out += fmt::format("{}", item);
    first = false;
  }
  return out;
}

// Forward declarations: the SAX builder below hands each entry to these as soon as it is complete.
TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry, uint64_t data_size);
void add_metadata(const std::string& path, const json& entry, std::map<std::string, std::string>& metadata);

// One SAX pass over the header that builds one top-level entry at a time as a small DOM, hands it to
// parse_entry (or reads __metadata__), and drops it: memory stays proportional to one entry plus the
// results, not to the whole header (a DOM of the header costs over 20 times its size). It also sees what a
// DOM hides: nlohmann::json keeps only the last of duplicate keys, so duplicates (at any depth) are
// detected here. Entries nest at most three levels (entry, shape or offsets array, numbers); deeper
// nesting is refused before it is built.
struct HeaderBuilder : nlohmann::json_sax<json> {
  HeaderBuilder(const std::string& path, uint64_t data_size, Header& out)
      : path(path), data_size(data_size), out(out) {}

  const std::string& path;
  uint64_t data_size;
  Header& out;
  std::set<std::string> top_keys;                  // tensor names seen (duplicates are refused)
  std::vector<std::set<std::string>> nested_keys;  // keys of the open objects inside the current entry
  std::string current;                             // the entry being built
  json entry;                                      // its value
  std::vector<json*> stack;                        // open containers inside `entry`
  std::string pending_key;                         // the key of the next value in the innermost object
  int depth = 0;                                   // 1: inside the top-level object
  std::string error;

  bool add_value(json value) {
    if (depth == 1) {  // a top-level value that is not an object or array: the entry itself
      entry = std::move(value);
      return finish_entry();
    }
    json& parent = *stack.back();
    if (parent.is_array())
      parent.push_back(std::move(value));
    else
      parent[pending_key] = std::move(value);
    return true;
  }
  bool finish_entry() {
    if (current == "__metadata__")
      add_metadata(path, entry, out.metadata);
    else
      out.tensors.push_back(parse_entry(path, current, entry, data_size));
    entry = json();
    return true;
  }
  bool open(json container) {
    if (depth == 0) {
      if (!container.is_object()) fail(path, "the header is not a JSON object (found a JSON array)");
      depth = 1;
      return true;
    }
    if (depth >= 4) fail(path, "the header entry '{}' nests deeper than a safetensors entry can", current);
    if (depth == 1) {
      entry = std::move(container);
      stack.push_back(&entry);
    } else {
      json& parent = *stack.back();
      json* child;
      if (parent.is_array()) {
        parent.push_back(std::move(container));
        child = &parent.back();
      } else {
        child = &(parent[pending_key] = std::move(container));
      }
      stack.push_back(child);
    }
    if (stack.back()->is_object()) nested_keys.emplace_back();
    ++depth;
    return true;
  }
  bool close() {
    --depth;
    if (depth == 0) return true;  // the end of the header
    if (stack.back()->is_object()) nested_keys.pop_back();
    stack.pop_back();
    return depth == 1 ? finish_entry() : true;
  }

  bool start_object(std::size_t) override { return open(json::object()); }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_array() override { return close(); }
  bool key(string_t& key) override {
    if (depth == 1) {
      if (!top_keys.insert(key).second) fail(path, "duplicate tensor name '{}' in the header", key);
      current = key;
      return true;
    }
    if (!nested_keys.back().insert(key).second) fail(path, "duplicate key '{}' in the header entry '{}'", key, current);
    pending_key = key;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
    error = e.what();
    return false;
  }
  bool null() override { return add_value(nullptr); }
  bool boolean(bool v) override { return add_value(v); }
  bool number_integer(number_integer_t v) override { return add_value(v); }
  bool number_unsigned(number_unsigned_t v) override { return add_value(v); }
  bool number_float(number_float_t v, const string_t&) override { return add_value(v); }
  bool string(string_t& v) override { return add_value(v); }
  bool binary(binary_t&) override { return add_value(nullptr); }
};

// A non-negative JSON integer (a dimension or an offset); what() names it in errors (built only on error).
template <typename What>
uint64_t get_index(const std::string& path, const json& v, What&& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {  // the parser stores "-0" as a signed zero
    if (v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    fail(path, "{} is negative ({})", what(), v.get<int64_t>());
  }
  if (v.is_number_float()) fail(path, "{} is not an integer ({})", what(), v.dump());
  fail(path, "{} is not a number (found a JSON {})", what(), v.type_name());
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry, uint64_t data_size) {
  if (!entry.is_object()) {
    fail(path, "the entry of tensor '{}' is not an object (found a JSON {})", name, entry.type_name());
  }
  auto field = [&](const char* key) -> const json& {
    const auto it = entry.find(key);
    if (it == entry.end()) fail(path, "tensor '{}' has no \"{}\" field", name, key);
    return *it;
  };
  TensorInfo info;
  info.name = name;

  const json& dtype = field("dtype");
  if (!dtype.is_string()) {
    fail(path, "tensor '{}': \"dtype\" is not a string (found a JSON {})", name, dtype.type_name());
  }
  info.dtype_name = dtype.get<std::string>();
  const FileDType* file_dtype = find_dtype(info.dtype_name);
  if (!file_dtype) {
    std::vector<std::string_view> known;
    for (const FileDType& d : kFileDTypes) known.push_back(d.name);
    fail(path, "tensor '{}': unknown dtype '{}' (expected one of {})", name, info.dtype_name, join(known));
  }
  info.dtype = file_dtype->dtype;

  const json& shape = field("shape");
  if (!shape.is_array()) {
    fail(path, "tensor '{}': \"shape\" is not an array (found a JSON {})", name, shape.type_name());
  }
  std::vector<int64_t> dims;
  dims.reserve(shape.size());
  uint64_t numel = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const uint64_t d =
        get_index(path, shape[i], [&] { return fmt::format("tensor '{}': dimension {} of \"shape\"", name, i); });
    // Every partial product must fit in int64, even when a later dimension is 0: Shape::numel multiplies
    // in order.
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, d, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      // (dims, not shape.dump(): the rest of the array is unchecked and could be nested arbitrarily deep)
      fail(path, "tensor '{}': the element count of shape [{}{}{}, ...] overflows 64 bits", name, join(dims),
           dims.empty() ? "" : ", ", d);
    }
    dims.push_back(static_cast<int64_t>(d));
  }
  info.shape = Shape(std::move(dims));
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, file_dtype->size, &nbytes)) {
    fail(path, "tensor '{}': the byte size of shape {} x {} overflows 64 bits", name, info.shape.str(),
         info.dtype_name);
  }

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    fail(path, "tensor '{}': \"data_offsets\" is not an array [begin, end] (found a JSON {}{})", name,
         offsets.type_name(), offsets.is_array() ? fmt::format(" of {} elements", offsets.size()) : "");
  }
  info.begin = get_index(path, offsets[0], [&] { return fmt::format("tensor '{}': data_offsets begin", name); });
  info.end = get_index(path, offsets[1], [&] { return fmt::format("tensor '{}': data_offsets end", name); });
  if (info.begin > info.end) {
    fail(path, "tensor '{}': data_offsets [{}, {}] begin after they end", name, info.begin, info.end);
  }
  if (info.end > data_size) {
    fail(path, "tensor '{}': data_offsets [{}, {}] lie outside the data section ({} bytes)", name, info.begin, info.end,
         data_size);
  }
  if (info.end - info.begin != nbytes) {
    fail(path, "tensor '{}': shape {} of {} ({} bytes each) needs {} bytes, but data_offsets [{}, {}] hold {}", name,
         info.shape.str(), info.dtype_name, file_dtype->size, nbytes, info.begin, info.end, info.end - info.begin);
  }
  return info;
}

void add_metadata(const std::string& path, const json& entry, std::map<std::string, std::string>& metadata) {
  if (!entry.is_object()) fail(path, "\"__metadata__\" is not an object (found a JSON {})", entry.type_name());
  for (const auto& [key, value] : entry.items()) {
    if (!value.is_string()) {
      fail(path, "\"__metadata__\" value of '{}' is not a string (found a JSON {})", key, value.type_name());
    }
    metadata.emplace(key, value.get<std::string>());
  }
}

// The format requires the tensors to tile the data section exactly: no overlaps, no gaps, nothing after
// the last tensor (so a file cannot hide a second payload).
void check_tiling(const std::string& path, const std::vector<TensorInfo>& tensors, uint64_t data_size) {
  std::vector<const TensorInfo*> sorted;
  for (const TensorInfo& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : sorted) {
    if (t->begin < covered) {
      fail(path, "tensors '{}' and '{}' overlap: data_offsets [{}, {}] and [{}, {}]", previous->name, t->name,
           previous->begin, previous->end, t->begin, t->end);
    }
    if (t->begin > covered) fail(path, "bytes [{}, {}) of the data section belong to no tensor", covered, t->begin);
    covered = t->end;
    previous = t;
  }
  if (covered != data_size) {
    fail(path, "the data section holds {} bytes after the last tensor (it is {} bytes, the tensors cover {})",
         data_size - covered, data_size, covered);
  }
}

}  // namespace

const FileDType* find_dtype(std::string_view name) {
  for (const FileDType& d : kFileDTypes)
    if (d.name == name) return &d;
  return nullptr;
}

Header parse_header(const std::string& path, std::string_view text, uint64_t data_size) {
  if (text.empty() || text[0] != '{') fail(path, "the header does not start with '{{' (not a JSON object)");
  Header out;
  HeaderBuilder builder(path, data_size, out);
  json::sax_parse(text.begin(), text.end(), &builder);
  if (!builder.error.empty()) fail(path, "the header is not valid JSON: {}", builder.error);
  check_tiling(path, out.tensors, data_size);
  return out;
}

}  // namespace lora::safetensors_format
