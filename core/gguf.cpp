// GGUF: the type tables, the validating reader (memory-mapped) and the streaming writer.
#include "core/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

#include "core/atomic_file.h"
#include "core/error.h"

namespace lora::gguf {

// ---------------------------------------------------------------------------------------------------
// Types

namespace {

// ggml's type_traits (ggml/src/ggml.c): block size and bytes per block of every type a file may hold.
constexpr TypeTraits kTypes[] = {
    {TensorType::F32, "f32", 1, 4, true},
    {TensorType::F16, "f16", 1, 2, true},
    {TensorType::Q4_0, "q4_0", 32, 18, true},
    {TensorType::Q4_1, "q4_1", 32, 20, true},
    {TensorType::Q5_0, "q5_0", 32, 22, true},
    {TensorType::Q5_1, "q5_1", 32, 24, true},
    {TensorType::Q8_0, "q8_0", 32, 34, true},
    {TensorType::Q8_1, "q8_1", 32, 36, false},
    {TensorType::Q2_K, "q2_K", 256, 84, false},
    {TensorType::Q3_K, "q3_K", 256, 110, false},
    {TensorType::Q4_K, "q4_K", 256, 144, true},
    {TensorType::Q5_K, "q5_K", 256, 176, true},
    {TensorType::Q6_K, "q6_K", 256, 210, true},
    {TensorType::Q8_K, "q8_K", 256, 292, false},
    {TensorType::IQ2_XXS, "iq2_xxs", 256, 66, false},
    {TensorType::IQ2_XS, "iq2_xs", 256, 74, false},
    {TensorType::IQ3_XXS, "iq3_xxs", 256, 98, false},
    {TensorType::IQ1_S, "iq1_s", 256, 50, false},
    {TensorType::IQ4_NL, "iq4_nl", 32, 18, false},
    {TensorType::IQ3_S, "iq3_s", 256, 110, false},
    {TensorType::IQ2_S, "iq2_s", 256, 82, false},
    {TensorType::IQ4_XS, "iq4_xs", 256, 136, false},
    {TensorType::I8, "i8", 1, 1, false},
    {TensorType::I16, "i16", 1, 2, false},
    {TensorType::I32, "i32", 1, 4, false},
    {TensorType::I64, "i64", 1, 8, false},
    {TensorType::F64, "f64", 1, 8, false},
    {TensorType::IQ1_M, "iq1_m", 256, 56, false},
    {TensorType::BF16, "bf16", 1, 2, true},
    {TensorType::TQ1_0, "tq1_0", 256, 54, false},
    {TensorType::TQ2_0, "tq2_0", 256, 66, false},
    {TensorType::MXFP4, "mxfp4", 32, 17, false},
};

// Checked arithmetic on sizes read from a file: nullopt on overflow.
std::optional<uint64_t> add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}
std::optional<uint64_t> mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

}  // namespace

const TypeTraits* type_traits(uint32_t id) {
  for (const TypeTraits& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

const TypeTraits& type_traits(TensorType type) {
  const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
  LORA_CHECK(t != nullptr, "GGUF: tensor type {} is not defined", static_cast<uint32_t>(type));
  return *t;
}

std::string_view type_name(TensorType type) {
  return type_traits(type).name;
}

std::optional<TensorType> type_from_name(std::string_view name) {
  for (const TypeTraits& t : kTypes) {
    if (t.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size(); ++i) same = same && std::tolower(t.name[i]) == std::tolower(name[i]);
    if (same) return t.type;
  }
  return std::nullopt;
}

uint64_t tensor_nbytes(TensorType type, const std::vector<int64_t>& ne) {
  const TypeTraits& t = type_traits(type);
  LORA_CHECK(!ne.empty() && ne.size() <= kMaxDims, "GGUF: a tensor has 1 to {} dimensions, not {}", kMaxDims,
             ne.size());
  std::optional<uint64_t> n = 1;
  for (int64_t d : ne) {
    LORA_CHECK(d >= 0, "GGUF: negative dimension {}", d);
    n = n ? mul(*n, static_cast<uint64_t>(d)) : n;
  }
  LORA_CHECK(n && *n <= uint64_t(INT64_MAX), "GGUF: the element count of a tensor overflows");
  LORA_CHECK(ne[0] % t.block_size == 0, "GGUF: a row of {} elements is not a multiple of {}'s block of {}", ne[0],
             t.name, t.block_size);
  const std::optional<uint64_t> bytes = mul(*n / t.block_size, t.type_size);
  LORA_CHECK(bytes.has_value(), "GGUF: the byte size of a tensor overflows");
  return *bytes;
}

// ---------------------------------------------------------------------------------------------------
// Values

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::U8:
      return "u8";
    case ValueType::I8:
      return "i8";
    case ValueType::U16:
      return "u16";
    case ValueType::I16:
      return "i16";
    case ValueType::U32:
      return "u32";
    case ValueType::I32:
      return "i32";
    case ValueType::F32:
      return "f32";
    case ValueType::BOOL:
      return "bool";
    case ValueType::STRING:
      return "string";
    case ValueType::ARRAY:
      return "array";
    case ValueType::U64:
      return "u64";
    case ValueType::I64:
      return "i64";
    case ValueType::F64:
      return "f64";
  }
  return "unknown";
}

Value Value::strings(const std::vector<std::string>& v) {
  Value out = array_of(ValueType::STRING);
  out.array.reserve(v.size());
  for (const std::string& s : v) out.array.push_back(Value::string(s));
  return out;
}

Value Value::i32s(const std::vector<int32_t>& v) {
  Value out = array_of(ValueType::I32);
  for (int32_t x : v) out.array.push_back(Value::i32(x));
  return out;
}

Value Value::f32s(const std::vector<float>& v) {
  Value out = array_of(ValueType::F32);
  for (float x : v) out.array.push_back(Value::f32(x));
  return out;
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::U16:
    case ValueType::I16:
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::U64:
    case ValueType::I64:
      return true;
    default:
      return false;
  }
}

std::string Value::str() const {
  switch (type) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64:
      return std::to_string(u);
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64:
      return std::to_string(i);
    case ValueType::F32:
    case ValueType::F64:
      return fmt::format("{}", f);
    case ValueType::BOOL:
      return u ? "true" : "false";
    case ValueType::STRING:
      return fmt::format("\"{}{}\"", std::string_view(s).substr(0, 60), s.size() > 60 ? "..." : "");
    case ValueType::ARRAY:
      return fmt::format("array of {} {}", array.size() + skipped, value_type_name(element_type));
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------------
// Reading

namespace {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else
      return false;
    if (i + n >= s.size()) return false;  // the continuation bytes i+1..i+n must exist
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// A cursor over the header that refuses to read past the end of the file.
class Cursor {
 public:
  Cursor(const uint8_t* bytes, size_t size, const std::string& name) : p_(bytes), size_(size), name_(name) {}

  template <typename... Args>
  [[noreturn]] void fail(uint64_t at, fmt::format_string<Args...> format, Args&&... args) const {
    throw Error(
        fmt::format("GGUF file '{}': {} (at offset {})", name_, fmt::format(format, std::forward<Args>(args)...), at));
  }

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining()) fail(pos_, "{} needs {} bytes, but the file ends {} bytes later", what, n, remaining());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t at = pos_;
    const auto n = read<uint64_t>(what);
    if (n > remaining()) fail(at, "{}: a string of {} bytes, but the file ends {} bytes later", what, n, remaining());
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    if (!valid_utf8(s)) fail(at, "{}: the string is not valid UTF-8", what);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::BOOL:
      return 1;
    case ValueType::U16:
    case ValueType::I16:
      return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32:
      return 4;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64:
      return 8;
    default:
      return 0;
  }
}

Value read_scalar(Cursor& c, ValueType t, const std::string& key) {
  Value v;
  v.type = t;
  const uint64_t at = c.pos();
  switch (t) {
    case ValueType::U8:
      v.u = c.read<uint8_t>("a u8 value");
      break;
    case ValueType::I8:
      v.i = c.read<int8_t>("an i8 value");
      break;
    case ValueType::U16:
      v.u = c.read<uint16_t>("a u16 value");
      break;
    case ValueType::I16:
      v.i = c.read<int16_t>("an i16 value");
      break;
    case ValueType::U32:
      v.u = c.read<uint32_t>("a u32 value");
      break;
    case ValueType::I32:
      v.i = c.read<int32_t>("an i32 value");
      break;
    case ValueType::F32:
      v.f = c.read<float>("an f32 value");
      break;
    case ValueType::U64:
      v.u = c.read<uint64_t>("a u64 value");
      break;
    case ValueType::I64:
      v.i = c.read<int64_t>("an i64 value");
      break;
    case ValueType::F64:
      v.f = c.read<double>("an f64 value");
      break;
    case ValueType::BOOL: {
      const auto b = c.read<uint8_t>("a bool value");
      if (b > 1) c.fail(at, "key '{}': a bool must be 0 or 1, not {}", key, b);
      v.u = b;
      break;
    }
    case ValueType::STRING:
      v.s = c.read_string("a string value");
      break;
    case ValueType::ARRAY:
      c.fail(at, "key '{}': arrays of arrays are not supported", key);
  }
  return v;
}

ValueType read_value_type(Cursor& c, const std::string& key, const char* what) {
  const uint64_t at = c.pos();
  const auto t = c.read<uint32_t>(what);
  if (t > static_cast<uint32_t>(ValueType::F64)) c.fail(at, "key '{}': unknown value type {}", key, t);
  return static_cast<ValueType>(t);
}

}  // namespace

int64_t TensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // checked when the file was read
  return n;
}

namespace {
// madvise(MADV_DONTNEED) on the whole pages inside [data, data + n): a page shared with a neighbour stays.
void drop_pages(const uint8_t* data, uint64_t n) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + n) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}
}  // namespace

File File::open(const std::string& path, MetadataArrays arrays) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LORA_CHECK(fd >= 0, "GGUF file '{}': cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LORA_FAIL("GGUF file '{}': not a regular file", path);
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    ::close(fd);
    LORA_FAIL("GGUF file '{}': {} bytes, too short for a GGUF header (24 bytes)", path, size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  LORA_CHECK(map != MAP_FAILED, "GGUF file '{}': cannot map {} bytes: {}", path, size, std::strerror(err));
  File f;  // its destructor unmaps, also when validation throws
  f.name_ = path;
  f.mapping_ = map;
  f.bytes_ = static_cast<const uint8_t*>(map);
  f.size_ = size;
  f.parse_all(arrays);
  // The header, metadata and tensor descriptions were copied out as they were parsed: their pages (the
  // tokenizer's strings, a few MB) are not needed while the tensors are read.
  drop_pages(f.bytes_, std::min<uint64_t>(f.data_offset_, size));
  return f;
}

File File::parse(const uint8_t* bytes, size_t size, const std::string& name, MetadataArrays arrays) {
  File f;
  f.name_ = name;
  f.bytes_ = bytes;
  f.size_ = size;
  f.parse_all(arrays);
  return f;
}

File::File(File&& other) noexcept {
  *this = std::move(other);
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (mapping_) ::munmap(mapping_, size_);
    name_ = std::move(other.name_);
    bytes_ = std::exchange(other.bytes_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapping_ = std::exchange(other.mapping_, nullptr);
    version_ = other.version_;
    alignment_ = other.alignment_;
    data_offset_ = other.data_offset_;
    metadata_ = std::move(other.metadata_);
    key_index_ = std::move(other.key_index_);
    tensors_ = std::move(other.tensors_);
    tensor_index_ = std::move(other.tensor_index_);
  }
  return *this;
}

File::~File() {
  if (mapping_) ::munmap(mapping_, size_);
}

void File::parse_all(MetadataArrays arrays) {
  Cursor c(bytes_, size_, name_);
  c.need(4, "the magic");
  if (std::memcmp(bytes_, "GGUF", 4) != 0) c.fail(0, "not a GGUF file (the first bytes are not \"GGUF\")");
  c.read<uint32_t>("the magic");
  version_ = c.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    c.fail(4, "version {} is not supported (GGUF versions 2 and 3 are; version 1 files predate 64-bit counts)",
           version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor at least 8 + 4 + 4 + 8.
  if (n_kv > c.remaining() / 13) c.fail(16, "{} metadata entries cannot fit in the {} bytes left", n_kv, c.remaining());
  if (n_tensors > c.remaining() / 24) c.fail(8, "{} tensors cannot fit in the {} bytes left", n_tensors, c.remaining());

  for (uint64_t k = 0; k < n_kv; ++k) {
    const uint64_t at = c.pos();
    std::string key = c.read_string("a metadata key");
    if (key.empty()) c.fail(at, "metadata entry {} has an empty key", k);
    if (key_index_.count(key)) c.fail(at, "the metadata key '{}' appears twice", key);
    const ValueType type = read_value_type(c, key, "a value type");
    Value v;
    if (type == ValueType::ARRAY) {
      v.type = ValueType::ARRAY;
      v.element_type = read_value_type(c, key, "an array's element type");
      const uint64_t count_at = c.pos();
      const uint64_t count = c.read<uint64_t>("an array's length");
      // Each element takes at least its scalar size (a string at least its 8-byte length).
      const uint64_t min_size = v.element_type == ValueType::STRING ? 8 : scalar_size(v.element_type);
      if (v.element_type == ValueType::ARRAY) c.fail(count_at - 4, "key '{}': arrays of arrays are not supported", key);
      if (count > c.remaining() / min_size) {
        c.fail(count_at, "key '{}': an array of {} elements cannot fit in the {} bytes left", key, count,
               c.remaining());
      }
      if (arrays == MetadataArrays::Keep) {
        v.array.reserve(static_cast<size_t>(count));
        for (uint64_t e = 0; e < count; ++e) v.array.push_back(read_scalar(c, v.element_type, key));
      } else {
        for (uint64_t e = 0; e < count; ++e) (void)read_scalar(c, v.element_type, key);
        v.skipped = count;
      }
    } else {
      v = read_scalar(c, type, key);
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    if (a->type != ValueType::U32) c.fail(0, "general.alignment must be a u32, not {}", value_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0) c.fail(0, "general.alignment {} is not a power of two", a->u);
    alignment_ = static_cast<uint32_t>(a->u);
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    const uint64_t at = c.pos();
    TensorInfo info;
    info.name = c.read_string("a tensor name");
    if (info.name.empty()) c.fail(at, "tensor {} has an empty name", t);
    if (tensor_index_.count(info.name)) c.fail(at, "the tensor name '{}' appears twice", info.name);
    const auto n_dims = c.read<uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      c.fail(at, "tensor '{}': {} dimensions (1 to {} are allowed)", info.name, n_dims, kMaxDims);
    std::optional<uint64_t> elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto n = c.read<int64_t>("a tensor dimension");
      if (n < 0) c.fail(at, "tensor '{}': dimension {} is {}", info.name, d, n);
      info.ne.push_back(n);
      elements = elements ? mul(*elements, static_cast<uint64_t>(n)) : elements;
    }
    if (!elements || *elements > uint64_t(INT64_MAX)) c.fail(at, "tensor '{}': its element count overflows", info.name);
    const uint64_t type_at = c.pos();
    const auto type_id = c.read<uint32_t>("a tensor type");
    const TypeTraits* traits = type_traits(type_id);
    if (!traits) c.fail(type_at, "tensor '{}': unknown tensor type {}", info.name, type_id);
    info.type = traits->type;
    if (info.ne[0] % traits->block_size != 0) {
      c.fail(at, "tensor '{}': a row of {} elements is not a multiple of {}'s block of {}", info.name, info.ne[0],
             traits->name, traits->block_size);
    }
    const std::optional<uint64_t> nbytes = mul(*elements / traits->block_size, traits->type_size);
    if (!nbytes) c.fail(at, "tensor '{}': its byte size overflows", info.name);
    info.nbytes = *nbytes;
    const uint64_t offset_at = c.pos();
    info.offset = c.read<uint64_t>("a tensor offset");
    if (info.offset % alignment_ != 0) {
      c.fail(offset_at, "tensor '{}': data offset {} is not a multiple of the alignment {}", info.name, info.offset,
             alignment_);
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment (when there are tensors).
  const uint64_t header_end = c.pos();
  data_offset_ = header_end;
  if (!tensors_.empty()) {
    const std::optional<uint64_t> padded = add(header_end, alignment_ - 1);
    if (!padded) c.fail(header_end, "the data section's start overflows");
    data_offset_ = *padded / alignment_ * alignment_;
    if (data_offset_ > size_)
      c.fail(header_end, "the data section would start at {}, past the end of the file ({} bytes)", data_offset_,
             size_);
  }
  const uint64_t data_size = size_ - data_offset_;
  std::vector<const TensorInfo*> by_offset;
  for (TensorInfo& info : tensors_) {
    const std::optional<uint64_t> end = add(info.offset, info.nbytes);
    if (!end || *end > data_size) {
      throw Error(
          fmt::format("GGUF file '{}': tensor '{}' ({} bytes at data offset {}) runs past the end of the file "
                      "(the data section holds {} bytes from offset {})",
                      name_, info.name, info.nbytes, info.offset, data_size, data_offset_));
    }
    info.data = bytes_ + data_offset_ + info.offset;
    by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    if (prev.offset + prev.nbytes > by_offset[i]->offset) {
      throw Error(
          fmt::format("GGUF file '{}': tensors '{}' and '{}' overlap (data offsets {} and {}, the first {} bytes)",
                      name_, prev.name, by_offset[i]->name, prev.offset, by_offset[i]->offset, prev.nbytes));
    }
  }
}

void File::release(const TensorInfo& t) const {
  if (mapping_ && t.nbytes > 0) drop_pages(t.data, t.nbytes);
}

void File::for_each_row_chunk(const TensorInfo& t, const std::function<void(int64_t, int64_t)>& fn,
                              uint64_t chunk_bytes) const {
  const int64_t rows = t.rows();
  if (rows == 0) return;
  LORA_CHECK(t.nbytes % static_cast<uint64_t>(rows) == 0,
             "GGUF file '{}': tensor '{}' holds {} bytes, not whole rows of its {} rows", name_, t.name, t.nbytes,
             rows);
  const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(rows);
  const int64_t per_chunk = static_cast<int64_t>(std::max<uint64_t>(1, chunk_bytes / std::max<uint64_t>(1, row_bytes)));
  for (int64_t begin = 0; begin < rows; begin += per_chunk) {
    const int64_t end = std::min(rows, begin + per_chunk);
    fn(begin, end);
    if (mapping_)
      drop_pages(t.data + static_cast<uint64_t>(begin) * row_bytes, static_cast<uint64_t>(end - begin) * row_bytes);
  }
  release(t);  // the pages the chunks shared
}

const Value* File::find(const std::string& key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::optional<std::string> File::get_string_or(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  LORA_CHECK(v->type == ValueType::STRING, "GGUF file '{}': '{}' must be a string, not {}", name_, key,
             value_type_name(v->type));
  return v->s;
}

std::string File::get_string(const std::string& key) const {
  auto s = get_string_or(key);
  LORA_CHECK(s.has_value(), "GGUF file '{}': the metadata key '{}' is missing", name_, key);
  return *s;
}

std::optional<uint64_t> File::get_uint_or(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  LORA_CHECK(v->is_integer(), "GGUF file '{}': '{}' must be an integer, not {}", name_, key, value_type_name(v->type));
  const bool is_signed =
      v->type == ValueType::I8 || v->type == ValueType::I16 || v->type == ValueType::I32 || v->type == ValueType::I64;
  if (is_signed) {
    LORA_CHECK(v->i >= 0, "GGUF file '{}': '{}' is {}, expected a non-negative integer", name_, key, v->i);
    return static_cast<uint64_t>(v->i);
  }
  return v->u;
}

uint64_t File::get_uint(const std::string& key) const {
  auto u = get_uint_or(key);
  LORA_CHECK(u.has_value(), "GGUF file '{}': the metadata key '{}' is missing", name_, key);
  return *u;
}

std::optional<double> File::get_float_or(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  LORA_CHECK(v->is_float(), "GGUF file '{}': '{}' must be a float, not {}", name_, key, value_type_name(v->type));
  return v->f;
}

double File::get_float(const std::string& key) const {
  auto f = get_float_or(key);
  LORA_CHECK(f.has_value(), "GGUF file '{}': the metadata key '{}' is missing", name_, key);
  return *f;
}

std::optional<bool> File::get_bool_or(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  LORA_CHECK(v->type == ValueType::BOOL, "GGUF file '{}': '{}' must be a bool, not {}", name_, key,
             value_type_name(v->type));
  return v->u != 0;
}

const Value& File::get_array(const std::string& key, ValueType element_type) const {
  const Value* v = find(key);
  LORA_CHECK(v != nullptr, "GGUF file '{}': the metadata key '{}' is missing", name_, key);
  LORA_CHECK(v->type == ValueType::ARRAY, "GGUF file '{}': '{}' must be an array, not {}", name_, key,
             value_type_name(v->type));
  LORA_CHECK(v->element_type == element_type, "GGUF file '{}': '{}' must be an array of {}, not of {}", name_, key,
             value_type_name(element_type), value_type_name(v->element_type));
  LORA_CHECK(v->skipped == 0,
             "GGUF file '{}': the array '{}' was not kept when the file was opened (open it with "
             "MetadataArrays::Keep to read it)",
             name_, key);
  return *v;
}

// ---------------------------------------------------------------------------------------------------
// Writing

namespace {

template <typename T>
void put(std::ostream& o, T v) {
  o.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

void put_string(std::ostream& o, const std::string& s) {
  put<uint64_t>(o, s.size());
  o.write(s.data(), static_cast<std::streamsize>(s.size()));
}

void put_scalar(std::ostream& o, const Value& v, ValueType t) {
  switch (t) {
    case ValueType::U8:
      put<uint8_t>(o, static_cast<uint8_t>(v.u));
      break;
    case ValueType::I8:
      put<int8_t>(o, static_cast<int8_t>(v.i));
      break;
    case ValueType::U16:
      put<uint16_t>(o, static_cast<uint16_t>(v.u));
      break;
    case ValueType::I16:
      put<int16_t>(o, static_cast<int16_t>(v.i));
      break;
    case ValueType::U32:
      put<uint32_t>(o, static_cast<uint32_t>(v.u));
      break;
    case ValueType::I32:
      put<int32_t>(o, static_cast<int32_t>(v.i));
      break;
    case ValueType::F32:
      put<float>(o, static_cast<float>(v.f));
      break;
    case ValueType::BOOL:
      put<uint8_t>(o, v.u ? 1 : 0);
      break;
    case ValueType::STRING:
      put_string(o, v.s);
      break;
    case ValueType::U64:
      put<uint64_t>(o, v.u);
      break;
    case ValueType::I64:
      put<int64_t>(o, v.i);
      break;
    case ValueType::F64:
      put<double>(o, v.f);
      break;
    case ValueType::ARRAY:
      LORA_FAIL("GGUF writer: arrays of arrays are not supported");
  }
}

uint64_t pad_to(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

}  // namespace

void Writer::set(const std::string& key, Value value) {
  LORA_CHECK(!key.empty(), "GGUF writer: an empty key");
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, std::vector<int64_t> ne, TensorType type, TensorWriter write) {
  for (const Pending& p : tensors_) LORA_CHECK(p.name != name, "GGUF writer: the tensor '{}' is added twice", name);
  const uint64_t nbytes = tensor_nbytes(type, ne);
  tensors_.push_back({name, std::move(ne), type, nbytes, std::move(write)});
}

void Writer::write_to(std::ostream& out) const {
  std::ostringstream o(std::ios::binary);  // the header, whose length decides the padding before the data
  uint32_t alignment = kDefaultAlignment;
  for (const auto& [k, v] : metadata_) {
    if (k == "general.alignment") alignment = static_cast<uint32_t>(v.u);
  }
  o.write("GGUF", 4);
  put<uint32_t>(o, 3);
  put<uint64_t>(o, tensors_.size());
  put<uint64_t>(o, metadata_.size());
  for (const auto& [key, v] : metadata_) {
    put_string(o, key);
    put<uint32_t>(o, static_cast<uint32_t>(v.type));
    if (v.type == ValueType::ARRAY) {
      put<uint32_t>(o, static_cast<uint32_t>(v.element_type));
      put<uint64_t>(o, v.array.size());
      for (const Value& e : v.array) put_scalar(o, e, v.element_type);
    } else {
      put_scalar(o, v, v.type);
    }
  }
  uint64_t offset = 0;
  for (const Pending& t : tensors_) {
    put_string(o, t.name);
    put<uint32_t>(o, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<int64_t>(o, d);
    put<uint32_t>(o, static_cast<uint32_t>(t.type));
    put<uint64_t>(o, offset);
    offset = pad_to(offset + t.nbytes, alignment);
  }
  const std::string header = o.str();
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  const std::string zeros(alignment, '\0');
  auto pad = [&](uint64_t written) {
    out.write(zeros.data(), static_cast<std::streamsize>(pad_to(written, alignment) - written));
  };
  pad(header.size());
  std::string buffer;
  for (const Pending& t : tensors_) {
    buffer.clear();
    t.write(buffer);
    LORA_CHECK(buffer.size() == t.nbytes, "GGUF writer: tensor '{}' produced {} bytes, expected {}", t.name,
               buffer.size(), t.nbytes);
    out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    pad(t.nbytes);
  }
}

void Writer::write(const std::string& path) const {
  write_file_atomically(path, [&](std::ostream& o) { write_to(o); });
}

std::string Writer::to_bytes() const {
  std::ostringstream o(std::ios::binary);
  write_to(o);
  return o.str();
}

}  // namespace lora::gguf
