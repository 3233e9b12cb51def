// CPU layout kernels: fill, permute (a copy into the permuted layout), block copies along an axis.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_backend.h"

namespace lora {
namespace {
constexpr int64_t kParallelThreshold = 1 << 15;
}

void CpuBackend::fill(Tensor& out, double value) {
  const int64_t n = out.numel();
  switch (out.dtype()) {
    case DType::I32:
      std::fill_n(out.data<int32_t>(), n, static_cast<int32_t>(value));
      return;
    case DType::I64:
      std::fill_n(out.data<int64_t>(), n, static_cast<int64_t>(value));
      return;
    default:
      break;
  }
  dispatch_floating(out.dtype(), "fill", [&]<typename T>() {
    T* p = out.data<T>();
    const T v = static_cast<T>(value);
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void CpuBackend::permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) {
  const int rank = x.rank();
  LORA_CHECK(static_cast<int>(dims.size()) == rank, "permute: {} axes given for a tensor of rank {}", dims.size(),
             rank);
  // out index (i_0..i_{r-1}) reads x at sum_d i_d * x_stride[dims[d]].
  std::vector<int64_t> x_strides(rank, 1), read_strides(rank), out_dims(rank);
  for (int d = rank - 2; d >= 0; --d) x_strides[d] = x_strides[d + 1] * x.shape().dims()[d + 1];
  for (int d = 0; d < rank; ++d) {
    read_strides[d] = x_strides[dims[d]];
    out_dims[d] = x.shape().dims()[dims[d]];
  }
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t last = rank ? out_dims[rank - 1] : 1;
  const int64_t last_stride = rank ? read_strides[rank - 1] : 1;
  const int64_t rows = n / last;
  dispatch_floating(x.dtype(), "permute", [&]<typename T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for if (n > kParallelThreshold) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      // Offset of the start of output row r in x.
      int64_t rem = r, off = 0;
      for (int d = rank - 2; d >= 0; --d) {
        off += (rem % out_dims[d]) * read_strides[d];
        rem /= out_dims[d];
      }
      T* dst = po + r * last;
      for (int64_t j = 0; j < last; ++j) dst[j] = px[off + j * last_stride];
    }
  });
}

void CpuBackend::copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid,
                            int64_t inner, int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) {
  LORA_CHECK(src_start >= 0 && src_start + count <= src_mid && dst_start >= 0 && dst_start + count <= dst_mid,
             "copy_block: range out of bounds");
  const int64_t block = count * inner;
  dispatch_floating(src.dtype(), "copy_block", [&]<typename T>() {
    const T* ps = src.data<T>();
    T* pd = dst.data<T>();
#pragma omp parallel for if (outer * block > kParallelThreshold) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* s = ps + (o * src_mid + src_start) * inner;
      T* d = pd + (o * dst_mid + dst_start) * inner;
      if (accumulate) {
        for (int64_t i = 0; i < block; ++i) d[i] += s[i];
      } else {
        std::memcpy(d, s, static_cast<size_t>(block) * sizeof(T));
      }
    }
  });
}

}  // namespace lora
