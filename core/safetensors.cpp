// safetensors: the memory-mapped reader with its dtype conversions, and the writer.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <system_error>
#include <unordered_set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/half.h"
#include "core/safetensors_format.h"

namespace lora {

// Element bytes are copied between the file and memory as they are: both must be little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using json = nlohmann::json;
using safetensors_format::fail;
using safetensors_format::FileDType;
using safetensors_format::Kind;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

constexpr bool is_float_dtype(DType d) {
  return d == DType::F32 || d == DType::F64 || d == DType::F16 || d == DType::BF16;
}

// ---------------------------------------------------------------------------------------------------
// Conversions for load()

template <typename T>
T read_le(const std::byte* p) {  // data in the mapping may be unaligned for T
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Calls f(decode) where decode(const std::byte*) -> double reads one element of a floating file dtype.
template <typename F>
void visit_float_decoder(std::string_view name, F&& f) {
  if (name == "F64")
    f([](const std::byte* p) { return read_le<double>(p); });
  else if (name == "F32")
    f([](const std::byte* p) { return double{read_le<float>(p)}; });
  else if (name == "F16")
    f([](const std::byte* p) { return double{half_to_float(read_le<uint16_t>(p))}; });
  else if (name == "BF16")
    f([](const std::byte* p) { return double{bfloat16_to_float(read_le<uint16_t>(p))}; });
}

// Calls f(decode) where decode(const std::byte*) -> int64_t reads one element of an integer file dtype.
template <typename F>
void visit_int_decoder(std::string_view name, const std::string& path, const std::string& tensor, F&& f) {
  if (name == "I64")
    f([](const std::byte* p) { return read_le<int64_t>(p); });
  else if (name == "I32")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<int32_t>(p)); });
  else if (name == "I16")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<int16_t>(p)); });
  else if (name == "I8")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<int8_t>(p)); });
  else if (name == "U32")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<uint32_t>(p)); });
  else if (name == "U16")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<uint16_t>(p)); });
  else if (name == "U8")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<uint8_t>(p)); });
  else if (name == "BOOL")
    f([](const std::byte* p) { return static_cast<int64_t>(read_le<uint8_t>(p) != 0); });
  else if (name == "U64") {
    f([&](const std::byte* p) {
      const auto v = read_le<uint64_t>(p);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(path, "tensor '{}': value {} does not fit in int64", tensor, v);
      return static_cast<int64_t>(v);
    });
  }
}

// The available names closest to `name` (longest common suffix first, then file order), for error messages:
// asking for "wte.weight" in a file that stores "transformer.wte.weight" then shows the right one.
std::string closest_names(const std::vector<TensorInfo>& tensors, const std::string& name) {
  auto common_suffix = [&](const std::string& s) {
    size_t n = 0;
    while (n < s.size() && n < name.size() && s[s.size() - 1 - n] == name[name.size() - 1 - n]) ++n;
    return n;
  };
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::vector<size_t> score(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) score[i] = common_suffix(tensors[i].name);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
  std::string shown;
  for (size_t i = 0; i < std::min<size_t>(order.size(), 5); ++i) {
    shown += (i ? ", '" : "'") + tensors[order[i]].name + "'";
  }
  return shown + (tensors.size() > 5 ? ", ..." : "");
}

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
  }
  LORA_FAIL("safetensors: dtype {} has no safetensors name", static_cast<int>(dtype));
}

// ---------------------------------------------------------------------------------------------------
// SafeTensorsFile

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: {}", errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, "cannot stat: {}", errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, "the file is {} bytes long, too short for the 8-byte header length", size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) fail(path, "cannot map {} bytes: {}", size, errno_text(map_errno));

  SafeTensorsFile file;  // from here on its destructor unmaps, also when validation throws
  file.path_ = path;
  file.map_ = map;
  file.map_size_ = size;
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(static_cast<const uint8_t*>(map)[i]) << (8 * i);
  if (header_size > safetensors_format::kMaxHeaderBytes) {
    fail(path, "the header length {} is absurdly large (the limit is {} bytes); this is not a safetensors file",
         header_size, safetensors_format::kMaxHeaderBytes);
  }
  if (header_size > size - 8) {
    fail(path, "the header length {} runs past the end of the file ({} bytes after the length field)", header_size,
         size - 8);
  }
  const auto* bytes = static_cast<const std::byte*>(map);
  const uint64_t data_size = size - 8 - header_size;
  safetensors_format::Header header = safetensors_format::parse_header(
      path, std::string_view(reinterpret_cast<const char*>(bytes + 8), header_size), data_size);
  file.data_ = bytes + 8 + header_size;
  file.data_size_ = data_size;
  file.tensors_ = std::move(header.tensors);
  file.metadata_ = std::move(header.metadata);
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_.emplace(file.tensors_[i].name, i);
  return file;
}

SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&& other) noexcept {
  *this = std::move(other);
}

SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    data_ = std::exchange(other.data_, nullptr);
    data_size_ = std::exchange(other.data_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
    other.tensors_.clear();
    other.index_.clear();
    other.metadata_.clear();
  }
  return *this;
}

SafeTensorsFile::~SafeTensorsFile() {
  release();
}

void SafeTensorsFile::release() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
  data_ = nullptr;
  data_size_ = 0;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) out.push_back(t.name);
  return out;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it != index_.end()) return tensors_[it->second];
  if (tensors_.empty()) fail(path_, "no tensor named '{}' (the file holds no tensors)", name);
  fail(path_, "no tensor named '{}' (the file holds {} tensors; the closest names: {})", name, tensors_.size(),
       closest_names(tensors_, name));
}

std::span<const std::byte> SafeTensorsFile::raw(const std::string& name) const {
  const TensorInfo& t = info(name);
  return {data_ + t.begin, static_cast<size_t>(t.nbytes())};
}

namespace {

// Runs convert(i0, i1) over elements [0, n) of `elem_size` bytes at `src` (inside the read-only mapping), 4 MiB of
// the file at a time, and drops each chunk's whole pages from the process once converted: a large tensor read
// from the mapping is then never resident twice (its file pages and its copy), only its copy and one chunk.
// The pages stay in the page cache; touching them again reads them back.
template <typename Convert>
void for_each_chunk(const std::byte* src, int64_t n, size_t elem_size, Convert convert) {
  constexpr size_t kChunkBytes = size_t{4} << 20;
  const int64_t per_chunk = static_cast<int64_t>(std::max<size_t>(kChunkBytes / elem_size, 1));
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // Whole pages only: the first and last may hold another tensor's bytes.
  uintptr_t dropped = (reinterpret_cast<uintptr_t>(src) + page - 1) / page * page;
  for (int64_t i0 = 0; i0 < n; i0 += per_chunk) {
    const int64_t i1 = std::min(n, i0 + per_chunk);
    convert(i0, i1);
    const auto end = reinterpret_cast<uintptr_t>(src + i1 * elem_size) / page * page;
    if (end > dropped) {
      ::madvise(reinterpret_cast<void*>(dropped), end - dropped, MADV_DONTNEED);
      dropped = end;
    }
  }
}

}  // namespace

void SafeTensorsFile::copy_raw(const std::string& name, void* out) const {
  const TensorInfo& t = info(name);
  const std::byte* p = data_ + t.begin;
  for_each_chunk(p, static_cast<int64_t>(t.nbytes()), 1, [&](int64_t i0, int64_t i1) {
    std::memcpy(static_cast<std::byte*>(out) + i0, p + i0, static_cast<size_t>(i1 - i0));
  });
}

Tensor SafeTensorsFile::load(const std::string& name, DType to, Device device, MemoryCategory category) const {
  const TensorInfo& t = info(name);
  const FileDType& src = *safetensors_format::find_dtype(t.dtype_name);
  const bool src_float = src.kind == Kind::Float;
  const bool src_int = src.kind == Kind::Signed || src.kind == Kind::Unsigned || src.kind == Kind::Bool;
  if (src.kind == Kind::Float8) {
    fail(path_, "tensor '{}' holds {}, which load() cannot convert; read its bytes with raw()", name, t.dtype_name);
  }
  if (src_float && !is_float_dtype(to)) {
    fail(path_,
         "tensor '{}' holds floating-point {}; converting it to {} would truncate "
         "(load it as float32, float64, float16 or bfloat16)",
         name, t.dtype_name, dtype_name(to));
  }
  if (src_int && !is_integer(to)) {
    fail(path_, "tensor '{}' holds integer {}; load it as int64 or int32, not {}", name, t.dtype_name, dtype_name(to));
  }

  // For another device the host copy is only staging: charge it to Workspace, not to `category`.
  Tensor host = Tensor::empty(t.shape, to, Device::cpu(), device.is_cpu() ? category : MemoryCategory::Workspace);
  const int64_t n = t.shape.numel();
  const std::byte* p = data_ + t.begin;
  if (n == 0) {
    // nothing to copy (and the zero-byte storage may have no pointer to copy to)
  } else if (src.dtype == to) {
    for_each_chunk(p, n, src.size, [&](int64_t i0, int64_t i1) {
      std::memcpy(static_cast<std::byte*>(host.raw_data()) + i0 * src.size, p + i0 * src.size,
                  static_cast<size_t>(i1 - i0) * src.size);
    });
  } else if (src_float) {
    visit_float_decoder(src.name, [&](auto decode) {
      auto fill = [&](auto* out, auto encode) {
        for_each_chunk(p, n, src.size, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) out[i] = encode(decode(p + i * src.size));
        });
      };
      void* dst = host.raw_data();
      switch (to) {
        case DType::F32:
          fill(static_cast<float*>(dst), [](double v) { return static_cast<float>(v); });
          break;
        case DType::F64:
          fill(static_cast<double*>(dst), [](double v) { return v; });
          break;
        case DType::F16:
          fill(static_cast<uint16_t*>(dst), [](double v) { return float_to_half(static_cast<float>(v)); });
          break;
        case DType::BF16:
          fill(static_cast<uint16_t*>(dst), [](double v) { return float_to_bfloat16(static_cast<float>(v)); });
          break;
        default:
          break;  // excluded above
      }
    });
  } else {
    visit_int_decoder(src.name, path_, name, [&](auto decode) {
      if (to == DType::I64) {
        auto* out = static_cast<int64_t*>(host.raw_data());
        for (int64_t i = 0; i < n; ++i) out[i] = decode(p + i * src.size);
        return;
      }
      auto* out = static_cast<int32_t*>(host.raw_data());
      for (int64_t i = 0; i < n; ++i) {
        const int64_t v = decode(p + i * src.size);
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
          fail(path_, "tensor '{}': element {} (value {}) does not fit in int32; load it as int64", name, i, v);
        }
        out[i] = static_cast<int32_t>(v);
      }
    });
  }
  if (device.is_cpu()) return host;
  Tensor out = Tensor::empty(t.shape, to, device, category);
  out.copy_from(host);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Writing

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafeTensorsRecord> records;
  records.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    LORA_CHECK(tensor.defined(), "save_safetensors '{}': tensor '{}' is undefined", path, name);
    records.push_back({name, tensor, std::string(safetensors_dtype_name(tensor.dtype())), tensor.shape()});
  }
  save_safetensors_records(path, records, metadata);
}

void save_safetensors_records(const std::string& path, const std::vector<SafeTensorsRecord>& records,
                              const std::map<std::string, std::string>& metadata) {
  // Build and check the whole header before the file system is touched. It is assembled by hand rather
  // than as one json object because nlohmann::json would sort the names; the data follows the given order.
  std::string header = "{";
  std::vector<uint64_t> sizes;
  try {
    auto append = [&](const std::string& key, const json& value) {
      if (header.size() > 1) header += ',';
      header += json(key).dump();
      header += ':';
      header += value.dump();
    };
    if (!metadata.empty()) append("__metadata__", json(metadata));
    std::unordered_set<std::string> seen;
    uint64_t offset = 0;
    for (const SafeTensorsRecord& r : records) {
      LORA_CHECK(!r.name.empty(), "save_safetensors '{}': a tensor has an empty name", path);
      LORA_CHECK(r.name != "__metadata__", "save_safetensors '{}': the name '__metadata__' is reserved", path);
      LORA_CHECK(seen.insert(r.name).second, "save_safetensors '{}': duplicate tensor name '{}'", path, r.name);
      LORA_CHECK(r.tensor.defined(), "save_safetensors '{}': tensor '{}' is undefined", path, r.name);
      const safetensors_format::FileDType* dtype = safetensors_format::find_dtype(r.dtype_name);
      LORA_CHECK(dtype != nullptr, "save_safetensors '{}': tensor '{}': '{}' is not a safetensors dtype", path, r.name,
                 r.dtype_name);
      const uint64_t bytes = static_cast<uint64_t>(r.shape.numel()) * dtype->size;
      LORA_CHECK(bytes <= r.tensor.nbytes(),
                 "save_safetensors '{}': tensor '{}' as {} {} needs {} bytes; the tensor holds {}", path, r.name,
                 r.dtype_name, r.shape.str(), bytes, r.tensor.nbytes());
      append(r.name, json{{"dtype", r.dtype_name},
                          {"shape", r.shape.dims()},
                          {"data_offsets", json::array({offset, offset + bytes})}});
      sizes.push_back(bytes);
      offset += bytes;
    }
  } catch (const json::exception& e) {  // dump() rejects strings that are not valid UTF-8
    LORA_FAIL("save_safetensors '{}': a tensor name or metadata string is not valid UTF-8 ({})", path, e.what());
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');  // pad so that the data section starts 8-byte aligned

  write_file_atomically(path, [&](std::ostream& out) {
    char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    out.write(length, 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (size_t i = 0; i < records.size(); ++i) {
      if (sizes[i] == 0) continue;
      // One tensor at a time on the host; a staging copy is Workspace, whatever the tensor's category.
      const Tensor& tensor = records[i].tensor;
      Tensor host = tensor;
      if (!tensor.device().is_cpu()) {
        host = Tensor::empty(tensor.shape(), tensor.dtype(), Device::cpu(), MemoryCategory::Workspace);
        host.copy_from(tensor);
      }
      out.write(static_cast<const char*>(host.raw_data()), static_cast<std::streamsize>(sizes[i]));
    }
  });
}

}  // namespace lora
