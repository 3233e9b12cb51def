// Tensor: a dense row-major array (shape, dtype, device) over refcounted Storage with a byte offset.
// Copying a Tensor copies a handle; the data is shared. Autograd state (requires_grad, .grad) lives here
// too, but the differentiable ops that record onto the tape are in autograd/.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/random.h"
#include "core/shape.h"
#include "core/storage.h"

namespace lora {

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- Factories. Memory is charged to MemoryCategoryGuard::current() unless a category is given; the
  // device is default_device() (the CPU unless a DefaultDeviceGuard says otherwise) unless one is given.
  // from_vector takes host data and defaults to the CPU. On the
  // meta device they make the tensor (charged with its byte size) and write no values.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
  static Tensor empty(const Shape& shape, DType dtype, Device device, MemoryCategory category);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = default_device());
  static Tensor arange(int64_t n, DType dtype = DType::F32, Device device = default_device());
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
  // Normal(mean, std) and Uniform[low, high) from a seeded generator (drawn on the CPU, in double).
  static Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0, DType dtype = DType::F32,
                      Device device = default_device());
  static Tensor uniform(const Shape& shape, Generator& gen, double low = 0.0, double high = 1.0,
                        DType dtype = DType::F32, Device device = default_device());

  // ---- Properties
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int rank() const { return shape().rank(); }
  int64_t size(int axis) const { return shape()[axis]; }
  int64_t numel() const { return shape().numel(); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // Typed pointer to the first element (checks the dtype). On CUDA this is a device pointer; on the meta
  // device there is no data, and asking for it is a lora::Error.
  template <typename T>
  T* data() const;
  void* raw_data() const;

  // ---- Views and copies (not recorded on the tape; autograd/ops has the differentiable reshape).
  // Same storage, new shape with the same numel; one dimension may be -1 (inferred).
  Tensor view(Shape shape) const;
  // Rows [start, start + length) along axis 0, sharing storage.
  Tensor narrow_rows(int64_t start, int64_t length) const;
  Tensor clone() const;               // a contiguous copy on the same device, charged to the current category
  Tensor to(Device device) const;     // a copy on another device (or *this if already there)
                                      // (to the meta device: no data moves; from it: a lora::Error)
  Tensor to(DType dtype) const;       // a converted copy (CPU); float <-> double <-> int
  Tensor detach() const;              // same data, no autograd history, requires_grad false
  void copy_from(const Tensor& src);  // copies data of equal shape and dtype (any devices; into meta:
                                      // nothing to do; out of meta: a lora::Error)
  void zero_();                       // sets every element to 0

  // ---- Element access for tests and small programs (copies through the host when on a device; a meta tensor
  // has no elements to read: lora::Error)
  double item() const;  // the only element of a one-element tensor
  double at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, double value);
  template <typename T>
  std::vector<T> to_vector() const;  // all elements, converted to T

  // ---- Autograd state
  bool requires_grad() const;
  Tensor& set_requires_grad(bool enabled = true);
  // The accumulated gradient of a leaf; undefined until backward reaches it (or after zero_grad).
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  bool is_leaf() const;
  const std::string& name() const;
  Tensor& set_name(std::string name);

  std::string str(int max_elements = 8) const;  // "Tensor[2, 3] float32 cpu [0.1, ...]"

 private:
  // Throws lora::Error: this tensor is on the meta device and has no data, which `doing` needed.
  [[noreturn]] void throw_no_data(const char* doing) const;

  std::shared_ptr<TensorImpl> impl_;
};

// What a Tensor handle points to. Ops read it directly; users go through Tensor.
struct TensorImpl {
  Shape shape;
  DType dtype = DType::F32;
  std::shared_ptr<Storage> storage;
  size_t offset_bytes = 0;

  // Autograd: a leaf is a tensor not produced by a recorded op. `id` identifies the tensor on the tape
  // without keeping its data alive.
  uint64_t id = 0;
  bool requires_grad = false;
  bool is_leaf = true;
  Tensor grad;
  std::string name;

  static uint64_t next_id();
};

// A shape mismatch error naming the op and both shapes.
[[noreturn]] void throw_shape_mismatch(const char* op, const Shape& a, const Shape& b);

// ---- inline/template definitions -------------------------------------------------------------------

template <typename T>
T* Tensor::data() const {
  LORA_CHECK(defined(), "data(): the tensor is undefined");
  LORA_CHECK(dtype_of<T>() == dtype(), "data<{}>(): tensor{} holds {}", dtype_name(dtype_of<T>()),
             name().empty() ? "" : " '" + name() + "'", dtype_name(dtype()));
  return reinterpret_cast<T*>(raw_data());
}

}  // namespace lora

template <>
struct fmt::formatter<lora::Tensor> : fmt::formatter<std::string> {
  template <typename Ctx>
  auto format(const lora::Tensor& t, Ctx& ctx) const {
    return fmt::formatter<std::string>::format(t.str(), ctx);
  }
};
template <>
struct fmt::formatter<lora::Shape> : fmt::formatter<std::string> {
  template <typename Ctx>
  auto format(const lora::Shape& s, Ctx& ctx) const {
    return fmt::formatter<std::string>::format(s.str(), ctx);
  }
};
