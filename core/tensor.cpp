// Tensor: factories, views, copies, element access and printing.
#include "core/tensor.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <limits>

#include "core/allocator.h"

namespace lora {

uint64_t TensorImpl::next_id() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

void Tensor::throw_no_data(const char* doing) const {
  LORA_FAIL("tensor{} of shape {} is on the meta device and has no data ({})",
            name().empty() ? "" : " '" + name() + "'", shape().str(), doing);
}

void throw_shape_mismatch(const char* op, const Shape& a, const Shape& b) {
  LORA_FAIL("{}: shape mismatch between {} and {}", op, a.str(), b.str());
}

Device Device::parse(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "meta") return Device::meta();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string index = text.substr(5);
    int value = -1;
    const auto [end, error] = std::from_chars(index.data(), index.data() + index.size(), value);
    LORA_CHECK(!index.empty() && error == std::errc() && end == index.data() + index.size() && value >= 0,
               "device '{}': expected cpu, cuda, cuda:N (N a GPU index, 0 to {}) or meta", text,
               std::numeric_limits<int>::max());
    return Device::cuda(value);
  }
  LORA_FAIL("device '{}': expected cpu, cuda, cuda:N or meta", text);
}

namespace {

// Visits a host buffer of `dtype` element by element as double (for conversions and printing).
template <typename F>
void for_each_as_double(const void* data, DType dtype, int64_t n, F&& f) {
  switch (dtype) {
    case DType::F32:
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<double>(static_cast<const float*>(data)[i]));
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<const double*>(data)[i]);
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<double>(static_cast<const int32_t*>(data)[i]));
      break;
    case DType::I64:
      for (int64_t i = 0; i < n; ++i) f(i, static_cast<double>(static_cast<const int64_t*>(data)[i]));
      break;
    default:
      LORA_FAIL("dtype {} has no element access on the host", dtype_name(dtype));
  }
}

void store_double(void* data, DType dtype, int64_t i, double v) {
  switch (dtype) {
    case DType::F32:
      static_cast<float*>(data)[i] = static_cast<float>(v);
      break;
    case DType::F64:
      static_cast<double*>(data)[i] = v;
      break;
    case DType::I32:
      static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v);
      break;
    case DType::I64:
      static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v);
      break;
    default:
      LORA_FAIL("dtype {} has no element access on the host", dtype_name(dtype));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Factories

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, MemoryCategory category) {
  for (int64_t d : shape.dims())
    LORA_CHECK(d >= 0, "cannot create a tensor of shape {}: negative dimension", shape.str());
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device, category);
  impl->id = TensorImpl::next_id();
  return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, device, MemoryCategoryGuard::current());
}

// The meta device holds no data: its factories make the tensor (charged to the tracker) and write nothing.

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

// Values are written on the host, then copied: initialisation is not a hot path.
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  if (device.is_meta()) return empty(shape, dtype, device);
  Tensor host = empty(shape, dtype, Device::cpu());
  void* p = host.raw_data();
  for (int64_t i = 0; i < host.numel(); ++i) store_double(p, dtype, i, value);
  return host.to(device);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  if (device.is_meta()) return empty({n}, dtype, device);
  Tensor host = empty({n}, dtype, Device::cpu());
  void* p = host.raw_data();
  for (int64_t i = 0; i < n; ++i) store_double(p, dtype, i, static_cast<double>(i));
  return host.to(device);
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  LORA_CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
             "from_vector: {} values do not fill shape {} ({} elements)", values.size(), shape.str(), shape.numel());
  if (device.is_meta()) return empty(shape, dtype_of<T>(), device);
  Tensor host = empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);

namespace {

// Fills `n` values of `dtype` from per-chunk generators seeded from one draw of `gen`, so the result does
// not depend on the thread count, and large initialisations (GPT-2's 124M weights) run in parallel.
template <typename Draw>
void fill_random(void* data, DType dtype, int64_t n, Generator& gen, Draw draw) {
  constexpr int64_t kChunk = 1 << 16;
  const uint64_t base = gen.next_u64();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    Generator local(splitmix64(base ^ static_cast<uint64_t>(c)));
    const int64_t end = std::min(n, (c + 1) * kChunk);
    if (dtype == DType::F32) {
      float* p = static_cast<float*>(data);
      for (int64_t i = c * kChunk; i < end; ++i) p[i] = static_cast<float>(draw(local));
    } else {
      for (int64_t i = c * kChunk; i < end; ++i) store_double(data, dtype, i, draw(local));
    }
  }
}

}  // namespace

Tensor Tensor::randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype, Device device) {
  if (device.is_meta()) return empty(shape, dtype, device);
  Tensor host = empty(shape, dtype, Device::cpu());
  fill_random(host.raw_data(), dtype, host.numel(), gen, [=](Generator& g) { return mean + std * g.normal(); });
  return host.to(device);
}

Tensor Tensor::uniform(const Shape& shape, Generator& gen, double low, double high, DType dtype, Device device) {
  if (device.is_meta()) return empty(shape, dtype, device);
  Tensor host = empty(shape, dtype, Device::cpu());
  fill_random(host.raw_data(), dtype, host.numel(), gen,
              [=](Generator& g) { return low + (high - low) * g.uniform(); });
  return host.to(device);
}

// ---------------------------------------------------------------------------------------------------
// Properties

const Shape& Tensor::shape() const {
  LORA_CHECK(defined(), "shape(): the tensor is undefined");
  return impl_->shape;
}
DType Tensor::dtype() const {
  LORA_CHECK(defined(), "dtype(): the tensor is undefined");
  return impl_->dtype;
}
Device Tensor::device() const {
  LORA_CHECK(defined(), "device(): the tensor is undefined");
  return impl_->storage->device();
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  LORA_CHECK(defined(), "storage(): the tensor is undefined");
  return impl_->storage;
}
void* Tensor::raw_data() const {
  LORA_CHECK(defined(), "raw_data(): the tensor is undefined");
  if (impl_->storage->device().is_meta()) throw_no_data("reading its data");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset_bytes;
}

// ---------------------------------------------------------------------------------------------------
// Views and copies

Tensor Tensor::view(Shape shape) const {
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape.dims()[i] == -1) {
      LORA_CHECK(infer < 0, "view: shape {} has more than one -1", shape.str());
      infer = i;
    } else {
      known *= shape.dims()[i];
    }
  }
  if (infer >= 0) {
    LORA_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in {} for {} elements", shape.str(), numel());
    shape[infer] = numel() / known;
  }
  LORA_CHECK(shape.numel() == numel(), "view: shape {} ({} elements) does not match tensor shape {} ({} elements)",
             shape.str(), shape.numel(), this->shape().str(), numel());
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = std::move(shape);
  impl->id = TensorImpl::next_id();
  impl->requires_grad = false;
  impl->is_leaf = true;
  impl->grad = Tensor();
  return Tensor(std::move(impl));
}

Tensor Tensor::narrow_rows(int64_t start, int64_t length) const {
  LORA_CHECK(rank() >= 1, "narrow_rows: the tensor has rank 0");
  LORA_CHECK(start >= 0 && length >= 0 && start + length <= size(0),
             "narrow_rows: rows [{}, {}) are out of range for shape {}", start, start + length, shape().str());
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape[0] = length;
  impl->offset_bytes += static_cast<size_t>(start * shape().inner(0)) * dtype_size(dtype());
  impl->id = TensorImpl::next_id();
  impl->requires_grad = false;
  impl->is_leaf = true;
  impl->grad = Tensor();
  return Tensor(std::move(impl));
}

void Tensor::copy_from(const Tensor& src) {
  LORA_CHECK(src.shape() == shape(), "copy_from: source shape {} does not match destination shape {}",
             src.shape().str(), shape().str());
  LORA_CHECK(src.dtype() == dtype(), "copy_from: source dtype {} does not match destination dtype {}",
             dtype_name(src.dtype()), dtype_name(dtype()));
  const size_t bytes = nbytes();
  const Device from = src.device(), to = device();
  if (to.is_meta()) return;  // nothing to copy into
  if (from.is_meta()) src.throw_no_data(fmt::format("copying it to {}", to.str()).c_str());
  if (from.is_cpu() && to.is_cpu()) {
    allocator_for(to).copy_within(raw_data(), src.raw_data(), bytes, to);
  } else if (from.is_cpu()) {
    allocator_for(to).copy_from_host(raw_data(), src.raw_data(), bytes, to);
  } else if (to.is_cpu()) {
    allocator_for(from).copy_to_host(raw_data(), src.raw_data(), bytes, from);
  } else if (from == to) {
    allocator_for(to).copy_within(raw_data(), src.raw_data(), bytes, to);
  } else {
    Tensor staging = src.to(Device::cpu());
    copy_from(staging);
  }
}

void Tensor::zero_() {
  if (device().is_meta()) return;
  allocator_for(device()).set_zero(raw_data(), nbytes(), device());
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device, storage()->category());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  if (device().is_meta()) return empty(shape(), dtype, device());
  Tensor host = this->to(Device::cpu());
  Tensor out = empty(shape(), dtype, Device::cpu());
  void* dst = out.raw_data();
  for_each_as_double(host.raw_data(), host.dtype(), numel(),
                     [&](int64_t i, double v) { store_double(dst, dtype, i, v); });
  return out.to(device());
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->id = TensorImpl::next_id();
  impl->requires_grad = false;
  impl->is_leaf = true;
  impl->grad = Tensor();
  return Tensor(std::move(impl));
}

// ---------------------------------------------------------------------------------------------------
// Element access

namespace {
int64_t flat_index(const Shape& shape, std::initializer_list<int64_t> index) {
  LORA_CHECK(static_cast<int>(index.size()) == shape.rank(), "element access: {} indices for a tensor of shape {}",
             index.size(), shape.str());
  int64_t flat = 0;
  int axis = 0;
  for (int64_t i : index) {
    const int64_t d = shape.dims()[axis];
    LORA_CHECK(i >= 0 && i < d, "element access: index {} is out of range for axis {} of shape {}", i, axis,
               shape.str());
    flat = flat * d + i;
    ++axis;
  }
  return flat;
}
}  // namespace

double Tensor::item() const {
  LORA_CHECK(numel() == 1, "item(): the tensor has shape {}, expected exactly one element", shape().str());
  return to_vector<double>()[0];
}

double Tensor::at(std::initializer_list<int64_t> index) const {
  const int64_t flat = flat_index(shape(), index);
  Tensor one = Tensor(impl_).view({numel()}).narrow_rows(flat, 1).to(Device::cpu());
  double v = 0;
  for_each_as_double(one.raw_data(), dtype(), 1, [&](int64_t, double x) { v = x; });
  return v;
}

void Tensor::set(std::initializer_list<int64_t> index, double value) {
  const int64_t flat = flat_index(shape(), index);
  Tensor host = empty({1}, dtype(), Device::cpu());
  store_double(host.raw_data(), dtype(), 0, value);
  Tensor(impl_).view({numel()}).narrow_rows(flat, 1).copy_from(host);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::cpu());
  std::vector<T> out(static_cast<size_t>(numel()));
  for_each_as_double(host.raw_data(), dtype(), numel(), [&](int64_t i, double v) { out[i] = static_cast<T>(v); });
  return out;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;

// ---------------------------------------------------------------------------------------------------
// Autograd state

bool Tensor::requires_grad() const {
  return defined() && impl_->requires_grad;
}
Tensor& Tensor::set_requires_grad(bool enabled) {
  LORA_CHECK(defined(), "set_requires_grad: the tensor is undefined");
  LORA_CHECK(!enabled || is_floating(dtype()), "set_requires_grad: tensor{} of dtype {} cannot require a gradient",
             name().empty() ? "" : " '" + name() + "'", dtype_name(dtype()));
  impl_->requires_grad = enabled;
  return *this;
}
Tensor Tensor::grad() const {
  return defined() ? impl_->grad : Tensor();
}
void Tensor::set_grad(const Tensor& grad) {
  LORA_CHECK(defined(), "set_grad: the tensor is undefined");
  if (grad.defined()) {
    LORA_CHECK(grad.shape() == shape(), "set_grad: gradient shape {} does not match tensor shape {}",
               grad.shape().str(), shape().str());
  }
  impl_->grad = grad;
}
bool Tensor::is_leaf() const {
  return !defined() || impl_->is_leaf;
}
const std::string& Tensor::name() const {
  static const std::string empty_name;
  return defined() ? impl_->name : empty_name;
}
Tensor& Tensor::set_name(std::string name) {
  LORA_CHECK(defined(), "set_name: the tensor is undefined");
  impl_->name = std::move(name);
  return *this;
}

std::string Tensor::str(int max_elements) const {
  if (!defined()) return "Tensor(undefined)";
  std::string s = fmt::format("Tensor{} {} {}", shape().str(), dtype_name(dtype()), device().str());
  if (dtype() == DType::F16 || dtype() == DType::BF16 || device().is_meta()) return s;
  Tensor host = to(Device::cpu());
  const int64_t n = std::min<int64_t>(numel(), max_elements);
  s += " [";
  for_each_as_double(host.raw_data(), dtype(), n,
                     [&](int64_t i, double v) { s += fmt::format("{}{:.6g}", i ? ", " : "", v); });
  if (numel() > n) s += ", ...";
  return s + "]";
}

}  // namespace lora
