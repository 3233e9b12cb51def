// GGUF, the file format of llama.cpp and Ollama (ggml/include/gguf.h): a header of typed key/value
// metadata and tensor descriptions, then the aligned tensor data. Read memory-mapped with every count,
// length, offset and size checked against the file before use; written tensor by tensor.
//
// Layout (all little-endian):
//   "GGUF" u32 version (2 or 3) | u64 n_tensors | u64 n_kv
//   n_kv times:      string key | u32 value type | value (an array: u32 element type, u64 count, elements)
//   n_tensors times: string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset
//   padding to general.alignment (default 32) | data section: tensor i at data_start + offset_i
// A string is u64 length + UTF-8 bytes (no terminator). ne[0] is the fastest-varying dimension: a
// PyTorch weight [out, in] is stored with ne = {in, out}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace lora::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// ---- Tensor types (ggml_type) ----------------------------------------------------------------------

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

struct TypeTraits {
  TensorType type;
  std::string_view name;  // ggml's: "f32", "q8_0", "q4_K"
  uint32_t block_size;    // elements per block
  uint32_t type_size;     // bytes per block
  bool dequantizable;     // whether lora.cpp can turn it into floats (core/gguf_quants.h)
};

// The traits of a type id, or nullptr for an id ggml does not define (or no longer supports in files).
const TypeTraits* type_traits(uint32_t id);
const TypeTraits& type_traits(TensorType type);
std::string_view type_name(TensorType type);
// "f32", "f16", "bf16", "q8_0", ... (case-insensitive) to a type; nullopt for an unknown name.
std::optional<TensorType> type_from_name(std::string_view name);

// ---- Metadata values -------------------------------------------------------------------------------

enum class ValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view value_type_name(ValueType type);

// One metadata value. Integers are held widened (u64 or i64 by signedness), floats as double, an array
// as its element type and its elements (arrays of arrays are refused by the reader, as by llama.cpp's).
struct Value {
  ValueType type = ValueType::U32;
  uint64_t u = 0;                           // U8, U16, U32, U64, BOOL (0/1)
  int64_t i = 0;                            // I8, I16, I32, I64
  double f = 0.0;                           // F32, F64
  std::string s;                            // STRING
  ValueType element_type = ValueType::U32;  // ARRAY
  std::vector<Value> array;
  uint64_t skipped = 0;  // ARRAY: elements read and validated but not kept (File::open with MetadataArrays::LengthOnly)

  static Value u32(uint32_t v) { return unsigned_of(ValueType::U32, v); }
  static Value u64(uint64_t v) { return unsigned_of(ValueType::U64, v); }
  static Value boolean(bool v) { return unsigned_of(ValueType::BOOL, v ? 1u : 0u); }
  static Value i32(int32_t v) {
    Value out;
    out.type = ValueType::I32;
    out.i = v;
    return out;
  }
  static Value f32(float v) {
    Value out;
    out.type = ValueType::F32;
    out.f = v;
    return out;
  }
  static Value string(std::string v) {
    Value out;
    out.type = ValueType::STRING;
    out.s = std::move(v);
    return out;
  }
  static Value strings(const std::vector<std::string>& v);
  static Value i32s(const std::vector<int32_t>& v);
  static Value f32s(const std::vector<float>& v);

  bool is_integer() const;
  static Value unsigned_of(ValueType type, uint64_t v) {
    Value out;
    out.type = type;
    out.u = v;
    return out;
  }
  static Value array_of(ValueType element_type) {
    Value out;
    out.type = ValueType::ARRAY;
    out.element_type = element_type;
    return out;
  }
  bool is_float() const { return type == ValueType::F32 || type == ValueType::F64; }
  std::string str() const;  // for messages: the value, or "array of N <type>"
};

// ---- Reading --------------------------------------------------------------------------------------

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length (the fastest-varying dimension)
  TensorType type = TensorType::F32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping
  int64_t elements() const;
  int64_t rows() const { return ne.empty() || ne[0] == 0 ? 0 : elements() / ne[0]; }  // rows of ne[0] elements
};

// What File::open keeps of the metadata's arrays; every element is read and validated either way.
enum class MetadataArrays {
  Keep,
  // Each array's element type and length only (Value::skipped), for a reader that needs the model and not its
  // tokenizer, whose arrays are most of the metadata: GPT-2's 100,257 token and merge strings are 14.5 MB of
  // Values, which would otherwise sit in the heap while the model loads.
  LengthOnly,
};

// A parsed GGUF file. open() maps the file read-only (tensor data is never copied); parse() reads bytes
// the caller keeps alive (tests, the fuzz target). Everything is validated before the object exists:
//   magic and version (2 or 3); counts no larger than the bytes that could hold them; every string's
//   length within the file and its bytes valid UTF-8; value types and element types known, arrays not
//   nested; keys unique and non-empty; general.alignment a u32 power of two; tensor names unique and
//   non-empty, n_dims <= 4, every dimension >= 0, the element count and byte size free of overflow, the
//   row length a multiple of the type's block, the type known; every tensor's offset aligned and its
//   bytes inside the data section, no two tensors overlapping.
// Errors are lora::Error "GGUF file '<name>': <what> at offset <n>".
class File {
 public:
  static File open(const std::string& path, MetadataArrays arrays = MetadataArrays::Keep);
  static File parse(const uint8_t* bytes, size_t size, const std::string& name,
                    MetadataArrays arrays = MetadataArrays::Keep);

  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the data section starts in the file
  size_t file_size() const { return size_; }

  // Metadata in file order, and by key.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  // Typed reads that name the key in errors: a missing key (without a default) or another type is refused.
  std::string get_string(const std::string& key) const;
  std::optional<std::string> get_string_or(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;  // any unsigned or non-negative signed integer type
  std::optional<uint64_t> get_uint_or(const std::string& key) const;
  double get_float(const std::string& key) const;  // F32 or F64
  std::optional<double> get_float_or(const std::string& key) const;
  std::optional<bool> get_bool_or(const std::string& key) const;
  // Refused for an array that was not kept (MetadataArrays::LengthOnly).
  const Value& get_array(const std::string& key, ValueType element_type) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;
  // Tells the kernel that a tensor's bytes will not be read again, so that the pages of the mapping it
  // read are dropped from the process (a loader that converts tensor by tensor then holds one tensor of
  // the file at a time, not the whole file). The data stays readable (pages are read again on access).
  // A no-op for parse()d bytes.
  void release(const TensorInfo& tensor) const;
  // For a loader that converts one large tensor: calls fn(begin, end) on consecutive ranges of its rows,
  // about `chunk_bytes` of the file each, and releases each range's pages once fn has read them, so that no
  // more than about one chunk of the tensor is resident in the mapping at a time (not the whole tensor next
  // to its converted copy). Throws unless nbytes divides into its rows; no call for a tensor without rows.
  void for_each_row_chunk(const TensorInfo& tensor, const std::function<void(int64_t begin, int64_t end)>& fn,
                          uint64_t chunk_bytes = uint64_t{4} << 20) const;

 private:
  File() = default;
  void parse_all(MetadataArrays arrays);

  std::string name_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;  // munmap'd in the destructor when open() mapped the file
  uint32_t version_ = 0, alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::map<std::string, size_t> key_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// ---- Writing --------------------------------------------------------------------------------------

// Describes a file, then writes it in one pass: the header, then each tensor's bytes as its `write`
// callback produces them (so an export holds one tensor at a time, never the whole model). The file is
// written atomically (core/atomic_file.h). Version 3, general.alignment as set (default 32).
class Writer {
 public:
  // Bytes of one tensor: called once, in order; must append exactly the declared nbytes to `out`.
  using TensorWriter = std::function<void(std::string& out)>;

  void set(const std::string& key, Value value);  // replaces an earlier value of the key
  // `ne` in ggml order; nbytes is computed from the type (ne[0] must be a multiple of its block).
  void add_tensor(const std::string& name, std::vector<int64_t> ne, TensorType type, TensorWriter write);
  void write(const std::string& path) const;
  // The whole file in memory (tests).
  std::string to_bytes() const;

 private:
  struct Pending {
    std::string name;
    std::vector<int64_t> ne;
    TensorType type;
    uint64_t nbytes;
    TensorWriter write;
  };
  void write_to(std::ostream& out) const;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Pending> tensors_;
};

// Bytes of a tensor of `ne` elements of `type` (ne[0] a multiple of the block size); throws on overflow.
uint64_t tensor_nbytes(TensorType type, const std::vector<int64_t>& ne);

}  // namespace lora::gguf
