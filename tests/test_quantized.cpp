// A quantized frozen base: the formats' round trips, the NF4 table, the tiled matmul against the f32
// matmul on the dequantized weight, gradients through it, its bounded workspace, and the refusals.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/ops/quantized_linear.h"
#include "backends/cpu/skinny_matmul.h"
#include "backends/kernels/quantized_linear.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/lora/apply_lora.h"
#include "nn/quantized_linear.h"
#include "tests/op_cases.h"

using namespace lora;

namespace {

// A weight with rows of different scales (so per-row and per-block absmaxes differ) and a few zeros.
Tensor test_weight(int64_t rows, int64_t cols, uint64_t seed, DType dtype = DType::F32) {
  Generator gen(seed);
  Tensor w = Tensor::randn({rows, cols}, gen, 0.0, 1.0, DType::F64);
  double* p = w.data<double>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) p[r * cols + c] *= 0.02 * (1 + r % 5);
  }
  p[0] = 0.0;
  return w.to(dtype);
}

std::shared_ptr<const QuantizedWeight> quantized(const Tensor& w, QuantFormat f, bool dq = false) {
  return std::make_shared<const QuantizedWeight>(quantize_weight(w, f, dq));
}

// max |a - b| over all elements.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

}  // namespace

// The op's registered cases: float64 gradcheck of the input and bias, float32 against float64.
LORA_OP_CASES(quantized_linear_cases) {
  // nf4 at 70 columns (blocks straddle rows) and 64; the block formats need whole blocks of 32.
  static const auto w_nf4 = quantized(test_weight(7, 70, 1), QuantFormat::NF4, true);
  static const auto w_nf4_64 = quantized(test_weight(7, 64, 4), QuantFormat::NF4);
  static const auto w_q8 = quantized(test_weight(7, 64, 2), QuantFormat::Q8_0);
  static const auto w_q4 = quantized(test_weight(7, 96, 3), QuantFormat::Q4_0);
  for (const auto& [what, w] : {std::pair{"nf4, double-quantized", w_nf4}, std::pair{"nf4, 64 columns", w_nf4_64},
                                std::pair{"q8_0", w_q8}, std::pair{"q4_0", w_q4}}) {
    // The weight follows the inputs to their device (the CUDA parity run).
    const testing::OpFn f = [w = w](const testing::Inputs& in) {
      const auto on_device =
          in[0].device() == w->device() ? w : std::make_shared<const QuantizedWeight>(quantized_to(*w, in[0].device()));
      return ops::quantized_linear(in[0], on_device, in[1]);
    };
    const int64_t cols = w->cols;
    testing::gradcheck_case("quantized_linear", std::string(what) + ": input and bias train", f, [cols] {
      Generator gen(3);
      return testing::Inputs{testing::randn_leaf({2, 3, cols}, gen, DType::F64),
                             testing::randn_leaf({7}, gen, DType::F64)};
    });
    // 5 rows in f32: the CPU's skinny product, against float64 through dequantized tiles.
    testing::parity_case(
        "quantized_linear", what, f,
        [cols] {
          Generator gen(4);
          return testing::Inputs{testing::randn_leaf({5, cols}, gen, DType::F32),
                                 testing::randn_leaf({7}, gen, DType::F32)};
        },
        testing::kGemm);
  }
}

TEST_CASE("the nf4 codes are QLoRA's table", "[quantized]") {
  // Dettmers et al., 2023, Appendix E (NormalFloat4), as bitsandbytes ships it.
  const double paper[16] = {-1.0,
                            -0.6961928009986877,
                            -0.5250730514526367,
                            -0.39491748809814453,
                            -0.28444138169288635,
                            -0.18477343022823334,
                            -0.09105003625154495,
                            0.0,
                            0.07958029955625534,
                            0.16093020141124725,
                            0.24611230194568634,
                            0.33791524171829224,
                            0.44070982933044434,
                            0.5626170039176941,
                            0.7229568362236023,
                            1.0};
  for (int i = 0; i < 16; ++i) CHECK(kNf4Codes[i] == static_cast<float>(paper[i]));
}

TEST_CASE("quantize and dequantize round trip within each format's bound", "[quantized]") {
  const int64_t rows = 13, cols = 200;  // 2600 elements: blocks of 64 cross rows, the last block is partial
  const Tensor w = test_weight(rows, cols, 7);
  const std::vector<double> x = w.to_vector<double>();
  auto errors = [&](const QuantizedWeight& q) {
    REQUIRE(q.rows == rows);
    REQUIRE(q.cols == cols);
    return dequantize_weight(q).to_vector<double>();
  };
  SECTION("bf16: relative error at most 2^-8") {
    const auto d = errors(quantize_weight(w, QuantFormat::BF16));
    for (size_t i = 0; i < x.size(); ++i) REQUIRE(std::abs(d[i] - x[i]) <= std::abs(x[i]) * std::ldexp(1.0, -8));
  }
  // Per block of 32 (on a weight of 128 columns: rows must be whole blocks): at most half a step plus the fp16 rounding
  // of the scale (relative 2^-11, at most 127 or 8 steps).
  for (const auto [format, steps] : {std::pair{QuantFormat::Q8_0, 127.0}, std::pair{QuantFormat::Q4_0, 8.0}}) {
    DYNAMIC_SECTION(quant_format_name(format) << ": at most half a step, absmax_block / " << 2 * steps) {
      const Tensor w2 = test_weight(20, 128, 8);
      const auto x2 = w2.to_vector<double>();
      const auto d = dequantize_weight(quantize_weight(w2, format)).to_vector<double>();
      for (size_t b = 0; b < x2.size() / 32; ++b) {
        double absmax = 0;
        for (size_t j = 0; j < 32; ++j) absmax = std::max(absmax, std::abs(x2[b * 32 + j]));
        // Q4_0's top code is clipped (16 -> 15): the positive end of a negative-max block is a full step off.
        const double bound = absmax / steps * (format == QuantFormat::Q4_0 ? 1.0 : 0.5) + absmax * std::ldexp(1.0, -10);
        for (size_t j = 0; j < 32; ++j) REQUIRE(std::abs(d[b * 32 + j] - x2[b * 32 + j]) <= bound);
      }
      CHECK(quantize_weight(w2, format).nbytes() == 20 * 128 / 32 * (format == QuantFormat::Q8_0 ? 34u : 18u));
    }
  }
  SECTION("q8_0 and q4_0 refuse rows that are not whole blocks of 32, naming the shape") {
    CHECK_THROWS_WITH(quantize_weight(w, QuantFormat::Q8_0), Catch::Contains("[13, 200] has 200 columns"));
    CHECK_THROWS_WITH(quantize_weight(w, QuantFormat::Q4_0), Catch::Contains("blocks of 32"));
  }
  SECTION("q8_0 is ggml's Q8_0: the same bytes as quantize_row_q8_0") {
    const Tensor w2 = test_weight(20, 128, 8);
    const QuantizedWeight q = quantize_weight(w2, QuantFormat::Q8_0);
    const auto f = w2.to(DType::F32).to_vector<float>();
    std::vector<BlockQ8_0> blocks(f.size() / 32);
    quantize_row_q8_0(f.data(), blocks.data(), static_cast<int64_t>(f.size()));
    CHECK(std::memcmp(blocks.data(), q.data.raw_data(), blocks.size() * sizeof(BlockQ8_0)) == 0);
  }
  for (bool dq : {false, true}) {
    DYNAMIC_SECTION("nf4" << (dq ? " double-quantized" : "") << ": the nearest code times the block's absmax") {
      const QuantizedWeight q = quantize_weight(w, QuantFormat::NF4, dq);
      const auto d = errors(q);
      // The widest gap between neighbouring codes is [-1, -0.696]: half of it bounds the code's error.
      double half_gap = 0;
      for (int i = 0; i < 15; ++i) half_gap = std::max(half_gap, 0.5 * double(kNf4Codes[i + 1] - kNf4Codes[i]));
      const int64_t n = rows * cols;
      std::vector<double> absmax((n + 63) / 64, 0.0);
      for (int64_t i = 0; i < n; ++i) absmax[i / 64] = std::max(absmax[i / 64], std::abs(x[i]));
      // Double quantization adds the absmax's own error: half a step of the second level.
      double absmax_error = 0;
      if (dq) {
        double mean = 0, spread = 0;
        for (double a : absmax) mean += a;
        mean /= double(absmax.size());
        for (double a : absmax) spread = std::max(spread, std::abs(a - mean));  // one outer block of 256 here
        absmax_error = spread / 254 * (1 + 1e-5);
        REQUIRE(q.absmax_codes.defined());
        REQUIRE_FALSE(q.scale.defined());
      }
      for (int64_t i = 0; i < n; ++i) {
        INFO("element " << i);
        REQUIRE(std::abs(d[i] - x[i]) <= absmax[i / 64] * half_gap * (1 + 1e-5) + absmax_error + 1e-7);
      }
      // 4 bits per weight plus the absmaxes: about an eighth of f32.
      CHECK(q.nbytes() < static_cast<size_t>(n) * 4 / 7);
    }
  }
  SECTION("bf16 and f16 checkpoints quantize as their f32 values") {
    for (const DType half : {DType::BF16, DType::F16}) {
      // The weight rounded to 16 bits, and the same values as f32.
      const Tensor w32 = w.to(DType::F32);
      Tensor w16 = Tensor::empty(w.shape(), half), widened = Tensor::empty(w.shape());
      for (int64_t i = 0; i < w.numel(); ++i) {
        const float v = w32.data<float>()[i];
        const uint16_t h = half == DType::BF16 ? float_to_bfloat16(v) : float_to_half(v);
        static_cast<uint16_t*>(w16.raw_data())[i] = h;
        widened.data<float>()[i] = half == DType::BF16 ? bfloat16_to_float(h) : half_to_float(h);
      }
      const Tensor a = dequantize_weight(quantize_weight(w16, QuantFormat::NF4));
      const Tensor b = dequantize_weight(quantize_weight(widened, QuantFormat::NF4));
      CHECK(max_abs_diff(a, b) == 0.0);
    }
  }
}

// Element i of a weight decoded on its own, straight from the format's layout: the reference the block-wise
// dequantizer (core/quantized.h) is held to on spans that start and end anywhere.
double decode_element(const QuantizedView& v, int64_t i) {
  switch (v.format) {
    case QuantFormat::BF16:
      return bfloat16_to_float(reinterpret_cast<const uint16_t*>(v.data)[i]);
    case QuantFormat::Q8_0: {
      const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(v.data)[i / 32];
      return double(b.qs[i % 32]) * half_to_float(b.d);
    }
    case QuantFormat::Q4_0: {
      const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(v.data)[i / 32];
      const int j = static_cast<int>(i % 32);
      return double((j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4) - 8) * half_to_float(b.d);
    }
    case QuantFormat::NF4: {
      const int code = (i % 2) ? v.data[i / 2] >> 4 : v.data[i / 2] & 15;
      return double(kNf4Codes[code]) * nf4_absmax(v, i / kNf4Block);
    }
    case QuantFormat::F32:
      return reinterpret_cast<const float*>(v.data)[i];
  }
  return NAN;
}

TEST_CASE("dequantizing any span, aligned to blocks or not, equals decoding each element alone", "[quantized]") {
  const Tensor w = test_weight(7, 96, 11);  // 672 elements: 21 blocks of 32, 10.5 of 64
  for (const auto [format, dq] :
       {std::pair{QuantFormat::BF16, false}, std::pair{QuantFormat::Q8_0, false}, std::pair{QuantFormat::Q4_0, false},
        std::pair{QuantFormat::NF4, false}, std::pair{QuantFormat::NF4, true}}) {
    DYNAMIC_SECTION(quant_format_name(format) << (dq ? ", double-quantized" : "")) {
      const QuantizedWeight q = quantize_weight(w, format, dq);
      const QuantizedView v = host_view(q);
      const int64_t n = q.rows * q.cols;
      for (const auto [begin, end] : {std::pair<int64_t, int64_t>{0, n},
                                      {0, 1},
                                      {1, 2},
                                      {3, 4},
                                      {5, 37},
                                      {31, 33},
                                      {16, 17},
                                      {15, 48},
                                      {63, 129},
                                      {64, 128},
                                      {101, 102},
                                      {n - 3, n},
                                      {n - 1, n}}) {
        std::vector<float> out(static_cast<size_t>(end - begin), -1.0f);
        dequantize_span(v, begin, end, out.data());
        for (int64_t i = begin; i < end; ++i) REQUIRE(out[i - begin] == static_cast<float>(decode_element(v, i)));
      }
    }
  }
}

TEST_CASE("the quantized matmul equals the f32 matmul on the dequantized weight, forward and backward", "[quantized]") {
  // 1100 x 1024 = 1.13M weights: more than one tile of kQuantizedTileElements, the last one partial.
  const int64_t out = 1100, in = 1024;
  REQUIRE(out * in > ops::kQuantizedTileElements);
  const Tensor w = test_weight(out, in, 11);
  for (QuantFormat f : {QuantFormat::BF16, QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4}) {
    INFO("format " << quant_format_name(f));
    const auto q = quantized(w, f, f == QuantFormat::NF4);
    const Tensor dense = dequantize_weight(*q);
    Generator gen(5);
    // 6 rows: the CPU's skinny product (decoding); 40 rows: dequantized tiles and BLAS.
    for (const Shape& shape : {Shape{2, 3, in}, Shape{40, in}}) {
      INFO("x " << shape.str());
      Tensor x = Tensor::randn(shape, gen).set_requires_grad();
      Tensor bias = Tensor::randn({out}, gen);
      Tensor y = ops::quantized_linear(x, q, bias);
      const Tensor g = Tensor::randn(y.shape(), gen);
      backward(ops::sum(y * g));
      const Tensor gx = x.grad();
      x.set_grad(Tensor());
      Tensor y_ref = ops::linear(x, dense, bias);
      backward(ops::sum(y_ref * g));
      CHECK(max_abs_diff(y, y_ref) < 1e-4);
      CHECK(max_abs_diff(gx, x.grad()) < 1e-4);
    }
  }
}

TEST_CASE("gradients of LoRA parameters and the input through a quantized base pass gradcheck", "[quantized]") {
  // y = x Wq^T + b + s (x A^T) B^T in float64, Wq a double-quantized nf4 weight (as QLoRA trains).
  const auto q = quantized(test_weight(6, 64, 21), QuantFormat::NF4, true);
  Generator gen(22);
  const Tensor bias = Tensor::randn({6}, gen, 0.0, 1.0, DType::F64);
  const std::vector<Tensor> inputs = {testing::randn_leaf({3, 64}, gen, DType::F64),  // x
                                      testing::randn_leaf({2, 64}, gen, DType::F64),  // A [r, in]
                                      testing::randn_leaf({6, 2}, gen, DType::F64)};  // B [out, r]
  const auto f = [&](const std::vector<Tensor>& in) {
    return ops::quantized_linear(in[0], q, bias) + ops::linear(ops::linear(in[0], in[1]), in[2]) * 2.0;
  };
  const autograd::GradcheckResult r = autograd::gradcheck(f, inputs);
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("a quantized matmul never holds the f32 weight: the tracker's peak stays below it", "[quantized][memory]") {
  const int64_t out = 4096, in = 2048;  // 32 MiB in f32
  const auto q = quantized(test_weight(out, in, 31), QuantFormat::NF4, true);
  Generator gen(32);
  Tensor x = Tensor::randn({4, in}, gen).set_requires_grad();
  auto& tracker = MemoryTracker::instance();
  const int64_t before = tracker.stats().live.total();
  tracker.reset_peaks();
  Tensor y = ops::quantized_linear(x, q);
  backward(ops::sum(y));
  const int64_t step_peak = tracker.stats().global_peak - before;
  const int64_t f32_weight = out * in * 4;
  INFO("peak during forward + backward: " << step_peak << " bytes; the f32 weight: " << f32_weight);
  // What the step may hold: the tile (4 MiB), x, y, their gradients: far below the 32 MiB weight.
  CHECK(step_peak < f32_weight / 4);
  CHECK(x.grad().defined());
}

TEST_CASE("a decoding step's quantized matmul asks for no tile; the tiled path refuses to run without one",
          "[quantized][memory]") {
  const int64_t out = 1024, in = 1024;  // the op's tile: all 1024 rows in f32, 4 MiB
  const auto q = quantized(test_weight(out, in, 33), QuantFormat::Q8_0, false);
  Generator gen(34);
  NoGradGuard no_grad;
  auto& tracker = MemoryTracker::instance();
  for (int64_t rows : {1, 16, 17}) {
    INFO(rows << " rows of x");
    const Tensor x = Tensor::randn({rows, in}, gen);
    const bool skinny = rows <= cpu::kSkinnyCrossover;
    CHECK(kernels::QuantizedLinearForward::needs_tile(x) == !skinny);
    const int64_t before = tracker.stats().live.total();
    tracker.reset_peaks();
    const Tensor y = ops::quantized_linear(x, q);
    const int64_t peak = tracker.stats().global_peak - before;
    const int64_t y_bytes = rows * out * 4;
    CHECK((peak == y_bytes) == skinny);  // the output alone, or the output and a tile
    // Above the crossover the kernel runs on whatever tile it is handed: a hand-made one of 256 rows (four
    // tiles, four products) gives the op's result to within float32 rounding.
    if (!skinny) {
      Tensor y_tiled = Tensor::empty({rows, out}), tile = Tensor::empty({256, in});
      kernels::QuantizedLinearForward::cpu(x, *q, tile, y_tiled);
      const double scale = max_abs_diff(y, Tensor::zeros({rows, out}));
      CHECK(max_abs_diff(y, y_tiled) <= 1e-5 * scale);
    }
  }
  // The meta device's dry run predicts the CPU's memory, so it answers as the CPU does.
  CHECK_FALSE(kernels::QuantizedLinearForward::needs_tile(Tensor::empty({4, in}, DType::F32, Device::meta())));
  CHECK(kernels::QuantizedLinearForward::needs_tile(Tensor::empty({17, in}, DType::F32, Device::meta())));
  // f64 (the gradient checks) always takes the tiles, and a missing tile is an error there, not a crash.
  const Tensor x64 = Tensor::randn({2, in}, gen, 0.0, 1.0, DType::F64);
  CHECK(kernels::QuantizedLinearForward::needs_tile(x64));
  Tensor none, y64 = Tensor::empty({2, out}, DType::F64);
  CHECK_THROWS_WITH(kernels::QuantizedLinearForward::cpu(x64, *q, none, y64),
                    Catch::Contains("the tile must be float64, got none"));
}

TEST_CASE("quantizing a model's base: LoRA trains on it, and what cannot work is refused", "[quantized]") {
  struct Net : nn::Module {
    std::shared_ptr<nn::Layer> fc1, fc2;
    explicit Net(Generator& gen)
        : fc1(std::make_shared<nn::Linear>(64, 32, true, gen)), fc2(std::make_shared<nn::Linear>(32, 8, false, gen)) {
      register_module("fc1", fc1);
      register_module("fc2", fc2);
    }
  };
  Generator gen(41);
  auto net = std::make_shared<Net>(gen);
  const auto all = [](const std::string&) { return true; };

  SECTION("a weight that trains is refused, naming it") {
    CHECK_THROWS_WITH(nn::quantize_frozen_linears(*net, QuantFormat::NF4, false, all),
                      Catch::Contains("fc1.weight") && Catch::Contains("frozen"));
  }
  SECTION("an unknown format is refused, naming the flag and the choices") {
    CHECK_THROWS_WITH(parse_quant_format("fp8"), Catch::Contains("--base-dtype 'fp8'") && Catch::Contains("nf4"));
  }
  SECTION("LoRA on an nf4 base: only the adapters train, merging is refused") {
    nn::LoRAConfig config;
    config.targets = {"fc1"};
    nn::apply_lora(*net, config);
    const nn::QuantizeReport report = nn::quantize_frozen_linears(*net, QuantFormat::NF4, true, all);
    CHECK(report.layers == 2);  // fc1's base layer and the frozen fc2
    CHECK(report.quantized_bytes * 6 < report.f32_bytes);
    for (const auto& [name, p] : net->named_parameters())
      CHECK((name.find("lora_") != std::string::npos) == p.requires_grad());
    Tensor x = Tensor::randn({5, 64}, gen);
    auto lora = nn::lora_layers(*net)[0].second;
    Tensor loss = ops::sum(std::dynamic_pointer_cast<nn::Layer>(net->fc2)->forward(lora->forward(x)));
    backward(loss);
    CHECK(lora->lora_B.grad().defined());
    CHECK_THROWS_WITH(lora->merge(), Catch::Contains("quantized"));
    // A compact base is wrapped as it is (loaders build the base compact before LoRA is applied): it stays frozen.
    auto again = std::make_shared<nn::LoRALinear>(lora->base_layer, nn::LoRAOptions{});
    CHECK(again->lora_B.requires_grad());
    CHECK_FALSE(again->base_layer->has_dense_weight());
  }
  SECTION("a weight that is not 2-D, or of an integer dtype, is refused") {
    CHECK_THROWS_WITH(quantize_weight(Tensor::zeros({8}), QuantFormat::Q8_0), Catch::Contains("2-D"));
    CHECK_THROWS_WITH(quantize_weight(Tensor::zeros({2, 2}, DType::I32), QuantFormat::Q8_0), Catch::Contains("int32"));
    CHECK_THROWS_WITH(quantize_weight(Tensor::zeros({2, 2}), QuantFormat::Q8_0, true), Catch::Contains("nf4 only"));
  }
}

TEST_CASE("an inference head: logits through a q8_0 copy of the head, the loss through the f32 one", "[quantized]") {
  // llama-tiny: hidden 64, a tied head. Two copies of one random model, both with a q4_0 body; one also
  // with the quantized inference head.
  auto make = [] {
    auto m = models::create_model(models::read_config_arg("llama-tiny"), 5);
    m->eval();
    m->freeze();
    return m;
  };
  auto plain = make(), with_head = make();
  models::quantize_base(*plain, QuantFormat::Q4_0);
  const nn::QuantizeReport report = models::quantize_base(*with_head, QuantFormat::Q4_0, /*inference_head=*/true);
  REQUIRE(plain->inference_head() == nullptr);
  REQUIRE(with_head->inference_head() != nullptr);
  CHECK(with_head->inference_head()->format == QuantFormat::Q8_0);  // the head stays above 4 bits
  CHECK(report.quantized_bytes > 0);
  // The head's copy is reported on its own, not among the body's layers.
  CHECK(report.inference_head_bytes == with_head->inference_head()->nbytes());
  CHECK(report.inference_head_format == "q8_0");
  const nn::QuantizeReport body_only = models::quantize_base(*make(), QuantFormat::Q4_0);
  CHECK(report.quantized_bytes == body_only.quantized_bytes);
  CHECK_THAT(report.str(), Catch::EndsWith("; logits from a q8_0 copy of the output head: " +
                                           fmt::format("{:.1f}", double(report.inference_head_bytes) / 1048576) +
                                           " MiB"));
  CHECK_THAT(body_only.str(), !Catch::Contains("output head"));
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{3, 17, 42, 7, 99, 1}, {1, 6});
  NoGradGuard no_grad;
  const Tensor a = plain->forward(models::ForwardBatch(ids)), b = with_head->forward(models::ForwardBatch(ids));
  REQUIRE(a.shape() == b.shape());
  // Q8_0's error on the head's rows, relative to the logits' scale.
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double scale = 0, diff = 0;
  for (size_t i = 0; i < x.size(); ++i)
    scale = std::max(scale, std::abs(x[i])), diff = std::max(diff, std::abs(x[i] - y[i]));
  CHECK(diff > 0);
  CHECK(diff < 0.02 * scale);
  // The loss uses the f32 head: the same in both.
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{17, 42, 7, 99, 1, 3}, {1, 6});
  CHECK(plain->loss(ids, targets).item() == with_head->loss(ids, targets).item());
}
