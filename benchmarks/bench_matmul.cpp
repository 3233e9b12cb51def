// bench_matmul: GFLOP/s of the framework's matmul path (ops::matmul, ops::linear, linear forward+backward)
// next to raw cblas_sgemm at GPT-2 small shapes, with the framework's overhead as a time ratio.
//
//   bench_matmul                     all cores, median of 10 timed runs after warm-up
//   bench_matmul --threads 1 --repeats 20
#include <CLI/CLI.hpp>
#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "autograd/ops.h"
#include "backends/backend.h"
#include "core/error.h"

using lora::Tensor;
using Clock = std::chrono::steady_clock;

namespace {

// Median seconds of `repeats` timed calls after two untimed warm-up calls.
double median_seconds(int repeats, const std::function<void()>& f) {
  f();
  f();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double gflops(double flops, double seconds) { return flops / seconds / 1e9; }

// C [m, n] = op(A) op(B) in row-major float32, as one raw OpenBLAS call.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), 1.0f, a, int(trans_a ? m : k), b, int(trans_b ? k : n), 0.0f, c, int(n));
}

struct LinearShape {
  int64_t rows, in, out;  // x [rows, in], weight [out, in] (PyTorch's Linear layout), y [rows, out]
};

void bench_linear(const LinearShape& s, int repeats, lora::Generator& gen) {
  const Tensor x = Tensor::randn({s.rows, s.in}, gen);
  const Tensor w = Tensor::randn({s.out, s.in}, gen, 0.0, 0.02);
  const Tensor gy = Tensor::randn({s.rows, s.out}, gen);
  const double flops = 2.0 * double(s.rows) * double(s.in) * double(s.out);

  // Forward: one gemm, raw and through the framework (which allocates the output each call).
  Tensor y = Tensor::empty({s.rows, s.out});
  const double t_raw = median_seconds(repeats, [&] {
    sgemm(false, true, s.rows, s.out, s.in, x.data<float>(), w.data<float>(), y.data<float>());
  });
  const double t_matmul = median_seconds(repeats, [&] { y = lora::ops::matmul(x, w, false, true); });
  const double t_linear = median_seconds(repeats, [&] { y = lora::ops::linear(x, w); });

  // Forward + backward: y = x W^T, dx = dy W, dW = dy^T x (three gemms).
  Tensor gx = Tensor::empty({s.rows, s.in}), gw = Tensor::empty({s.out, s.in});
  const double t_raw3 = median_seconds(repeats, [&] {
    sgemm(false, true, s.rows, s.out, s.in, x.data<float>(), w.data<float>(), y.data<float>());
    sgemm(false, false, s.rows, s.in, s.out, gy.data<float>(), w.data<float>(), gx.data<float>());
    sgemm(true, false, s.out, s.in, s.rows, gy.data<float>(), x.data<float>(), gw.data<float>());
  });
  Tensor xg = x.clone(), wg = w.clone();
  xg.set_requires_grad(true);
  wg.set_requires_grad(true);
  const double t_fb = median_seconds(repeats, [&] {
    xg.set_grad(Tensor());  // gradients are allocated afresh each step, as after zero_grad()
    wg.set_grad(Tensor());
    lora::backward(lora::ops::linear(xg, wg), gy);
  });

  fmt::print("{:>5} x {:>4} -> {:>4} | {:7.1f} {:7.1f} {:7.1f}  {:5.2f}x | {:7.1f} {:7.1f}  {:5.2f}x\n", s.rows, s.in,
             s.out, gflops(flops, t_raw), gflops(flops, t_matmul), gflops(flops, t_linear), t_linear / t_raw,
             gflops(3 * flops, t_raw3), gflops(3 * flops, t_fb), t_fb / t_raw3);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the framework's matmul path against raw cblas_sgemm at GPT-2 small shapes."};
  int repeats = 10, threads = lora::num_threads();
  app.add_option("--repeats", repeats, "Timed runs per measurement (the median is reported)")
      ->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--threads", threads, "Threads for OpenBLAS and OpenMP")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  try {
    lora::set_num_threads(threads);
    lora::Generator gen(0);
    fmt::print("threads: {}, median of {} runs, float32, GFLOP/s (ratio = framework time / sgemm time)\n\n", threads,
               repeats);
    fmt::print("{:^20} | {:^31} | {:^24}\n", "x [rows, in] W^T", "forward", "forward + backward");
    fmt::print("{:>5}   {:>4}    {:>4} | {:>7} {:>7} {:>7}  {:>6} | {:>7} {:>7}  {:>6}\n", "rows", "in", "out", "sgemm",
               "matmul", "linear", "ratio", "3 sgemm", "linear", "ratio");
    fmt::print("{:-<20}-+-{:-<31}-+-{:-<24}\n", "", "", "");
    for (int64_t rows : {256, 1024}) {
      for (auto [in, out] : {std::pair<int64_t, int64_t>{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}}) {
        bench_linear({rows, in, out}, repeats, gen);
      }
    }

    // The machine's ceiling: a large square sgemm.
    const int64_t n = 2048;
    const Tensor a = Tensor::randn({n, n}, gen), b = Tensor::randn({n, n}, gen);
    Tensor c = Tensor::empty({n, n});
    const double t = median_seconds(repeats, [&] {
      sgemm(false, false, n, n, n, a.data<float>(), b.data<float>(), c.data<float>());
    });
    fmt::print("\nceiling: sgemm {}^3: {:.1f} GFLOP/s\n", n, gflops(2.0 * double(n) * n * n, t));
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
