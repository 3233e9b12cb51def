// safetensors I/O: SafeTensorsFile (a validated, memory-mapped reader) and save_safetensors (an atomic writer).
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N bytes of
// UTF-8 JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the data section) plus an optional "__metadata__" {string: string}, padded with spaces, then the data
// section: every tensor's bytes, little-endian, row-major, with no gaps or overlaps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/memory.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace lora {

// One tensor entry of a safetensors header.
struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the file: "F32", "BF16", "U8", ...
  std::optional<DType> dtype;  // the lora DType of the same encoding; empty for file dtypes lora has no
                               // type for (BOOL, U8, I8, I16, U16, U32, U64, F8_E4M3, F8_E5M2)
  Shape shape;
  uint64_t begin = 0;  // byte range [begin, end) relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

// A safetensors file, mapped read-only and validated once in open(): after that every tensor's byte range
// lies inside the mapping and matches its shape and dtype. Move-only; unmaps in the destructor. (If another
// process truncates the file while it is mapped, reads fault with SIGBUS: that is what mmap means.)
class SafeTensorsFile {
 public:
  // Maps and validates `path`; throws lora::Error naming the file and what is wrong with it.
  static SafeTensorsFile open(const std::string& path);

  SafeTensorsFile(SafeTensorsFile&& other) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&& other) noexcept;
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;
  ~SafeTensorsFile();

  const std::string& path() const { return path_; }
  size_t size() const { return tensors_.size(); }                      // number of tensors
  std::vector<std::string> names() const;                              // in the header's order
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in the header's order
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // The entry of `name`; throws lora::Error listing the closest available names when it is absent.
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A copy of tensor `name` as dtype `to` on `device`, charged to `category`. The tensor's pages of the
  // mapping are dropped from the process as they are copied (4 MiB at a time), so that reading a model
  // tensor by tensor never holds a large one twice.
  //   floating file dtypes (F64, F32, F16, BF16) -> any floating `to` (F32, F64, F16, BF16);
  //   integer file dtypes (I64, I32, I16, I8, U64, U32, U16, U8, BOOL) -> I32 or I64 (throws if a value
  //   does not fit). Float -> integer and integer -> float throw: they are almost always a mistake
  //   (token ids loaded with the default F32), so the caller asks for the type the file holds.
  // F64 -> F16/BF16 rounds through F32.
  Tensor load(const std::string& name, DType to = DType::F32, Device device = Device::cpu(),
              MemoryCategory category = MemoryCategoryGuard::current()) const;

  // Copies tensor `name`'s bytes as the file stores them (info(name).nbytes() of them) to `out`, dropping its
  // pages of the mapping as load() does: for encodings load() does not convert (packed quantized blocks).
  void copy_raw(const std::string& name, void* out) const;

  // The tensor's bytes inside the mapping, valid while this object lives (zero-copy). Little-endian and
  // row-major, but not necessarily aligned for the element type: read elements with memcpy.
  std::span<const std::byte> raw(const std::string& name) const;

 private:
  SafeTensorsFile() = default;
  void release();

  std::string path_;
  void* map_ = nullptr;  // the whole file
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // the data section, inside the mapping
  size_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// One entry of a file being written: `tensor`'s bytes under a file dtype and shape of the caller's choice, for
// encodings lora has no DType for (packed quantized blocks are held in int32 tensors and written as "U8"). The
// entry is the first shape x dtype bytes of the tensor, which must hold at least that many.
struct SafeTensorsRecord {
  std::string name;
  Tensor tensor;
  std::string dtype_name;  // a safetensors dtype: "U8", "I8", "F32", ...
  Shape shape;
};
// Writes `records` as save_safetensors below writes tensors (the same checks, order and atomic write).
void save_safetensors_records(const std::string& path, const std::vector<SafeTensorsRecord>& records,
                              const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` (any dtype, any device: copied to the host one at a time) in the order given, with
// contiguous data offsets and the header padded to a multiple of 8 bytes, through write_file_atomically.
// Names must be unique, non-empty and not "__metadata__"; everything is checked before the file is touched.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// The same, in the map's (sorted) name order. (A template only so that a braced list such as
// save_safetensors(path, {{"w", w}}) is not ambiguous: it goes to the overload above.)
template <typename Compare, typename Alloc>
void save_safetensors(const std::string& path, const std::map<std::string, Tensor, Compare, Alloc>& tensors,
                      const std::map<std::string, std::string>& metadata = {}) {
  save_safetensors(path, std::vector<std::pair<std::string, Tensor>>(tensors.begin(), tensors.end()), metadata);
}

// The safetensors name of a dtype: "F32", "F64", "I32", "I64", "F16", "BF16".
std::string_view safetensors_dtype_name(DType dtype);

}  // namespace lora
