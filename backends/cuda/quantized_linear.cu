// CUDA kernels of the matmul with a quantized frozen weight (backends/kernels/quantized_linear.h): a kernel
// dequantizes one tile of weight rows (one thread per weight), then cuBLAS multiplies by the tile, writing
// a column block of y (forward) or accumulating into grad_x (backward) through leading dimensions.
#include <cuda_fp16.h>

#include <climits>

#include "backends/cuda/checks.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_context.h"
#include "backends/kernels/quantized_linear.h"

namespace lora::cuda {
namespace {

// The device pointers of a quantized weight.
struct DeviceView {
  QuantFormat format;
  int64_t cols;
  const uint8_t* data;
  const float* scale;
  const int8_t* absmax_codes;
  const float* absmax_scale;
  float absmax_mean;
  float nf4[16];  // the code table, passed by value with the launch (no per-device constant memory to fill)
};

// Element i of W flattened (the formats of core/quantized.h).
__device__ float dequantize_element(const DeviceView& v, int64_t i) {
  float w = 0.f;
  switch (v.format) {
    case QuantFormat::BF16:
      w = __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(v.data)[i]) << 16);
      break;
    case QuantFormat::Q8_0: {  // q d; rows are whole blocks of 32, so element i is in block i / 32
      const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(v.data)[i / kQuantBlock];
      w = float(b.qs[i % kQuantBlock]) * __half2float(__ushort_as_half(b.d));
      break;
    }
    case QuantFormat::Q4_0: {  // (q - 8) d; byte j: element j (low nibble), element j + 16 (high nibble)
      const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(v.data)[i / kQuantBlock];
      const int j = int(i % kQuantBlock);
      const int q = j < kQuantBlock / 2 ? (b.qs[j] & 0x0F) : (b.qs[j - kQuantBlock / 2] >> 4);
      w = float(q - 8) * __half2float(__ushort_as_half(b.d));
      break;
    }
    case QuantFormat::NF4: {  // code[q] * absmax_block
      const int64_t b = i / kNf4Block;
      const float absmax =
          v.absmax_codes ? v.absmax_mean + float(v.absmax_codes[b]) * v.absmax_scale[b / kNf4AbsmaxBlock] : v.scale[b];
      const uint8_t byte = v.data[i >> 1];
      w = v.nf4[(i & 1) ? (byte >> 4) : (byte & 0x0F)] * absmax;
      break;
    }
    case QuantFormat::F32:
      break;
  }
  return w;
}

// out[e] = W_flat[first + e] for e < count.
__global__ void dequantize_kernel(DeviceView v, int64_t first, int64_t count, float* out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x)
    out[e] = dequantize_element(v, first + e);
}

// out[r, c] = W[ids[r], c] for r < n (ids checked on the host first).
template <typename TId>
__global__ void gather_rows_kernel(DeviceView v, const TId* ids, int64_t n, float* out) {
  const int64_t count = n * v.cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / v.cols, c = e % v.cols;
    out[e] = dequantize_element(v, int64_t(ids[r]) * v.cols + c);
  }
}

DeviceView device_view(const char* k, const QuantizedWeight& w) {
  LORA_CHECK(w.format != QuantFormat::F32, "{}: the weight is not quantized", k);
  DeviceView v{w.format,      w.cols, static_cast<const uint8_t*>(w.data.raw_data()), nullptr, nullptr, nullptr,
               w.absmax_mean, {}};
  for (int c = 0; c < 16; ++c) v.nf4[c] = kNf4Codes[c];
  if (w.scale.defined()) v.scale = w.scale.data<float>();
  if (w.absmax_codes.defined()) v.absmax_codes = static_cast<const int8_t*>(w.absmax_codes.raw_data());
  if (w.absmax_scale.defined()) v.absmax_scale = w.absmax_scale.data<float>();
  return v;
}

void dequantize_rows(const char* k, const DeviceView& v, int64_t row0, int64_t count, float* out) {
  const int64_t n = count * v.cols;
  if (n <= 0) return;
  dequantize_kernel<<<grid_for(n, kThreads), kThreads>>>(v, row0 * v.cols, n, out);
  LORA_CUDA_CHECK_LAUNCH(k);
}

// Checks that the weight and the other tensors are on one device, and makes it current.
int activate_weight(const char* k, const QuantizedWeight& w, const Tensor& a, const Tensor& b, const Tensor& c) {
  return activate(k, {&a, &b, &c, &w.data, &w.scale, &w.absmax_codes, &w.absmax_scale});
}

void check_int(const char* k, std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes) LORA_CHECK(s <= INT_MAX, "{}: size {} exceeds cuBLAS's 32-bit limit", k, s);
}

}  // namespace
}  // namespace lora::cuda

namespace lora {

void kernels::QuantizedLinearForward::cuda(const Tensor& x, const QuantizedWeight& w, Tensor& tile, Tensor& y) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate_weight(k, w, x, tile, y);
  const int64_t in = w.cols, out = w.rows, rows = x.numel() / std::max<int64_t>(in, 1), tile_rows = tile.size(0);
  LORA_CHECK(x.size(-1) == in && y.numel() == rows * out && tile.numel() == tile_rows * in,
             "{}: x {}, y {}, tile {} do not fit a weight [{}, {}]", k, x.shape().str(), y.shape().str(),
             tile.shape().str(), out, in);
  check_int(k, {rows, in, out});
  const float* px = f32(k, x, "x");
  float *pt = f32(k, tile, "tile"), *py = f32(k, y, "y");
  const DeviceView v = device_view(k, w);
  cublasHandle_t handle = cublas_handle(device);
  const float one = 1.f, zero = 0.f;
  for (int64_t j0 = 0; j0 < out; j0 += tile_rows) {
    const int64_t t = std::min(tile_rows, out - j0);
    dequantize_rows(k, v, j0, t, pt);
    // Row-major y[:, j0 : j0 + t] (ld out) = x [rows, in] tile^T; column-major: y^T = tile x^T.
    LORA_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(t), int(rows), int(in), &one, pt, int(in), px,
                                  int(in), &zero, py + j0, int(out)));
  }
}

void kernels::QuantizedLinearBackward::cuda(const Tensor& grad_y, const QuantizedWeight& w, Tensor& tile,
                                            Tensor& grad_x) {
  using namespace lora::cuda;
  const char* k = name;
  const int device = activate_weight(k, w, grad_y, tile, grad_x);
  const int64_t in = w.cols, out = w.rows, rows = grad_y.numel() / std::max<int64_t>(out, 1), tile_rows = tile.size(0);
  LORA_CHECK(grad_y.size(-1) == out && grad_x.numel() == rows * in && tile.numel() == tile_rows * in,
             "{}: grad_y {}, grad_x {}, tile {} do not fit a weight [{}, {}]", k, grad_y.shape().str(),
             grad_x.shape().str(), tile.shape().str(), out, in);
  check_int(k, {rows, in, out});
  const float* pg = f32(k, grad_y, "grad_y");
  float *pt = f32(k, tile, "tile"), *px = f32(k, grad_x, "grad_x");
  const DeviceView v = device_view(k, w);
  cublasHandle_t handle = cublas_handle(device);
  const float one = 1.f, zero = 0.f;
  for (int64_t j0 = 0; j0 < out; j0 += tile_rows) {
    const int64_t t = std::min(tile_rows, out - j0);
    dequantize_rows(k, v, j0, t, pt);
    // Row-major grad_x (+)= grad_y[:, j0 : j0 + t] (ld out) tile; column-major: grad_x^T (+)= tile^T grad_y^T.
    LORA_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, int(in), int(rows), int(t), &one, pt, int(in),
                                  pg + j0, int(out), j0 == 0 ? &zero : &one, px, int(in)));
  }
}

void kernels::QuantizedGatherRows::cuda(const QuantizedWeight& w, const Tensor& ids, Tensor& out) {
  using namespace lora::cuda;
  const char* k = name;
  activate_weight(k, w, ids, out, Tensor());
  const int64_t n = ids.numel();
  LORA_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, "{}: ids must be int32 or int64, got {}", k,
             dtype_name(ids.dtype()));
  LORA_CHECK(out.numel() == n * w.cols, "{}: out {} must hold [{}, {}]", k, out.shape().str(), n, w.cols);
  // The ids are few (one per token): checked on the host, before anything is written.
  const Tensor host_ids = ids.to(Device::cpu()).to(DType::I64);
  const int64_t* id = host_ids.data<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    LORA_CHECK(id[i] >= 0 && id[i] < w.rows, "{}: id {} at position {} is out of range for an embedding of V = {} rows",
               k, id[i], i, w.rows);
  if (n == 0) return;
  const DeviceView v = device_view(k, w);
  float* po = f32(k, out, "out");
  const int64_t count = n * w.cols;
  if (ids.dtype() == DType::I64)
    gather_rows_kernel<<<grid_for(count, kThreads), kThreads>>>(v, static_cast<const int64_t*>(ids.raw_data()), n, po);
  else
    gather_rows_kernel<<<grid_for(count, kThreads), kThreads>>>(v, static_cast<const int32_t*>(ids.raw_data()), n, po);
  LORA_CUDA_CHECK_LAUNCH(k);
}

void kernels::QuantizedDequantize::cuda(const QuantizedWeight& w, int64_t row0, int64_t count, Tensor& out) {
  using namespace lora::cuda;
  const char* k = name;
  activate_weight(k, w, out, Tensor(), Tensor());
  LORA_CHECK(row0 >= 0 && count >= 0 && row0 <= w.rows - count && out.numel() == count * w.cols,
             "{}: rows [{}, {}) of a weight [{}, {}] into {}", k, row0, row0 + count, w.rows, w.cols,
             out.shape().str());
  dequantize_rows(k, device_view(k, w), row0, count, f32(k, out, "out"));
}

}  // namespace lora
