// GPU-vs-CPU parity of every CUDA kernel on random inputs; each test skips with a warning without a device.
//
// Every comparison is |gpu - cpu| <= atol + rtol * |cpu| (float32 on both sides, TF32 off unless said):
//   exact       atol 0     rtol 0     data movement (fill, permute, copy_block, expand), dropout (same mask,
//                                     same float multiply), embedding forward
//   elementwise atol 1e-5  rtol 1e-4  unary/binary/optimizers: CUDA's expf/logf/tanhf are within 2 ulp
//   rows        atol 1e-5  rtol 1e-4  softmax, log_softmax, layer norm, cross-entropy: one row summed in
//                                     another order (rows of up to 50257 values)
//   sums        atol 1e-4  rtol 1e-4  sums over up to ~2000 rows (sum_to, layer-norm weight/bias, embedding
//                                     scatter): the CPU adds a column in float, one row after another, whose
//                                     own rounding error grows ~1.2e-8 * rows for inputs in [-1, 1]
//   gemm        atol 1e-4  rtol 1e-4  inputs in [-1, 1], k <= 300, full FP32 (TF32 off)
//   gemm TF32   atol 5e-2  rtol 1e-2  TF32 keeps 10 mantissa bits
//   attention   atol 1e-4  rtol 1e-3  two gemms around a softmax, T up to 1100 (grouped-query included)
//   sum_squares            rtol 1e-6  both accumulate in double
// Output buffers on the GPU start as NaN, so an element a kernel forgets to write fails the comparison.
#if defined(LORA_HAVE_CUDA)

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/cuda_device.h"
#include "backends/kernels/attention.h"
#include "backends/kernels/cross_entropy.h"
#include "backends/kernels/dropout.h"
#include "backends/kernels/embedding.h"
#include "backends/kernels/layer_norm.h"
#include "backends/kernels/optimizer.h"
#include "backends/kernels/quantized_linear.h"
#include "backends/kernels/rms_norm.h"
#include "backends/kernels/rope.h"
#include "backends/kernels/softmax.h"
#include "core/allocator.h"
#include "core/tensor.h"
#include "nn/attention.h"

using namespace lora;

namespace {

#define LORA_REQUIRE_CUDA_DEVICE()          \
  do {                                      \
    if (!::lora::cuda_device_available()) { \
      WARN("no CUDA device: skipped");      \
      return;                               \
    }                                       \
  } while (0)

struct Tol {
  double atol, rtol;
};
constexpr Tol kExact{0.0, 0.0};
constexpr Tol kElementwise{1e-5, 1e-4};
constexpr Tol kRows{1e-5, 1e-4};
constexpr Tol kSums{1e-4, 1e-4};
constexpr Tol kGemm{1e-4, 1e-4};
constexpr Tol kGemmTf32{5e-2, 1e-2};
constexpr Tol kAttention{1e-4, 1e-3};

const Device kGpu = Device::cuda(0);
const std::vector<int64_t> kSizes = {1, 7, 33, 257, 1000, 4099};

Backend& cpu() {
  return backend_for(Device::cpu());
}
Backend& gpu() {
  return backend_for(kGpu);
}

Tensor rand_cpu(const Shape& shape, Generator& gen, double lo = -1.0, double hi = 1.0) {
  return Tensor::uniform(shape, gen, lo, hi, DType::F32, Device::cpu());
}
Tensor on_gpu(const Tensor& t) {
  return t.to(kGpu);
}
// A GPU output that fails every comparison unless the kernel writes each element.
Tensor poisoned(const Shape& shape) {
  return Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), DType::F32, kGpu);
}

std::string shape_str(const Shape& s) {
  return s.str();
}

void check_close(const Tensor& gpu_t, const Tensor& cpu_t, Tol tol, const std::string& what) {
  REQUIRE(gpu_t.shape() == cpu_t.shape());
  const std::vector<double> g = gpu_t.to_vector<double>(), c = cpu_t.to_vector<double>();
  int64_t bad = 0, first = -1;
  double worst = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(c[i]) && std::isnan(g[i])) continue;
    const double err = std::abs(g[i] - c[i]);
    if (!(err <= tol.atol + tol.rtol * std::abs(c[i]))) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
    if (err > worst || std::isnan(err)) worst = err;
  }
  if (bad > 0) {
    std::ostringstream msg;
    msg << what << " " << cpu_t.shape().str() << ": " << bad << " of " << g.size() << " elements outside atol "
        << tol.atol << " + rtol " << tol.rtol << "; first at " << first << ": gpu " << g[first] << ", cpu " << c[first]
        << "; worst abs error " << worst;
    FAIL_CHECK(msg.str());
  } else {
    SUCCEED();
  }
}

bool positive_domain(UnaryOp op) {
  return unary_info(op).domain == TestDomain::Positive;
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
// Device, allocator, fill

TEST_CASE("cuda: the caching allocator reuses blocks and reports its figures", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  INFO("device: " << cuda_device_name(0));
  const CudaMemoryInfo before = cuda_memory_info(0);
  const int64_t tracked_before = MemoryTracker::instance().stats(kGpu).live.total();
  const int64_t n = (1 << 20) + 3;  // 4 MiB + 12 bytes: a large size class
  {
    Tensor t = Tensor::empty({n}, DType::F32, kGpu);
    const CudaMemoryInfo during = cuda_memory_info(0);
    CHECK(during.requested_bytes == before.requested_bytes + static_cast<size_t>(n) * 4);
    CHECK(during.in_use_bytes >= before.in_use_bytes + static_cast<size_t>(n) * 4);
    CHECK(during.in_use_bytes <= before.in_use_bytes + static_cast<size_t>(n) * 4 * 9 / 8 + 512);
    CHECK(MemoryTracker::instance().stats(kGpu).live.total() == tracked_before + n * 4);
    CHECK(during.total_bytes > 0);
    CHECK(during.free_bytes <= during.total_bytes);
  }
  const CudaMemoryInfo after_free = cuda_memory_info(0);
  CHECK(after_free.requested_bytes == before.requested_bytes);
  CHECK(after_free.cached_bytes >= static_cast<size_t>(n) * 4);
  CHECK(allocator_for(kGpu).reserved_bytes(kGpu) == after_free.reserved_bytes - after_free.requested_bytes);
  {
    Tensor again = Tensor::empty({n}, DType::F32, kGpu);  // same class: served from the cache
    CHECK(cuda_memory_info(0).cuda_mallocs == after_free.cuda_mallocs);
  }
  cuda_empty_cache();
  const CudaMemoryInfo emptied = cuda_memory_info(0);
  CHECK(emptied.cached_bytes == 0);
  CHECK(emptied.reserved_bytes == emptied.in_use_bytes);
}

TEST_CASE("cuda parity: fill", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    for (DType dt : {DType::F32, DType::I32, DType::I64}) {
      Tensor c = Tensor::zeros({n}, dt, Device::cpu());
      Tensor g = Tensor::zeros({n}, dt, kGpu);
      cpu().fill(c, -3.0);
      gpu().fill(g, -3.0);
      check_close(g, c, kExact, std::string("fill ") + std::string(dtype_name(dt)));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Elementwise

TEST_CASE("cuda parity: unary ops, aligned, misaligned and in place", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(1);
  for (const UnaryInfo& info : kUnaryOps) {
    const UnaryOp op = info.op;
    const char* unary_name = info.name;
    for (int64_t n : kSizes) {
      const bool pos = positive_domain(op);
      Tensor x = rand_cpu({n}, gen, pos ? 0.1 : -3.0, 3.0);
      Tensor xg = on_gpu(x);
      Tensor yc = Tensor::empty({n});
      Tensor yg = poisoned({n});
      cpu().unary(op, x, yc, 0.7);
      gpu().unary(op, xg, yg, 0.7);
      check_close(yg, yc, kElementwise, std::string("unary ") + unary_name);
      // In place on the GPU.
      Tensor inplace = xg.clone();
      gpu().unary(op, inplace, inplace, 0.7);
      check_close(inplace, yc, kElementwise, std::string("unary in place ") + unary_name);
      // A view one element in: not 16-byte aligned, so the scalar path runs.
      if (n > 1) {
        Tensor xv = x.narrow_rows(1, n - 1), xgv = xg.narrow_rows(1, n - 1);
        Tensor ycv = Tensor::empty({n - 1});
        Tensor ygv = poisoned({n}).narrow_rows(1, n - 1);
        cpu().unary(op, xv, ycv, 0.7);
        gpu().unary(op, xgv, ygv, 0.7);
        check_close(ygv, ycv, kElementwise, std::string("unary misaligned ") + unary_name);
      }
    }
  }
}

TEST_CASE("cuda parity: unary backward", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(2);
  for (const UnaryInfo& info : kUnaryOps) {
    const UnaryOp op = info.op;
    const char* unary_name = info.name;
    for (int64_t n : kSizes) {
      const bool pos = positive_domain(op);
      Tensor x = rand_cpu({n}, gen, pos ? 0.1 : -3.0, 3.0);
      Tensor y = Tensor::empty({n});
      cpu().unary(op, x, y, 0.7);
      // What the derivative reads, as the table says: x, y or nothing.
      const Tensor saved = info.saves == Saves::Input ? x : info.saves == Saves::Output ? y : Tensor();
      Tensor gy = rand_cpu({n}, gen);
      Tensor gxc = Tensor::empty({n});
      Tensor gxg = poisoned({n});
      cpu().unary_backward(op, saved, gy, gxc, 0.7);
      gpu().unary_backward(op, saved.defined() ? on_gpu(saved) : Tensor(), on_gpu(gy), gxg, 0.7);
      check_close(gxg, gxc, kElementwise, std::string("unary_backward ") + unary_name);
    }
  }
}

TEST_CASE("cuda parity: binary ops with broadcasting", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(3);
  struct Case {
    Shape a, b, out;
  };
  std::vector<Case> cases;
  for (int64_t n : kSizes) cases.push_back({{n}, {n}, {n}});
  cases.push_back({{33, 257}, {257}, {33, 257}});
  cases.push_back({{257}, {33, 257}, {33, 257}});
  cases.push_back({{4, 1, 5}, {3, 1}, {4, 3, 5}});
  cases.push_back({{1}, {7, 33}, {7, 33}});
  cases.push_back({{7, 33}, {1}, {7, 33}});
  cases.push_back({{2, 3, 4, 5}, {3, 1, 5}, {2, 3, 4, 5}});
  cases.push_back({{6, 1}, {1, 7}, {6, 7}});
  cases.push_back({{2, 1, 3, 1, 2}, {1, 4, 1, 5, 1}, {2, 4, 3, 5, 2}});
  for (const BinaryInfo& info : kBinaryOps) {
    const BinaryOp op = info.op;
    for (const Case& cs : cases) {
      Tensor a = rand_cpu(cs.a, gen, -2.0, 2.0);
      Tensor b = op == BinaryOp::Div ? rand_cpu(cs.b, gen, 0.5, 2.0) : rand_cpu(cs.b, gen, -2.0, 2.0);
      Tensor oc = Tensor::empty(cs.out);
      Tensor og = poisoned(cs.out);
      cpu().binary(op, a, b, oc);
      gpu().binary(op, on_gpu(a), on_gpu(b), og);
      const std::string what = std::string("binary ") + info.name + " " + shape_str(cs.a) + " with " + shape_str(cs.b);
      check_close(og, oc, kElementwise, what);
      if (cs.a == cs.out) {  // in place into a
        Tensor ag = on_gpu(a);
        gpu().binary(op, ag, on_gpu(b), ag);
        check_close(ag, oc, kElementwise, what + " in place");
      }
    }
  }
  // Misaligned operands of the same shape (scalar path).
  Tensor a = rand_cpu({1001}, gen), b = rand_cpu({1001}, gen);
  Tensor oc = Tensor::empty({1000});
  Tensor og = poisoned({1001}).narrow_rows(1, 1000);
  cpu().binary(BinaryOp::Mul, a.narrow_rows(1, 1000), b.narrow_rows(0, 1000), oc);
  gpu().binary(BinaryOp::Mul, on_gpu(a).narrow_rows(1, 1000), on_gpu(b).narrow_rows(0, 1000), og);
  check_close(og, oc, kElementwise, "binary misaligned");
}

// ---------------------------------------------------------------------------------------------------
// Layout

TEST_CASE("cuda parity: permute", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(4);
  struct Case {
    Shape x;
    std::vector<int> dims;
  };
  const std::vector<Case> cases = {{{2, 3, 4, 5}, {0, 2, 1, 3}},
                                   {{2, 3, 4, 5}, {3, 2, 1, 0}},
                                   {{7, 33}, {1, 0}},
                                   {{257}, {0}},
                                   {{4, 1, 6}, {2, 0, 1}},
                                   {{2, 33, 3, 16}, {0, 2, 1, 3}},
                                   {{1, 1}, {1, 0}},
                                   {{3, 5, 7, 2, 3}, {4, 1, 3, 0, 2}}};
  for (const Case& cs : cases) {
    Tensor x = rand_cpu(cs.x, gen);
    std::vector<int64_t> od;
    for (int d : cs.dims) od.push_back(cs.x.dims()[d]);
    Tensor oc = Tensor::empty(Shape(od));
    Tensor og = poisoned(Shape(od));
    cpu().permute(x, oc, cs.dims);
    gpu().permute(on_gpu(x), og, cs.dims);
    check_close(og, oc, kExact, "permute " + shape_str(cs.x));
  }
}

TEST_CASE("cuda parity: copy_block", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(5);
  struct Case {
    int64_t outer, src_mid, dst_mid, inner, src_start, dst_start, count;
  };
  const std::vector<Case> cases = {{3, 7, 9, 33, 2, 4, 5},
                                   {1, 1, 1, 1, 0, 0, 1},
                                   {5, 12, 4, 1, 8, 0, 4},
                                   {2, 3, 9, 257, 0, 3, 3},
                                   {33, 2304, 768, 1, 768, 0, 768}};
  for (const Case& cs : cases) {
    for (bool accumulate : {false, true}) {
      Tensor src = rand_cpu({cs.outer, cs.src_mid, cs.inner}, gen);
      Tensor dst = rand_cpu({cs.outer, cs.dst_mid, cs.inner}, gen);
      Tensor dg = on_gpu(dst);
      cpu().copy_block(src, dst, cs.outer, cs.src_mid, cs.dst_mid, cs.inner, cs.src_start, cs.dst_start, cs.count,
                       accumulate);
      gpu().copy_block(on_gpu(src), dg, cs.outer, cs.src_mid, cs.dst_mid, cs.inner, cs.src_start, cs.dst_start,
                       cs.count, accumulate);
      check_close(dg, dst, kExact, accumulate ? "copy_block accumulate" : "copy_block");
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Reductions and broadcasting

TEST_CASE("cuda parity: sum_to", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(6);
  struct Case {
    Shape x, out;
  };
  const std::vector<Case> cases = {{{33, 257}, {257}},     {{33, 257}, {33, 1}},   {{33, 257}, {1, 257}},
                                   {{4, 7, 5}, {1, 7, 1}}, {{4, 7, 5}, {4, 1, 5}}, {{4, 7, 5}, {7, 1}},
                                   {{1000}, {1}},          {{6, 1000}, {1, 1}},    {{2, 3, 4}, {2, 3, 4}},
                                   {{300, 64}, {64}},      {{5, 3000}, {5, 1}},    {{1, 7}, {7}},
                                   {{2, 1, 3}, {2, 1, 3}}, {{2048, 33}, {33}},     {{3, 4, 5, 6}, {3, 1, 5, 1}},
                                   {{100003}, {1}}};
  for (const Case& cs : cases) {
    Tensor x = rand_cpu(cs.x, gen);
    Tensor oc = Tensor::empty(cs.out);
    Tensor og = poisoned(cs.out);
    cpu().sum_to(x, oc);
    gpu().sum_to(on_gpu(x), og);
    check_close(og, oc, kSums, "sum_to " + shape_str(cs.x) + " -> " + shape_str(cs.out));
  }
}

TEST_CASE("cuda parity: expand", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(7);
  struct Case {
    Shape x, out;
  };
  const std::vector<Case> cases = {{{257}, {33, 257}},     {{33, 1}, {33, 257}}, {{1}, {7, 33}},
                                   {{4, 1, 5}, {4, 3, 5}}, {{3, 1}, {2, 3, 4}},  {{7}, {7}}};
  for (const Case& cs : cases) {
    for (bool accumulate : {false, true}) {
      Tensor x = rand_cpu(cs.x, gen);
      Tensor oc = rand_cpu(cs.out, gen);
      Tensor og = on_gpu(oc);
      cpu().expand(x, oc, accumulate);
      gpu().expand(on_gpu(x), og, accumulate);
      check_close(og, oc, kExact, std::string(accumulate ? "expand accumulate " : "expand ") + shape_str(cs.x));
    }
  }
}

TEST_CASE("cuda parity: sum_squares", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(8);
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100000), int64_t((1 << 20) + 3)}) {
    Tensor x = rand_cpu({n}, gen, -2.0, 2.0);
    const double c = cpu().sum_squares(x), g = gpu().sum_squares(on_gpu(x));
    INFO("n = " << n << ": gpu " << g << ", cpu " << c);
    CHECK(std::abs(g - c) <= 1e-6 * std::abs(c));
  }
  CHECK(gpu().sum_squares(Tensor::empty({0}, DType::F32, kGpu)) == 0.0);
}

// ---------------------------------------------------------------------------------------------------
// gemm

namespace {
void check_gemm(Generator& gen, const GemmShape& s, Tol tol) {
  const int64_t a_elems = (s.batch - 1) * s.stride_a + s.m * s.k;
  const int64_t b_elems = (s.batch - 1) * s.stride_b + s.k * s.n;
  const int64_t c_elems = (s.batch - 1) * s.stride_c + s.m * s.n;
  Tensor a = rand_cpu({a_elems}, gen), b = rand_cpu({b_elems}, gen), c = rand_cpu({c_elems}, gen);
  Tensor cg = on_gpu(c);
  cpu().gemm(a, b, c, s);
  gpu().gemm(on_gpu(a), on_gpu(b), cg, s);
  std::ostringstream what;
  what << "gemm batch " << s.batch << " m " << s.m << " n " << s.n << " k " << s.k << " ta " << s.trans_a << " tb "
       << s.trans_b << " strides " << s.stride_a << "/" << s.stride_b << "/" << s.stride_c << " beta " << s.beta;
  check_close(cg, c, tol, what.str());
}
}  // namespace

TEST_CASE("cuda parity: gemm, every transpose, batched and broadcast", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(9);
  struct Dims {
    int64_t m, n, k;
  };
  const std::vector<Dims> dims = {{1, 1, 1}, {7, 33, 257}, {33, 7, 5}, {64, 48, 300}, {257, 1, 33}, {1, 1000, 7}};
  for (const Dims& d : dims) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (int64_t batch : {int64_t(1), int64_t(3)}) {
          for (double beta : {0.0, 0.5}) {
            GemmShape s;
            s.batch = batch, s.m = d.m, s.n = d.n, s.k = d.k, s.trans_a = ta, s.trans_b = tb;
            s.stride_a = d.m * d.k, s.stride_b = d.k * d.n, s.stride_c = d.m * d.n;
            s.alpha = 0.7, s.beta = beta;
            check_gemm(gen, s, kGemm);
            if (batch > 1) {  // one shared B (a linear layer over a batch)
              s.stride_b = 0;
              check_gemm(gen, s, kGemm);
            }
          }
        }
      }
    }
  }
  GemmShape empty;  // k = 0: C = beta C
  empty.m = 5, empty.n = 6, empty.k = 0, empty.stride_c = 30, empty.beta = 0.5;
  check_gemm(gen, empty, kExact);
}

TEST_CASE("cuda parity: gemm with TF32 allowed stays close, and TF32 is off by default", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  CHECK_FALSE(cuda_allow_tf32());
  Generator gen(10);
  GemmShape s;
  s.m = 128, s.n = 96, s.k = 256, s.stride_a = s.m * s.k, s.stride_b = s.k * s.n, s.stride_c = s.m * s.n;
  set_cuda_allow_tf32(true);
  check_gemm(gen, s, kGemmTf32);
  set_cuda_allow_tf32(false);
  check_gemm(gen, s, kGemm);
}

// ---------------------------------------------------------------------------------------------------
// Softmax family, layer norm

TEST_CASE("cuda parity: softmax and log_softmax, forward and backward", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(11);
  const std::vector<Shape> shapes = {{1, 1}, {7, 33}, {33, 257}, {3, 1000}, {2, 5000}, {4, 20000}, {2, 3, 7}, {1025}};
  for (const Shape& shape : shapes) {
    for (bool log : {false, true}) {
      const std::string name = log ? "log_softmax " : "softmax ";
      Tensor x = rand_cpu(shape, gen, -5.0, 5.0);
      Tensor yc = Tensor::empty(shape), yg = poisoned(shape);
      if (log) {
        kernels::SoftmaxForward::cpu(x, yc, /*log=*/true);
        kernels::SoftmaxForward::cuda(on_gpu(x), yg, /*log=*/true);
      } else {
        kernels::SoftmaxForward::cpu(x, yc, /*log=*/false);
        kernels::SoftmaxForward::cuda(on_gpu(x), yg, /*log=*/false);
      }
      check_close(yg, yc, kRows, name + "forward " + shape_str(shape));
      Tensor gy = rand_cpu(shape, gen);
      Tensor gxc = Tensor::empty(shape), gxg = poisoned(shape);
      if (log) {
        kernels::SoftmaxBackward::cpu(yc, gy, gxc, /*log=*/true);
        kernels::SoftmaxBackward::cuda(on_gpu(yc), on_gpu(gy), gxg, /*log=*/true);
      } else {
        kernels::SoftmaxBackward::cpu(yc, gy, gxc, /*log=*/false);
        kernels::SoftmaxBackward::cuda(on_gpu(yc), on_gpu(gy), gxg, /*log=*/false);
      }
      check_close(gxg, gxc, kRows, name + "backward " + shape_str(shape));
    }
  }
}

TEST_CASE("cuda parity: layer norm, forward and backward", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(12);
  struct Case {
    int64_t rows, cols;
  };
  const std::vector<Case> cases = {{1, 7}, {33, 257}, {7, 1000}, {5, 3000}, {300, 64}, {1000, 33}, {2048, 768}};
  for (const Case& cs : cases) {
    const Shape xs{cs.rows, cs.cols};
    const std::string what = "layer_norm " + shape_str(xs);
    Tensor x = rand_cpu(xs, gen, -2.0, 3.0);
    Tensor w = rand_cpu({cs.cols}, gen, 0.5, 1.5), b = rand_cpu({cs.cols}, gen);
    Tensor yc = Tensor::empty(xs), mc = Tensor::empty({cs.rows}), rc = Tensor::empty({cs.rows});
    Tensor yg = poisoned(xs), mg = poisoned({cs.rows}), rg = poisoned({cs.rows});
    kernels::LayerNormForward::cpu(x, w, b, 1e-5, yc, mc, rc);
    kernels::LayerNormForward::cuda(on_gpu(x), on_gpu(w), on_gpu(b), 1e-5, yg, mg, rg);
    check_close(yg, yc, kRows, what + " y");
    check_close(mg, mc, kRows, what + " mean");
    check_close(rg, rc, kRows, what + " rstd");

    Tensor gy = rand_cpu(xs, gen);
    Tensor gxc = Tensor::empty(xs), gxg = poisoned(xs);
    Tensor gwc = rand_cpu({cs.cols}, gen), gbc = rand_cpu({cs.cols}, gen);  // accumulated into
    Tensor gwg = on_gpu(gwc), gbg = on_gpu(gbc);
    kernels::LayerNormBackward::cpu(gy, x, w, mc, rc, gxc, gwc, gbc);
    kernels::LayerNormBackward::cuda(on_gpu(gy), on_gpu(x), on_gpu(w), on_gpu(mc), on_gpu(rc), gxg, gwg, gbg);
    check_close(gxg, gxc, kRows, what + " grad_x");
    check_close(gwg, gwc, kSums, what + " grad_weight");
    check_close(gbg, gbc, kSums, what + " grad_bias");

    // Only some gradients wanted.
    Tensor none_x, none_b;
    Tensor gw2c = Tensor::zeros({cs.cols}), gw2g = Tensor::zeros({cs.cols}, DType::F32, kGpu);
    kernels::LayerNormBackward::cpu(gy, x, w, mc, rc, none_x, gw2c, none_b);
    kernels::LayerNormBackward::cuda(on_gpu(gy), on_gpu(x), on_gpu(w), on_gpu(mc), on_gpu(rc), none_x, gw2g, none_b);
    check_close(gw2g, gw2c, kSums, what + " grad_weight alone");
  }
}

// ---------------------------------------------------------------------------------------------------
// Embedding, cross-entropy

TEST_CASE("cuda parity: embedding forward and backward, int32 and int64 ids", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(13);
  const int64_t vocab = 50;
  for (int64_t dim : {int64_t(7), int64_t(64), int64_t(33), int64_t(768)}) {
    for (int64_t n : {int64_t(1), int64_t(33), int64_t(257)}) {
      for (DType id_type : {DType::I32, DType::I64}) {
        std::vector<int64_t> id_values(static_cast<size_t>(n));
        for (auto& v : id_values) v = static_cast<int64_t>(gen.below(vocab));  // repeats are likely
        Tensor ids = Tensor::from_vector<int64_t>(id_values, {n}).to(id_type);
        Tensor w = rand_cpu({vocab, dim}, gen);
        Tensor oc = Tensor::empty({n, dim}), og = poisoned({n, dim});
        kernels::EmbeddingForward::cpu(w, ids, oc);
        kernels::EmbeddingForward::cuda(on_gpu(w), on_gpu(ids), og);
        check_close(og, oc, kExact, "embedding_forward dim " + std::to_string(dim));

        Tensor go = rand_cpu({n, dim}, gen);
        Tensor gwc = rand_cpu({vocab, dim}, gen);
        Tensor gwg = on_gpu(gwc);
        kernels::EmbeddingBackward::cpu(ids, go, gwc);
        kernels::EmbeddingBackward::cuda(on_gpu(ids), on_gpu(go), gwg);
        check_close(gwg, gwc, kSums, "embedding_backward dim " + std::to_string(dim));
      }
    }
  }
}

TEST_CASE("cuda parity: a compact embedding's lookup, every format, int32 and int64 ids", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(15);
  const int64_t vocab = 70;
  for (QuantFormat format : {QuantFormat::BF16, QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4}) {
    for (int64_t dim : {int64_t(64), int64_t(768)}) {
      const QuantizedWeight w = quantize_weight(rand_cpu({vocab, dim}, gen), format, format == QuantFormat::NF4);
      const QuantizedWeight wg = quantized_to(w, kGpu);
      for (int64_t n : {int64_t(1), int64_t(33), int64_t(257)}) {
        for (DType id_type : {DType::I32, DType::I64}) {
          std::vector<int64_t> id_values(static_cast<size_t>(n));
          for (auto& v : id_values) v = static_cast<int64_t>(gen.below(vocab));
          id_values.back() = vocab - 1;
          const Tensor ids = Tensor::from_vector<int64_t>(id_values, {n}).to(id_type);
          Tensor oc = Tensor::empty({n, dim}), og = poisoned({n, dim});
          kernels::QuantizedGatherRows::cpu(w, ids, oc);
          kernels::QuantizedGatherRows::cuda(wg, on_gpu(ids), og);
          check_close(og, oc, kExact, fmt::format("quantized_gather_rows {} dim {}", quant_format_name(format), dim));
        }
      }
      // An id out of range: refused, nothing written.
      Tensor og = poisoned({1, dim});
      CHECK_THROWS_WITH(kernels::QuantizedGatherRows::cuda(wg, on_gpu(Tensor::from_vector<int64_t>({vocab}, {1})), og),
                        Catch::Contains("out of range"));
    }
  }
}

TEST_CASE("cuda: an id or target out of range is a lora::Error and changes nothing", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(14);
  Tensor w = on_gpu(rand_cpu({10, 8}, gen));
  Tensor out = Tensor::empty({3, 8}, DType::F32, kGpu);
  Tensor bad_high = Tensor::from_vector<int64_t>({1, 10, 2}, {3}, kGpu);
  Tensor bad_low = Tensor::from_vector<int32_t>({1, 2, -1}, {3}, kGpu);
  REQUIRE_THROWS_AS(kernels::EmbeddingForward::cuda(w, bad_high, out), Error);
  REQUIRE_THROWS_WITH(kernels::EmbeddingForward::cuda(w, bad_low, out), Catch::Contains("-1") && Catch::Contains("10"));
  Tensor gw = Tensor::zeros({10, 8}, DType::F32, kGpu);
  REQUIRE_THROWS_AS(kernels::EmbeddingBackward::cuda(bad_high, on_gpu(rand_cpu({3, 8}, gen)), gw), Error);
  CHECK(gpu().sum_squares(gw) == 0.0);
  // The device is still usable after the error.
  Tensor good = Tensor::from_vector<int64_t>({0, 9, 9}, {3}, kGpu);
  kernels::EmbeddingForward::cuda(w, good, out);
  check_close(out.narrow_rows(1, 1), w.narrow_rows(9, 1).to(Device::cpu()).view({1, 8}), kExact,
              "embedding after error");
}

TEST_CASE("cuda parity: cross-entropy forward and backward with ignore_index", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(15);
  const int64_t ignore = -100;
  struct Case {
    int64_t rows, vocab;
  };
  const std::vector<Case> cases = {{1, 7}, {33, 257}, {7, 1000}, {5, 5000}, {3, 50257}, {300, 33}};
  for (const Case& cs : cases) {
    for (DType tt : {DType::I64, DType::I32}) {
      std::vector<int64_t> tv(static_cast<size_t>(cs.rows));
      for (size_t i = 0; i < tv.size(); ++i) {
        tv[i] = (i % 5 == 3) ? ignore : static_cast<int64_t>(gen.below(cs.vocab));
      }
      Tensor targets = Tensor::from_vector<int64_t>(tv, {cs.rows}).to(tt);
      Tensor logits = rand_cpu({cs.rows, cs.vocab}, gen, -4.0, 4.0);
      const std::string what = "cross_entropy " + shape_str(logits.shape());
      Tensor lc = Tensor::empty({cs.rows}), sc = Tensor::empty({cs.rows});
      Tensor lg = poisoned({cs.rows}), sg = poisoned({cs.rows});
      kernels::CrossEntropyForward::cpu(logits, targets, ignore, lc, sc);
      kernels::CrossEntropyForward::cuda(on_gpu(logits), on_gpu(targets), ignore, lg, sg);
      check_close(lg, lc, kRows, what + " losses");
      check_close(sg, sc, kRows, what + " lse");

      Tensor grad_loss = Tensor::from_vector<float>({0.37f}, {1});
      const double scale = 1.0 / static_cast<double>(cs.rows);
      Tensor gc = Tensor::empty(logits.shape()), gg = poisoned(logits.shape());
      kernels::CrossEntropyBackward::cpu(logits, targets, sc, grad_loss, scale, ignore, gc);
      kernels::CrossEntropyBackward::cuda(on_gpu(logits), on_gpu(targets), on_gpu(sc), on_gpu(grad_loss), scale, ignore,
                                          gg);
      check_close(gg, gc, kRows, what + " grad");
    }
  }
  // A target outside [0, V) that is not ignore_index.
  Tensor logits = on_gpu(rand_cpu({2, 5}, gen));
  Tensor bad = Tensor::from_vector<int64_t>({1, 5}, {2}, kGpu);
  Tensor losses = Tensor::empty({2}, DType::F32, kGpu), lse = Tensor::empty({2}, DType::F32, kGpu);
  REQUIRE_THROWS_AS(kernels::CrossEntropyForward::cuda(logits, bad, ignore, losses, lse), Error);
  Tensor grad = Tensor::empty({2, 5}, DType::F32, kGpu);
  REQUIRE_THROWS_AS(
      kernels::CrossEntropyBackward::cuda(logits, bad, lse, Tensor::ones({1}, DType::F32, kGpu), 1.0, ignore, grad),
      Error);
}

// ---------------------------------------------------------------------------------------------------
// Dropout

TEST_CASE("cuda parity: dropout keeps exactly the CPU's elements", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(16);
  for (int64_t n : kSizes) {
    for (double p : {0.0, 0.1, 0.5, 0.9}) {
      for (uint64_t seed : {uint64_t(0), uint64_t(12345)}) {
        Tensor x = rand_cpu({n}, gen, 0.5, 1.5);  // nonzero: a zero output means a dropped element
        Tensor yc = Tensor::empty({n}), yg = poisoned({n});
        kernels::DropoutMask::cpu(x, yc, p, seed);
        kernels::DropoutMask::cuda(on_gpu(x), yg, p, seed);
        check_close(yg, yc, kExact, "dropout_forward p " + std::to_string(p));
        Tensor gxc = Tensor::empty({n}), gxg = poisoned({n});
        kernels::DropoutMask::cpu(x, gxc, p, seed);
        kernels::DropoutMask::cuda(on_gpu(x), gxg, p, seed);
        check_close(gxg, gxc, kExact, "dropout_backward p " + std::to_string(p));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Attention

TEST_CASE("cuda parity: causal attention, forward and backward, grouped-query included", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(17);
  struct Case {
    Shape q;
    int64_t kv_heads;
  };
  const std::vector<Case> cases = {{{1, 1, 1, 8}, 1},   {{2, 3, 7, 16}, 3},   {{1, 2, 33, 8}, 2},
                                   {{2, 2, 65, 32}, 2}, {{1, 1, 257, 64}, 1}, {{1, 2, 1100, 16}, 2},
                                   {{2, 4, 65, 32}, 2}, {{1, 6, 257, 64}, 1}, {{2, 8, 33, 16}, 2}};
  for (const Case& cs : cases) {
    const Shape& s = cs.q;
    const Shape kv{s[0], cs.kv_heads, s[2], s[3]};
    const std::string what = "attention " + shape_str(s) + " on " + std::to_string(cs.kv_heads) + " kv heads";
    const double scale = 1.0 / std::sqrt(static_cast<double>(s[3]));
    const Shape lse_shape{s[0], s[1], s[2]};
    Tensor q = rand_cpu(s, gen), k = rand_cpu(kv, gen), v = rand_cpu(kv, gen);
    Tensor qg = on_gpu(q), kg = on_gpu(k), vg = on_gpu(v);
    Tensor oc = Tensor::empty(s), lc = Tensor::empty(lse_shape);
    Tensor og = poisoned(s), lg = poisoned(lse_shape);
    kernels::AttentionForward::cpu(q, k, v, Tensor(), scale, oc, lc);
    kernels::AttentionForward::cuda(qg, kg, vg, Tensor(), scale, og, lg);
    check_close(og, oc, kAttention, what + " out");
    check_close(lg, lc, kAttention, what + " lse");

    Tensor go = rand_cpu(s, gen);
    Tensor gqc = Tensor::empty(s), gkc = Tensor::empty(kv), gvc = Tensor::empty(kv);
    Tensor gqg = poisoned(s), gkg = poisoned(kv), gvg = poisoned(kv);
    kernels::AttentionBackward::cpu(q, k, v, Tensor(), oc, lc, go, scale, gqc, gkc, gvc);
    kernels::AttentionBackward::cuda(qg, kg, vg, Tensor(), on_gpu(oc), on_gpu(lc), on_gpu(go), scale, gqg, gkg, gvg);
    check_close(gqg, gqc, kAttention, what + " grad_q");
    check_close(gkg, gkc, kAttention, what + " grad_k");
    check_close(gvg, gvc, kAttention, what + " grad_v");
  }
}

TEST_CASE("cuda parity: causal attention over packed segments, forward and backward", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(23);
  // Rows of T = 70 tokens cut into segments of random lengths (1 to 40), grouped-query and not.
  for (const auto& [q_shape, kv_heads] :
       std::vector<std::pair<Shape, int64_t>>{{{2, 4, 70, 16}, 2}, {{3, 2, 70, 32}, 2}}) {
    const int64_t B = q_shape[0], T = q_shape[2];
    std::vector<int32_t> segments(static_cast<size_t>(B * T));
    for (int64_t b = 0; b < B; ++b) {
      int32_t id = 0;
      for (int64_t t = 0, left = 0; t < T; ++t, --left) {
        if (left == 0) left = 1 + static_cast<int64_t>(gen.below(40)), ++id;
        segments[static_cast<size_t>(b * T + t)] = id;
      }
    }
    const Tensor key_start = Tensor::from_vector(nn::segment_key_starts(segments, B, T), {B, T});
    const Shape kv{B, kv_heads, T, q_shape[3]}, lse_shape{B, q_shape[1], T};
    const std::string what = "segmented attention " + shape_str(q_shape);
    const double scale = 0.25;
    Tensor q = rand_cpu(q_shape, gen), k = rand_cpu(kv, gen), v = rand_cpu(kv, gen), go = rand_cpu(q_shape, gen);
    Tensor oc = Tensor::empty(q_shape), lc = Tensor::empty(lse_shape), og = poisoned(q_shape), lg = poisoned(lse_shape);
    kernels::AttentionForward::cpu(q, k, v, key_start, scale, oc, lc);
    kernels::AttentionForward::cuda(on_gpu(q), on_gpu(k), on_gpu(v), on_gpu(key_start), scale, og, lg);
    check_close(og, oc, kAttention, what + " out");
    check_close(lg, lc, kAttention, what + " lse");
    Tensor gqc = Tensor::empty(q_shape), gkc = Tensor::empty(kv), gvc = Tensor::empty(kv);
    Tensor gqg = poisoned(q_shape), gkg = poisoned(kv), gvg = poisoned(kv);
    kernels::AttentionBackward::cpu(q, k, v, key_start, oc, lc, go, scale, gqc, gkc, gvc);
    kernels::AttentionBackward::cuda(on_gpu(q), on_gpu(k), on_gpu(v), on_gpu(key_start), on_gpu(oc), on_gpu(lc),
                                     on_gpu(go), scale, gqg, gkg, gvg);
    check_close(gqg, gqc, kAttention, what + " grad_q");
    check_close(gkg, gkc, kAttention, what + " grad_k");
    check_close(gvg, gvc, kAttention, what + " grad_v");
  }
}

// ---------------------------------------------------------------------------------------------------
// RMS norm, rotary embedding

TEST_CASE("cuda parity: rms norm, forward and backward", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(20);
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 7}, {33, 257}, {5, 3000}, {2048, 768}}) {
    const Shape xs{rows, cols};
    const std::string what = "rms_norm " + shape_str(xs);
    Tensor x = rand_cpu(xs, gen, -2.0, 3.0), w = rand_cpu({cols}, gen, 0.5, 1.5);
    Tensor yc = Tensor::empty(xs), rc = Tensor::empty({rows});
    Tensor yg = poisoned(xs), rg = poisoned({rows});
    kernels::RmsNormForward::cpu(x, w, 1e-6, yc, rc);
    kernels::RmsNormForward::cuda(on_gpu(x), on_gpu(w), 1e-6, yg, rg);
    check_close(yg, yc, kRows, what + " y");
    check_close(rg, rc, kRows, what + " rstd");

    Tensor gy = rand_cpu(xs, gen);
    Tensor gxc = Tensor::empty(xs), gxg = poisoned(xs);
    Tensor gwc = rand_cpu({cols}, gen), gwg = on_gpu(gwc);  // accumulated into
    kernels::RmsNormBackward::cpu(gy, x, w, rc, gxc, gwc);
    kernels::RmsNormBackward::cuda(on_gpu(gy), on_gpu(x), on_gpu(w), on_gpu(rc), gxg, gwg);
    check_close(gxg, gxc, kRows, what + " grad_x");
    check_close(gwg, gwc, kSums, what + " grad_weight");
  }
}

TEST_CASE("cuda parity: rotary embedding, both directions", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(21);
  for (const Shape& s : {Shape{1, 1, 1, 2}, Shape{2, 33, 4, 16}, Shape{1, 257, 3, 64}}) {
    const Shape table{s[1], s[3] / 2};
    Tensor x = rand_cpu(s, gen), c = rand_cpu(table, gen), sn = rand_cpu(table, gen);
    for (bool inverse : {false, true}) {
      Tensor yc = Tensor::empty(s), yg = poisoned(s);
      kernels::Rope::cpu(x, c, sn, inverse, yc);
      kernels::Rope::cuda(on_gpu(x), on_gpu(c), on_gpu(sn), inverse, yg);
      check_close(yg, yc, kElementwise, std::string(inverse ? "rope inverse " : "rope ") + shape_str(s));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Optimizers

TEST_CASE("cuda parity: adam and adamw steps", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(18);
  for (int64_t n : kSizes) {
    for (bool decoupled : {true, false}) {
      Tensor p = rand_cpu({n}, gen), m = Tensor::zeros({n}), v = Tensor::zeros({n});
      Tensor pg = on_gpu(p), mg = on_gpu(m), vg = on_gpu(v);
      AdamStep hp;
      hp.lr = 1e-2, hp.weight_decay = 0.1, hp.decoupled = decoupled;
      for (int64_t step = 1; step <= 3; ++step) {
        hp.step = step;
        Tensor g = rand_cpu({n}, gen);
        kernels::AdamUpdate::cpu(p, g, m, v, hp);
        kernels::AdamUpdate::cuda(pg, on_gpu(g), mg, vg, hp);
      }
      const std::string what = decoupled ? "adamw" : "adam (L2)";
      check_close(pg, p, kElementwise, what + " param");
      check_close(mg, m, kElementwise, what + " exp_avg");
      check_close(vg, v, kElementwise, what + " exp_avg_sq");
    }
  }
}

TEST_CASE("cuda parity: sgd steps with and without momentum", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Generator gen(19);
  for (int64_t n : kSizes) {
    for (double momentum : {0.0, 0.9}) {
      for (bool nesterov : {false, true}) {
        if (nesterov && momentum == 0.0) continue;
        Tensor p = rand_cpu({n}, gen), buf = Tensor::zeros({n});
        Tensor pg = on_gpu(p), bufg = on_gpu(buf);
        Tensor none_c, none_g;
        SgdStep hp;
        hp.lr = 0.05, hp.momentum = momentum, hp.dampening = 0.1, hp.weight_decay = 0.01, hp.nesterov = nesterov;
        for (int step = 0; step < 3; ++step) {
          hp.first_step = step == 0;
          Tensor g = rand_cpu({n}, gen);
          kernels::SgdUpdate::cpu(p, g, momentum != 0.0 ? buf : none_c, hp);
          kernels::SgdUpdate::cuda(pg, on_gpu(g), momentum != 0.0 ? bufg : none_g, hp);
        }
        check_close(pg, p, kElementwise, "sgd param");
        if (momentum != 0.0) check_close(bufg, buf, kElementwise, "sgd momentum buffer");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Errors

TEST_CASE("cuda: unsupported dtypes, devices and shapes are a lora::Error", "[cuda]") {
  LORA_REQUIRE_CUDA_DEVICE();
  Tensor d = Tensor::zeros({4}, DType::F64, kGpu);
  Tensor f = Tensor::zeros({4}, DType::F32, kGpu);
  REQUIRE_THROWS_WITH(gpu().unary(UnaryOp::Exp, d, d), Catch::Contains("unary") && Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(kernels::SoftmaxForward::cuda(d, d, /*log=*/false),
                      Catch::Contains("softmax_forward") && Catch::Contains("float64"));
  Tensor on_cpu = Tensor::zeros({4});
  REQUIRE_THROWS_AS(gpu().binary(BinaryOp::Add, f, on_cpu, f), Error);
  Tensor wrong = Tensor::zeros({5}, DType::F32, kGpu);
  REQUIRE_THROWS_AS(gpu().binary(BinaryOp::Add, f, wrong, f), Error);
  REQUIRE_THROWS_AS(gpu().unary(UnaryOp::Neg, f, wrong), Error);
}

#endif  // LORA_HAVE_CUDA
