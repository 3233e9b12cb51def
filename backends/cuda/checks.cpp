// The checks and small helpers shared by the CUDA backend and the fused CUDA kernels (checks.h).
#include "backends/cuda/checks.h"

#include "backends/cuda/cuda_context.h"

namespace lora::cuda {

int activate(const char* kernel, std::initializer_list<const Tensor*> tensors) {
  int index = -1;
  for (const Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    const Device d = t->device();
    LORA_CHECK(d.is_cuda(), "cuda {}: a tensor of shape {} is on {}, expected a CUDA device", kernel, t->shape().str(),
               d.str());
    if (index < 0) index = d.index;
    LORA_CHECK(d.index == index, "cuda {}: tensors on different devices (cuda:{} and cuda:{})", kernel, index, d.index);
  }
  LORA_CHECK(index >= 0, "cuda {}: no defined tensor argument", kernel);
  set_device(index);
  return index;
}

float* f32(const char* kernel, const Tensor& t, const char* name) {
  LORA_CHECK(t.defined(), "cuda {}: {} is undefined", kernel, name);
  LORA_CHECK(t.dtype() == DType::F32, "cuda {}: {} has dtype {}; the CUDA backend supports float32 only", kernel, name,
             dtype_name(t.dtype()));
  return static_cast<float*>(t.raw_data());
}

float* f32_or_null(const char* kernel, const Tensor& t, const char* name) {
  return t.defined() ? f32(kernel, t, name) : nullptr;
}

void check_same_shape(const char* kernel, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  LORA_CHECK(a.shape() == b.shape(), "cuda {}: {} has shape {} but {} has shape {}", kernel, a_name, a.shape().str(),
             b_name, b.shape().str());
}

void check_numel(const char* kernel, const Tensor& t, const char* name, int64_t expected) {
  LORA_CHECK(t.numel() == expected, "cuda {}: {} has shape {} ({} elements), expected {} elements", kernel, name,
             t.shape().str(), t.numel(), expected);
}

bool check_ids(const char* kernel, const Tensor& ids, const char* name) {
  LORA_CHECK(ids.defined(), "cuda {}: {} is undefined", kernel, name);
  LORA_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64,
             "cuda {}: {} has dtype {}, expected int32 or int64", kernel, name, dtype_name(ids.dtype()));
  return ids.dtype() == DType::I64;
}

Tensor workspace(const Shape& shape, DType dtype, int device) {
  return Tensor::empty(shape, dtype, Device::cuda(device), MemoryCategory::Workspace);
}

ErrorFlag::ErrorFlag(int device) : buffer_(workspace({3}, DType::I64, device)) {
  buffer_.zero_();
}

unsigned long long* ErrorFlag::data() const {
  return static_cast<unsigned long long*>(buffer_.raw_data());
}

void ErrorFlag::check(const char* kernel, const char* what, int64_t limit) const {
  const std::vector<int64_t> v = buffer_.to_vector<int64_t>();
  LORA_CHECK(v[0] == 0, "cuda {}: {} {} at position {} is outside [0, {})", kernel, what, v[1], v[2], limit);
}

}  // namespace lora::cuda
