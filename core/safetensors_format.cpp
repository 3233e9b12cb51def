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
    {"F64", 8, Kind::Float, DType::F64},      {"F32", 4, Kind::Float, DType::F32},
    {"F16", 2, Kind::Float, DType::F16},      {"BF16", 2, Kind::Float, DType::BF16},
    {"I64", 8, Kind::Signed, DType::I64},     {"I32", 4, Kind::Signed, DType::I32},
    {"I16", 2, Kind::Signed, std::nullopt},   {"I8", 1, Kind::Signed, std::nullopt},
    {"U64", 8, Kind::Unsigned, std::nullopt}, {"U32", 4, Kind::Unsigned, std::nullopt},
    {"U16", 2, Kind::Unsigned, std::nullopt}, {"U8", 1, Kind::Unsigned, std::nullopt},
    {"BOOL", 1, Kind::Bool, std::nullopt},    {"F8_E5M2", 1, Kind::Float8, std::nullopt},
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

// A SAX pass over the header that sees every key, which the DOM cannot show: nlohmann::json keeps only the
// last of duplicate keys and sorts keys. It records the first duplicate (at any depth) and the top-level
// keys in file order. (Not a parse callback: in nlohmann 3.11 the callback parser rescans the parent
// object at every object end, which is quadratic in the number of tensors.)
struct KeyScanner : nlohmann::json_sax<json> {
  std::vector<std::set<std::string>> open_objects;  // the keys seen so far in each enclosing object
  std::vector<std::string> top_keys;
  std::string duplicate, duplicate_in;  // duplicate_in: the top-level entry holding it ("" at the top level)
  std::string error;

  bool start_object(std::size_t) override {
    open_objects.emplace_back();
    return true;
  }
  bool end_object() override {
    open_objects.pop_back();
    return true;
  }
  bool key(string_t& key) override {
    if (!open_objects.back().insert(key).second) {
      duplicate = key;
      duplicate_in = open_objects.size() == 1 || top_keys.empty() ? "" : top_keys.back();
      return false;  // stop here
    }
    if (open_objects.size() == 1) top_keys.push_back(key);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
    error = e.what();
    return false;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
};

// Parses the header JSON, rejecting invalid JSON and duplicate keys; `top_keys` receives the top-level
// keys in file order.
json parse_header_json(const std::string& path, std::string_view text, std::vector<std::string>& top_keys) {
  KeyScanner scanner;
  json::sax_parse(text.begin(), text.end(), &scanner);
  if (!scanner.error.empty()) fail(path, "the header is not valid JSON: {}", scanner.error);
  if (!scanner.duplicate.empty()) {
    if (scanner.duplicate_in.empty()) fail(path, "duplicate tensor name '{}' in the header", scanner.duplicate);
    fail(path, "duplicate key '{}' in the header entry '{}'", scanner.duplicate, scanner.duplicate_in);
  }
  top_keys = std::move(scanner.top_keys);
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {  // not expected: the scan accepted the same text
    fail(path, "the header is not valid JSON: {}", e.what());
  }
}

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
  std::vector<std::string> order;
  const json header = parse_header_json(path, text, order);
  if (!header.is_object()) fail(path, "the header is not a JSON object (found a JSON {})", header.type_name());

  Header out;
  for (const std::string& name : order) {
    const json& entry = header.at(name);
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "\"__metadata__\" is not an object (found a JSON {})", entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          fail(path, "\"__metadata__\" value of '{}' is not a string (found a JSON {})", key, value.type_name());
        }
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    out.tensors.push_back(parse_entry(path, name, entry, data_size));
  }
  check_tiling(path, out.tensors, data_size);
  return out;
}

}  // namespace lora::safetensors_format
