// bench_cuda: achieved TFLOP/s of the CUDA backend's matmul (cuBLAS, TF32 off and on) at GPT-2 small
// shapes, and of causal attention forward and backward, on one GPU. Figures, not pass/fail.
//
//   bench_cuda [--repeats N] [--batch B] [--seq T]
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <vector>

#include "backends/backend.h"
#include "backends/kernels/attention.h"
#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#endif

using namespace lora;

#if defined(LORA_HAVE_CUDA)
namespace {

// Median seconds of `repeats` calls of f after one warm-up call, synchronising around each.
template <typename F>
double median_seconds(int repeats, F&& f) {
  f();
  cuda_synchronize();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    cuda_synchronize();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace
#endif

int main(int argc, char** argv) {
  int repeats = 10;
  int64_t batch = 8, seq = 1024;
  CLI::App app{"Achieved TFLOP/s of the CUDA backend's gemm and attention kernels."};
  app.add_option("--repeats", repeats, "timed repeats (median)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "batch for the GPT-2 shapes")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seq", seq, "sequence length")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
#if !defined(LORA_HAVE_CUDA)
  fmt::print(stderr, "bench_cuda: this build has no CUDA backend (configure with the CUDA toolkit present)\n");
  return 2;
#else
  try {
    if (!cuda_device_available()) {
      fmt::print(stderr, "bench_cuda: no CUDA device\n");
      return 2;
    }
    const Device gpu = Device::cuda(0);
    Backend& be = backend_for(gpu);
    Generator gen(1);
    fmt::print("device: {}\n", cuda_device_name(0));
    fmt::print("{:<34} {:>10} {:>12} {:>12}\n", "gemm C[m,n] = A[m,k] B[k,n]", "ms", "TFLOP/s", "TF32 TFLOP/s");
    const int64_t rows = batch * seq;
    const std::vector<std::array<int64_t, 3> > shapes = {{4096, 4096, 4096}, {rows, 2304, 768}, {rows, 768, 768},
                                                         {rows, 3072, 768},  {rows, 768, 3072}, {rows, 50257, 768}};
    for (const auto& [m, n, k] : shapes) {
      Tensor a = Tensor::randn({m, k}, gen, 0, 1, DType::F32, gpu),
             b = Tensor::randn({k, n}, gen, 0, 1, DType::F32, gpu);
      Tensor c = Tensor::empty({m, n}, DType::F32, gpu);
      GemmShape s;
      s.m = m, s.n = n, s.k = k;
      double t[2];
      for (int tf32 = 0; tf32 < 2; ++tf32) {
        set_cuda_allow_tf32(tf32 == 1);
        t[tf32] = median_seconds(repeats, [&] { be.gemm(a, b, c, s); });
      }
      set_cuda_allow_tf32(false);
      const double flops = 2.0 * m * n * k;
      fmt::print("{:<34} {:>10.3f} {:>12.1f} {:>12.1f}\n", fmt::format("{} x {} x {}", m, n, k), t[0] * 1e3,
                 flops / t[0] / 1e12, flops / t[1] / 1e12);
    }
    // Causal attention, GPT-2 small heads: [B, 12, T, 64]. Dense-equivalent FLOPs: forward 4 B H T^2 D
    // (two products), backward 8 B H T^2 D (four products, with the recomputed scores 10); the causal mask
    // halves the useful work.
    const int64_t H = 12, D = 64;
    Tensor q = Tensor::randn({batch, H, seq, D}, gen, 0, 1, DType::F32, gpu), k = q.clone(), v = q.clone();
    Tensor out = Tensor::empty(q.shape(), DType::F32, gpu), lse = Tensor::empty({batch, H, seq}, DType::F32, gpu);
    Tensor gq = Tensor::empty(q.shape(), DType::F32, gpu), gk = gq.clone(), gv = gq.clone(), gout = q.clone();
    const double scale = 0.125;
    const double fwd =
        median_seconds(repeats, [&] { kernels::AttentionForward::cuda(q, k, v, Tensor(), scale, out, lse); });
    const double bwd = median_seconds(
        repeats, [&] { kernels::AttentionBackward::cuda(q, k, v, Tensor(), out, lse, gout, scale, gq, gk, gv); });
    const double dense = 4.0 * batch * H * seq * seq * D;
    fmt::print("\n{:<34} {:>10} {:>12}\n", "causal attention [B,12,T,64]", "ms", "TFLOP/s*");
    fmt::print("{:<34} {:>10.3f} {:>12.1f}\n", "forward", fwd * 1e3, dense / fwd / 1e12);
    fmt::print("{:<34} {:>10.3f} {:>12.1f}\n", "backward", bwd * 1e3, 2.5 * dense / bwd / 1e12);
    fmt::print("* dense-equivalent FLOPs (4 B H T^2 D forward, 10 B H T^2 D backward), not halved for the mask\n");
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
#endif
}
