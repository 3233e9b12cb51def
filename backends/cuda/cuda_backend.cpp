// CudaBackend: registration and the generic primitives (filling and layout, the table-driven elementwise
// kernels, reductions, gemm); the fused kernels are in backends/cuda/<op>.cu. Strided operands (broadcast,
// permute) are described by a StridedIndex built here, with size-1 axes dropped and neighbouring axes merged,
// so kernels decompose as few dimensions as possible.
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <string>

#include "backends/cuda/checks.h"
#include "backends/cuda/cuda_context.h"
#include "core/allocator.h"

namespace lora::cuda {

// ---------------------------------------------------------------------------------------------------
// Registration: stores a pointer only; the device is first touched by the first kernel call.

namespace {
CudaBackend& cuda_backend() {
  static CudaBackend* backend = new CudaBackend();  // never destroyed (used by static tensors at exit)
  return *backend;
}
[[maybe_unused]] const bool g_registered = [] {
  register_backend(DeviceType::CUDA, &cuda_backend());
  return true;
}();
}  // namespace

namespace {

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size());
  int64_t acc = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

// Strides with which `x` is read when broadcast (numpy rules) to `out` (0 on broadcast axes).
std::vector<int64_t> broadcast_strides(const char* kernel, const Shape& x, const Shape& out) {
  const int r = out.rank(), xr = x.rank();
  LORA_CHECK(xr <= r, "cuda {}: shape {} does not broadcast to {}", kernel, x.str(), out.str());
  const std::vector<int64_t> xs = contiguous_strides(x.dims());
  std::vector<int64_t> s(r, 0);
  for (int i = 0; i < r; ++i) {
    const int xi = i - (r - xr);
    if (xi < 0) continue;
    const int64_t xd = x.dims()[xi], od = out.dims()[i];
    LORA_CHECK(xd == od || xd == 1, "cuda {}: shape {} does not broadcast to {}", kernel, x.str(), out.str());
    s[i] = xd == od ? xs[xi] : 0;
  }
  return s;
}

// Drops size-1 axes and merges neighbouring axes that are contiguous for both operands.
StridedIndex coalesce(const char* kernel, const std::vector<int64_t>& dims, const std::vector<int64_t>& sa,
                      const std::vector<int64_t>& sb) {
  std::vector<int64_t> d, a, b;  // innermost first
  for (size_t i = dims.size(); i-- > 0;) {
    if (dims[i] == 1) continue;
    if (!d.empty() && sa[i] == a.back() * d.back() && sb[i] == b.back() * d.back()) {
      d.back() *= dims[i];
    } else {
      d.push_back(dims[i]);
      a.push_back(sa[i]);
      b.push_back(sb[i]);
    }
  }
  LORA_CHECK(d.size() <= static_cast<size_t>(kMaxDims), "cuda {}: {} dimensions after merging; at most {} supported",
             kernel, d.size(), kMaxDims);
  StridedIndex idx;
  if (d.empty()) {  // a single element
    idx.rank = 1;
    idx.dims[0] = 1;
    return idx;
  }
  idx.rank = static_cast<int>(d.size());
  for (int i = 0; i < idx.rank; ++i) {  // back to outermost first
    idx.dims[i] = d[idx.rank - 1 - i];
    idx.stride_a[i] = a[idx.rank - 1 - i];
    idx.stride_b[i] = b[idx.rank - 1 - i];
  }
  return idx;
}

int elem_size_for_copy(const char* kernel, const Tensor& t) {
  const size_t s = dtype_size(t.dtype());
  LORA_CHECK(s == 2 || s == 4 || s == 8, "cuda {}: dtype {} is not supported", kernel, dtype_name(t.dtype()));
  return static_cast<int>(s);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Filling and layout (data movement works on any dtype; accumulation needs float32)

void CudaBackend::fill(Tensor& out, double value) {
  activate("fill", {&out});
  switch (out.dtype()) {
    case DType::F32:
      fill_f32(static_cast<float*>(out.raw_data()), out.numel(), static_cast<float>(value));
      break;
    case DType::I32:
      fill_i32(static_cast<int32_t*>(out.raw_data()), out.numel(), static_cast<int32_t>(value));
      break;
    case DType::I64:
      fill_i64(static_cast<int64_t*>(out.raw_data()), out.numel(), static_cast<int64_t>(value));
      break;
    default:
      LORA_FAIL("cuda fill: dtype {} is not supported (float32, int32, int64)", dtype_name(out.dtype()));
  }
}

void CudaBackend::permute(const Tensor& x, Tensor& out, const std::vector<int>& dims) {
  activate("permute", {&x, &out});
  const int r = x.rank();
  LORA_CHECK(static_cast<int>(dims.size()) == r && out.rank() == r, "cuda permute: {} dims for input {} and output {}",
             dims.size(), x.shape().str(), out.shape().str());
  LORA_CHECK(x.dtype() == out.dtype(), "cuda permute: input dtype {} but output dtype {}", dtype_name(x.dtype()),
             dtype_name(out.dtype()));
  std::vector<bool> seen(r, false);
  const std::vector<int64_t> xs = contiguous_strides(x.shape().dims());
  std::vector<int64_t> strides(r);
  for (int i = 0; i < r; ++i) {
    const int d = dims[i];
    LORA_CHECK(d >= 0 && d < r && !seen[d], "cuda permute: dims are not a permutation of [0, {})", r);
    seen[d] = true;
    LORA_CHECK(out.shape().dims()[i] == x.shape().dims()[d],
               "cuda permute: output shape {} does not match input {} permuted", out.shape().str(), x.shape().str());
    strides[i] = xs[d];
  }
  if (out.numel() == 0) return;
  gather(x.raw_data(), out.raw_data(), out.numel(), elem_size_for_copy("permute", x),
         coalesce("permute", out.shape().dims(), strides, strides));
}

void CudaBackend::copy_block(const Tensor& src, Tensor& dst, int64_t outer, int64_t src_mid, int64_t dst_mid,
                             int64_t inner, int64_t src_start, int64_t dst_start, int64_t count, bool accumulate) {
  activate("copy_block", {&src, &dst});
  LORA_CHECK(src.dtype() == dst.dtype(), "cuda copy_block: source dtype {} but destination dtype {}",
             dtype_name(src.dtype()), dtype_name(dst.dtype()));
  LORA_CHECK(outer >= 0 && inner >= 0 && count >= 0 && src_start >= 0 && dst_start >= 0 &&
                 src_start + count <= src_mid && dst_start + count <= dst_mid,
             "cuda copy_block: block [{}, {}) -> [{}, {}) is out of range (src_mid {}, dst_mid {})", src_start,
             src_start + count, dst_start, dst_start + count, src_mid, dst_mid);
  check_numel("copy_block", src, "src", outer * src_mid * inner);
  check_numel("copy_block", dst, "dst", outer * dst_mid * inner);
  if (accumulate) f32("copy_block (accumulate)", dst, "dst");
  cuda::copy_block(src.raw_data(), dst.raw_data(), elem_size_for_copy("copy_block", src), outer, src_mid, dst_mid,
                   inner, src_start, dst_start, count, accumulate);
}

// ---------------------------------------------------------------------------------------------------
// Elementwise

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  activate("binary", {&a, &b, &out});
  const float* pa = f32("binary", a, "a");
  const float* pb = f32("binary", b, "b");
  float* po = f32("binary", out, "out");
  if (a.shape() == out.shape() && b.shape() == out.shape()) {
    binary_f32(op, pa, pb, po, out.numel());
    return;
  }
  const std::vector<int64_t> sa = broadcast_strides("binary", a.shape(), out.shape());
  const std::vector<int64_t> sb = broadcast_strides("binary", b.shape(), out.shape());
  if (out.numel() == 0) return;
  binary_strided_f32(op, pa, pb, po, out.numel(), coalesce("binary", out.shape().dims(), sa, sb));
}

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) {
  const std::string name = std::string("unary ") + unary_info(op).name;
  const char* k = name.c_str();
  activate(k, {&x, &out});
  check_same_shape(k, x, "x", out, "out");
  unary_f32(op, f32(k, x, "x"), f32(k, out, "out"), out.numel(), static_cast<float>(alpha));
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& saved, const Tensor& grad_y, Tensor& grad_x, double alpha) {
  check_unary_backward_args(op, saved, grad_y, grad_x);
  const std::string name = std::string("unary_backward ") + unary_info(op).name;
  const char* k = name.c_str();
  activate(k, {&saved, &grad_y, &grad_x});
  check_same_shape(k, grad_y, "grad_y", grad_x, "grad_x");
  unary_backward_f32(op, f32_or_null(k, saved, "saved"), f32(k, grad_y, "grad_y"), f32(k, grad_x, "grad_x"),
                     grad_x.numel(), static_cast<float>(alpha));
}

// ---------------------------------------------------------------------------------------------------
// Reductions and broadcasting

void CudaBackend::sum_to(const Tensor& x, Tensor& out) {
  const int device = activate("sum_to", {&x, &out});
  const float* px = f32("sum_to", x, "x");
  float* po = f32("sum_to", out, "out");
  // Align both shapes right, padded with 1s, and label each axis of x as kept or reduced.
  const int r = std::max(x.rank(), out.rank());
  std::vector<int64_t> xd(r, 1), od(r, 1);
  for (int i = 0; i < x.rank(); ++i) xd[r - x.rank() + i] = x.shape().dims()[i];
  for (int i = 0; i < out.rank(); ++i) od[r - out.rank() + i] = out.shape().dims()[i];
  struct Group {
    int64_t size;
    bool reduced;
  };
  std::vector<Group> groups;  // merged axes of x, outermost first (x is contiguous, so neighbours merge)
  for (int i = 0; i < r; ++i) {
    LORA_CHECK(od[i] == xd[i] || od[i] == 1, "cuda sum_to: shape {} cannot be summed to {}", x.shape().str(),
               out.shape().str());
    if (xd[i] == 1) continue;
    const bool reduced = od[i] == 1;
    if (!groups.empty() && groups.back().reduced == reduced)
      groups.back().size *= xd[i];
    else
      groups.push_back({xd[i], reduced});
  }
  if (out.numel() == 0) return;
  if (x.numel() == 0) {
    fill_f32(po, out.numel(), 0.f);
    return;
  }
  const bool any_reduced = std::any_of(groups.begin(), groups.end(), [](const Group& g) { return g.reduced; });
  if (!any_reduced) {  // same elements: a copy
    allocator_for(out.device()).copy_within(po, px, out.nbytes(), out.device());
    return;
  }
  if (groups.size() == 1) {  // everything into one element
    Tensor partial = workspace({reduce_all_blocks(x.numel())}, DType::F64, device);
    reduce_all_f32(px, x.numel(), false, partial.data<double>(), nullptr, po);
    return;
  }
  if (groups.size() == 2 && groups[0].reduced) {  // [R, K] -> [K]
    const int64_t rows = groups[0].size, cols = groups[1].size;
    const int splits = column_reduce_splits(rows, cols);
    Tensor partial = workspace({static_cast<int64_t>(splits) * cols}, DType::F32, device);
    sum_rows_f32(px, rows, cols, partial.data<float>(), splits, po);
    return;
  }
  if (groups.size() == 2) {  // [K, R] -> [K]
    sum_cols_f32(px, groups[0].size, groups[1].size, po);
    return;
  }
  // General alternating pattern: one thread per output element.
  ReduceIndex idx;
  int64_t stride = 1, n_reduced = 1;
  LORA_CHECK(groups.size() <= 2 * static_cast<size_t>(kMaxDims), "cuda sum_to: too many dimensions");
  std::vector<int64_t> strides(groups.size());
  for (size_t i = groups.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= groups[i].size;
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].reduced) {
      LORA_CHECK(idx.reduced_rank < kMaxDims, "cuda sum_to: too many dimensions");
      idx.reduced_dims[idx.reduced_rank] = groups[i].size;
      idx.reduced_strides[idx.reduced_rank++] = strides[i];
      n_reduced *= groups[i].size;
    } else {
      LORA_CHECK(idx.kept_rank < kMaxDims, "cuda sum_to: too many dimensions");
      idx.kept_dims[idx.kept_rank] = groups[i].size;
      idx.kept_strides[idx.kept_rank++] = strides[i];
    }
  }
  sum_general_f32(px, po, out.numel(), n_reduced, idx);
}

void CudaBackend::expand(const Tensor& x, Tensor& out, bool accumulate) {
  activate("expand", {&x, &out});
  const float* px = f32("expand", x, "x");
  float* po = f32("expand", out, "out");
  const std::vector<int64_t> sx = broadcast_strides("expand", x.shape(), out.shape());
  if (out.numel() == 0) return;
  if (accumulate) {  // out = x (broadcast) + out
    const std::vector<int64_t> so = contiguous_strides(out.shape().dims());
    binary_strided_f32(BinaryOp::Add, px, po, po, out.numel(), coalesce("expand", out.shape().dims(), sx, so));
  } else {
    gather(px, po, out.numel(), 4, coalesce("expand", out.shape().dims(), sx, sx));
  }
}

double CudaBackend::sum_squares(const Tensor& x) {
  const int device = activate("sum_squares", {&x});
  const float* px = f32("sum_squares", x, "x");
  const int blocks = reduce_all_blocks(x.numel());
  Tensor buffer = workspace({blocks + 1}, DType::F64, device);  // partial sums, then the result
  double* p = buffer.data<double>();
  reduce_all_f32(px, x.numel(), true, p, p + blocks, nullptr);
  return buffer.narrow_rows(blocks, 1).item();
}

// ---------------------------------------------------------------------------------------------------
// gemm

void CudaBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s) {
  const int device = activate("gemm", {&a, &b, &c});
  const float* pa = f32("gemm", a, "a");
  const float* pb = f32("gemm", b, "b");
  float* pc = f32("gemm", c, "c");
  LORA_CHECK(s.batch >= 0 && s.m >= 0 && s.n >= 0 && s.k >= 0 && s.stride_a >= 0 && s.stride_b >= 0 && s.stride_c >= 0,
             "cuda gemm: negative size or stride");
  auto check_extent = [&](const Tensor& t, const char* name, int64_t stride, int64_t matrix) {
    if (s.batch == 0 || matrix == 0) return;
    const int64_t needed = (s.batch - 1) * stride + matrix;
    LORA_CHECK(t.numel() >= needed, "cuda gemm: {} has {} elements, the batch of {} needs {}", name, t.numel(), s.batch,
               needed);
  };
  check_extent(a, "a", s.stride_a, s.m * s.k);
  check_extent(b, "b", s.stride_b, s.k * s.n);
  check_extent(c, "c", s.stride_c, s.m * s.n);
  GemmArgs g;
  g.batch = s.batch;
  g.m = s.m;
  g.n = s.n;
  g.k = s.k;
  g.trans_a = s.trans_a;
  g.trans_b = s.trans_b;
  g.stride_a = s.stride_a;
  g.stride_b = s.stride_b;
  g.stride_c = s.stride_c;
  g.alpha = static_cast<float>(s.alpha);
  g.beta = static_cast<float>(s.beta);
  gemm_f32(device, pa, pb, pc, g);
}

}  // namespace lora::cuda
