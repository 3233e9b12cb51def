// bench_matmul: GFLOP/s of the framework's matmul path (ops::matmul, ops::linear, linear forward+backward)
// next to raw cblas_sgemm at GPT-2 small shapes, with the framework's overhead as a time ratio.
//
//   bench_matmul                     all cores, median of 10 timed runs after warm-up
//   bench_matmul --threads 1 --repeats 20
//   bench_matmul --skinny            x [m, 768] W^T for m = 1..32 with W [3072, 768] in each base format:
//                                    the skinny product (backends/cpu/skinny_matmul.h) against OpenBLAS
//                                    (on the f32 weight, or on dequantized tiles), over a ring of weights
//                                    4x the last-level cache so that every weight comes from memory: the
//                                    crossover kSkinnyCrossover is read from this table
//   bench_matmul --skinny --skinny-shape 576x1536 --formats f32
//                                    the same for W [576, 1536] (out x in; SmolLM2's down projection), f32 only
#include <cblas.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "backends/backend.h"
#include "backends/cpu/bandwidth_probe.h"
#include "backends/cpu/skinny_matmul.h"
#include "core/error.h"
#include "core/quantized.h"

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

double gflops(double flops, double seconds) {
  return flops / seconds / 1e9;
}

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
  const double t_raw = median_seconds(
      repeats, [&] { sgemm(false, true, s.rows, s.out, s.in, x.data<float>(), w.data<float>(), y.data<float>()); });
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

// The skinny product against BLAS for one base format, over `count` copies of a [out, in] weight (a ring
// larger than the last-level cache: each product reads its weight from memory, as decoding does).
void bench_skinny(lora::QuantFormat format, int64_t in, int64_t out, size_t ring_bytes, int repeats, double gbps,
                  lora::Generator& gen) {
  using namespace lora;
  const Tensor w32 = Tensor::randn({out, in}, gen, 0.0, 0.02);
  QuantizedWeight q;
  QuantizedView one{QuantFormat::F32, out,     in,      static_cast<const uint8_t*>(w32.raw_data()),
                    nullptr,          nullptr, nullptr, 0.0f};
  if (format != QuantFormat::F32) q = quantize_weight(w32, format, format == QuantFormat::NF4), one = host_view(q);
  const size_t bytes = format == QuantFormat::F32 ? w32.nbytes() : q.nbytes();
  const size_t count = std::max<size_t>(2, ring_bytes / bytes);
  // The ring: `count` copies of the weight's tensors (nf4's absmaxes are shared: they are 1/16 of its bytes).
  std::vector<std::vector<uint8_t>> ring(count);
  const size_t data_bytes = format == QuantFormat::F32 ? w32.nbytes() : q.data.nbytes();
  for (auto& r : ring) r.assign(one.data, one.data + data_bytes);
  size_t next = 0;
  auto view = [&] {
    QuantizedView v = one;
    v.data = ring[next].data();
    next = (next + 1) % count;
    return v;
  };
  const Tensor x = Tensor::randn({32, in}, gen);
  std::vector<float> y(static_cast<size_t>(32 * out)), tile(static_cast<size_t>(out * in));
  fmt::print("\n{} weight [{}, {}], {:.2f} MB, ring of {} ({:.0f} MB)\n", quant_format_name(format), out, in,
             static_cast<double>(bytes) / 1e6, count, static_cast<double>(bytes * count) / 1e6);
  fmt::print("{:>4} | {:>10} {:>8} {:>6} | {:>10} {:>8} | {:>7}\n", "m", "skinny us", "GB/s", "bound", "BLAS us",
             format == QuantFormat::F32 ? "GB/s" : "(deq.)", "BLAS/sk");
  for (int64_t m : {1, 2, 4, 8, 12, 16, 24, 32}) {
    double t_skinny = 0;
    if (m <= cpu::kSkinnyMaxRows) {
      t_skinny = median_seconds(repeats, [&] {
        cpu::SkinnyProduct p;
        p.x = x.data<float>(), p.m = m, p.ldx = in, p.w = view(), p.y = y.data(), p.ldy = out;
        cpu::skinny_matmul(p);
      });
    }
    const double t_blas = median_seconds(repeats, [&] {
      const QuantizedView v = view();
      const float* w = reinterpret_cast<const float*>(v.data);
      if (format != QuantFormat::F32) {  // the tile path: dequantize (threaded over rows), then sgemm
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < out; ++r) dequantize_span(v, r * in, (r + 1) * in, tile.data() + r * in);
        w = tile.data();
      }
      sgemm(false, true, m, out, in, x.data<float>(), w, y.data());
    });
    const double gb = static_cast<double>(bytes) / 1e9;
    if (m <= cpu::kSkinnyMaxRows) {
      fmt::print("{:>4} | {:>10.1f} {:>8.1f} {:>5.0f}% | {:>10.1f} {:>8.1f} | {:>6.2f}x\n", m, t_skinny * 1e6,
                 gb / t_skinny, 100 * gb / t_skinny / gbps, t_blas * 1e6, gb / t_blas, t_blas / t_skinny);
    } else {
      fmt::print("{:>4} | {:>10} {:>8} {:>6} | {:>10.1f} {:>8.1f} | {:>7}\n", m, "-", "-", "-", t_blas * 1e6,
                 gb / t_blas, "-");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the framework's matmul path against raw cblas_sgemm at GPT-2 small shapes."};
  int repeats = 10, threads = lora::num_threads();
  app.add_option("--repeats", repeats, "Timed runs per measurement (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--threads", threads, "Threads for OpenBLAS and OpenMP")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bool skinny = false;
  app.add_flag("--skinny", skinny, "The skinny product (m = 1..16) against BLAS in every base format");
  std::string skinny_shape = "3072x768";
  app.add_option("--skinny-shape", skinny_shape, "W's shape for --skinny, OUTxIN")->capture_default_str();
  std::vector<std::string> format_names = {"f32", "bf16", "q8_0", "q4_0", "nf4"};
  app.add_option("--formats", format_names, "Base formats for --skinny")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  int64_t skinny_out = 0, skinny_in = 0;
  {
    const size_t x = skinny_shape.find('x');
    try {
      if (x == std::string::npos) throw std::invalid_argument("no x");
      size_t used_out = 0, used_in = 0;
      skinny_out = std::stoll(skinny_shape.substr(0, x), &used_out);
      skinny_in = std::stoll(skinny_shape.substr(x + 1), &used_in);
      if (used_out != x || used_in != skinny_shape.size() - x - 1) throw std::invalid_argument("trailing text");
    } catch (const std::exception&) {
      skinny_out = skinny_in = 0;
    }
    if (skinny_out <= 0 || skinny_in <= 0 || skinny_in % 32 != 0) {
      fmt::print(stderr, "error: --skinny-shape '{}': expected OUTxIN, positive, IN a multiple of 32\n", skinny_shape);
      return 2;
    }
  }
  std::vector<lora::QuantFormat> formats;
  for (const std::string& name : format_names) {
    try {
      formats.push_back(lora::parse_quant_format(name, "--formats"));
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: {}\n", e.what());
      return 2;
    }
  }

  try {
    lora::set_num_threads(threads);
    lora::Generator gen(0);
    if (skinny) {
      const size_t ring = lora::cpu::default_probe_bytes();
      const auto bw = lora::cpu::measure_read_bandwidth(ring, 5);
      fmt::print(
          "threads {}, ISA {}, median of {} runs; streaming read of {:.0f} MB: {:.1f} GB/s (best of 5); "
          "bound = GB/s of weights read / that\n",
          threads, lora::cpu::isa_name(lora::cpu::detected_isa()), repeats, static_cast<double>(bw.bytes) / 1e6,
          bw.best_gbps);
      for (lora::QuantFormat f : formats) bench_skinny(f, skinny_in, skinny_out, ring, repeats, bw.best_gbps, gen);
      return 0;
    }
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
    const double t = median_seconds(
        repeats, [&] { sgemm(false, false, n, n, n, a.data<float>(), b.data<float>(), c.data<float>()); });
    fmt::print("\nceiling: sgemm {}^3: {:.1f} GFLOP/s\n", n, gflops(2.0 * double(n) * n * n, t));
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
