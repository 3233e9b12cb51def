// bench_fused: each fused op against the same computation composed from existing ops (the test of
// docs/adding-an-op.md: a fused kernel earns its place with a figure): forward + backward time, and the bytes
// the tape saves for backward, at Llama-like shapes.
//
//   bench_fused                          CPU, median of 10 timed runs after warm-up
//   bench_fused --device cuda --repeats 20
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <vector>

#include "autograd/ops.h"
#include "backends/backend.h"
#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#endif

using namespace lora;
using Clock = std::chrono::steady_clock;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

namespace {

void synchronize(Device device) {
#if defined(LORA_HAVE_CUDA)
  if (device.is_cuda()) cuda_synchronize(device.index);
#endif
}

struct Figures {
  double ms;
  int64_t saved_bytes;  // activations the tape holds at the end of the forward pass
};

// Forward, then backward with a ones seed; the median of `repeats` timed runs after two warm-up runs.
Figures measure(const Fn& f, const std::vector<Tensor>& inputs, int repeats) {
  const Device device = inputs[0].device();
  auto& tracker = MemoryTracker::instance();
  Figures fig{0, 0};
  std::vector<double> times;
  for (int r = 0; r < repeats + 2; ++r) {
    for (Tensor t : inputs) t.set_grad(Tensor());  // a handle: the inputs themselves lose their gradients
    synchronize(device);
    const int64_t act0 = tracker.live(MemoryCategory::Activation, device);
    const auto start = Clock::now();
    Tensor y = f(inputs);
    fig.saved_bytes = tracker.live(MemoryCategory::Activation, device) - act0;
    backward(y, Tensor::ones(y.shape(), y.dtype(), device));
    synchronize(device);
    if (r >= 2) times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  fig.ms = times[times.size() / 2] * 1e3;
  return fig;
}

void row(const char* name, const Figures& fused, const Figures& composed) {
  fmt::print("{:<44} {:>9.3f} {:>11.3f} {:>7.2f}x {:>10.2f} {:>12.2f}\n", name, fused.ms, composed.ms,
             composed.ms / fused.ms, fused.saved_bytes / 1048576.0, composed.saved_bytes / 1048576.0);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 10;
  std::string device_name = "cpu";
  int64_t batch = 4, seq = 256;
  CLI::App app{"Fused ops against the same computation composed from existing ops: time and saved bytes."};
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_option("--repeats", repeats, "timed repeats (median)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "batch")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seq", seq, "sequence length")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const Device device = Device::parse(device_name);
    Generator gen(1);
    const auto leaf = [&](const Shape& s) {
      return Tensor::randn(s, gen, 0.0, 1.0, DType::F32, device).set_requires_grad(true);
    };
    fmt::print("device {}, {} threads, batch {} x seq {}, forward + backward, median of {}\n", device.str(),
               num_threads(), batch, seq, repeats);
    fmt::print("{:<44} {:>9} {:>11} {:>8} {:>10} {:>12}\n", "op", "fused ms", "composed ms", "speedup", "saved MiB",
               "composed MiB");

    // RMSNorm over C = 2048 (a Llama hidden state).
    const int64_t C = 2048;
    const std::vector<Tensor> norm_in = {leaf({batch, seq, C}), leaf({C})};
    row("rms_norm [B, T, 2048]", measure([](const auto& in) { return ops::rms_norm(in[0], in[1]); }, norm_in, repeats),
        measure(
            [](const auto& in) { return in[0] / ops::sqrt(ops::mean(ops::square(in[0]), -1, true) + 1e-6) * in[1]; },
            norm_in, repeats));

    // SwiGLU's gating over SmolLM2-135M's intermediate size.
    const int64_t I = 1536;
    const std::vector<Tensor> glu_in = {leaf({batch, seq, I}), leaf({batch, seq, I})};
    row("swiglu [B, T, 1536]", measure([](const auto& in) { return ops::swiglu(in[0], in[1]); }, glu_in, repeats),
        measure([](const auto& in) { return ops::silu(in[0]) * in[1]; }, glu_in, repeats));

    // RoPE on 32 heads of 64.
    const int64_t H = 32, D = 64, half = D / 2;
    std::vector<float> c(seq * half), s(seq * half);
    for (int64_t t = 0; t < seq; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(t) * std::pow(10000.0, -2.0 * static_cast<double>(i) / D);
        c[t * half + i] = static_cast<float>(std::cos(angle));
        s[t * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    const std::vector<Tensor> rope_in = {leaf({batch, seq, H, D}), Tensor::from_vector(c, {seq, half}, device),
                                         Tensor::from_vector(s, {seq, half}, device)};
    row("rope [B, T, 32, 64]", measure([](const auto& in) { return ops::rope(in[0], in[1], in[2]); }, rope_in, repeats),
        measure(
            [](const auto& in) {
              const int64_t T = in[0].size(1), h = in[0].size(3) / 2;
              Tensor x1 = ops::slice(in[0], 3, 0, h), x2 = ops::slice(in[0], 3, h, 2 * h);
              Tensor cs = ops::reshape(in[1], {T, 1, h}), sn = ops::reshape(in[2], {T, 1, h});
              return ops::concat({x1 * cs - x2 * sn, x2 * cs + x1 * sn}, 3);
            },
            rope_in, repeats));

    // Grouped-query attention, 32 query heads on 8 kv heads, against repeating the kv heads.
    const int64_t Hkv = 8;
    const std::vector<Tensor> att_in = {leaf({batch, H, seq, D}), leaf({batch, Hkv, seq, D}),
                                        leaf({batch, Hkv, seq, D})};
    row("causal_attention, 32 heads on 8 kv heads",
        measure([](const auto& in) { return ops::causal_attention(in[0], in[1], in[2]); }, att_in, repeats),
        measure(
            [](const auto& in) {
              const int64_t G = in[0].size(1) / in[1].size(1);
              std::vector<Tensor> ks, vs;
              for (int64_t h = 0; h < in[0].size(1); ++h) {
                ks.push_back(ops::slice(in[1], 1, h / G, h / G + 1));
                vs.push_back(ops::slice(in[2], 1, h / G, h / G + 1));
              }
              return ops::causal_attention(in[0], ops::concat(ks, 1), ops::concat(vs, 1));
            },
            att_in, repeats));
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
