// A frozen embedding table and output head held in a compact format (a GGUF file's quantized token_embd and
// output.weight): the lookup against the f32 lookup on the dequantized table, the fused head-and-loss through a
// compact head (registered cases: float64 gradcheck, float32 against float64; and against the dense op on the
// dequantized head over several tiles), the layer, and the refusals.
#include <catch2/catch.hpp>

#include <cmath>

#include "autograd/ops.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/quantized_embedding.h"
#include "autograd/ops/quantized_linear.h"
#include "nn/layers.h"
#include "nn/quantized_linear.h"
#include "tests/op_cases.h"
#include "tests/test_helpers.h"

using namespace lora;

namespace {

std::shared_ptr<const QuantizedWeight> compact_table(int64_t rows, int64_t cols, QuantFormat format, uint64_t seed) {
  Generator gen(seed);
  const Tensor w = Tensor::randn({rows, cols}, gen, 0.0, 0.5);
  return std::make_shared<const QuantizedWeight>(quantize_weight(w, format, format == QuantFormat::NF4));
}

const std::vector<QuantFormat> kFormats = {QuantFormat::BF16, QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4};

}  // namespace

// linear_cross_entropy with a compact head: float64 gradcheck of x (the head is frozen), an ignored row, and
// float32 against float64 (and CUDA against the CPU where a device is present).
LORA_OP_CASES(compact_head_cross_entropy_cases) {
  using testing::Inputs;
  for (QuantFormat format : {QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4}) {
    static std::map<QuantFormat, std::shared_ptr<const QuantizedWeight>> heads;
    heads[format] = compact_table(7, 64, format, 31 + static_cast<uint64_t>(format));
    const auto head = heads[format];
    const testing::OpFn f = [head](const Inputs& in) {
      const auto on_device = in[0].device() == head->device()
                                 ? head
                                 : std::make_shared<const QuantizedWeight>(quantized_to(*head, in[0].device()));
      return ops::linear_cross_entropy(in[0], on_device, in[1]);
    };
    const auto inputs = [](uint64_t seed, DType dtype) {
      return [=] {
        Generator gen(seed);
        return Inputs{testing::randn_leaf({2, 3, 64}, gen, dtype), testing::ids({2, -100, 0, 6, 6, 1}, {2, 3})};
      };
    };
    const std::string what = std::string(quant_format_name(format)) + " head, an ignored row";
    testing::gradcheck_case("linear_cross_entropy", what, f, inputs(41, DType::F64));
    testing::parity_case("linear_cross_entropy", what, f, inputs(42, DType::F32), testing::kGemm);
  }
}

TEST_CASE("a compact head's fused loss equals the dense op on the dequantized head, value and input gradient",
          "[quantized][compact]") {
  // 1100 x 1024: more than one tile of kQuantizedTileElements, the last one partial.
  const int64_t V = 1100, C = 1024, N = 40;
  REQUIRE(V * C > ops::kQuantizedTileElements);
  Generator gen(51);
  std::vector<int64_t> t(N);
  for (auto& id : t) id = static_cast<int64_t>(gen.below(V));
  t[3] = -100;
  for (QuantFormat format : kFormats) {
    INFO(quant_format_name(format));
    const auto head = compact_table(V, C, format, 52);
    const Tensor dense = dequantize_weight(*head);
    for (int64_t rows : {int64_t(5), N}) {  // 5 rows: the skinny product; 40: dequantized tiles and BLAS
      INFO(rows << " rows");
      const Tensor x0 = Tensor::randn({rows, C}, gen, 0.0, 0.05);
      const Tensor tr = Tensor::from_vector(std::vector<int64_t>(t.begin(), t.begin() + rows), {rows});
      Tensor x1 = x0.clone().set_requires_grad(), x2 = x0.clone().set_requires_grad();
      const Tensor compact_loss = ops::linear_cross_entropy(x1, head, tr);
      backward(compact_loss);
      const Tensor dense_loss = ops::linear_cross_entropy(x2, dense, tr);
      backward(dense_loss);
      CHECK(compact_loss.item() == Approx(dense_loss.item()).epsilon(1e-6));
      testing::require_close(x1.grad(), x2.grad(), /*rtol=*/0.0, /*atol=*/1e-6);
    }
  }
}

TEST_CASE("a compact embedding looks up exactly the dequantized rows, for int32 and int64 ids",
          "[quantized][compact]") {
  for (QuantFormat format : kFormats) {
    INFO(quant_format_name(format));
    const auto table = compact_table(50, 96, format, 61);
    const Tensor dense = dequantize_weight(*table);
    const std::vector<int64_t> ids{0, 49, 7, 7, 23, 1};  // repeats, both ends
    for (DType id_type : {DType::I32, DType::I64}) {
      const Tensor t = Tensor::from_vector(ids, {2, 3}).to(id_type);
      const Tensor got = ops::quantized_embedding(table, t);
      CHECK(got.shape() == Shape({2, 3, 96}));
      CHECK(got.to_vector<float>() == ops::embedding(dense, t).to_vector<float>());  // exactly
    }
  }
  // Many ids: the parallel loop.
  const auto table = compact_table(300, 256, QuantFormat::Q4_0, 62);
  Generator gen(63);
  std::vector<int64_t> many(500);
  for (auto& id : many) id = static_cast<int64_t>(gen.below(300));
  const Tensor t = Tensor::from_vector(many, {500});
  CHECK(ops::quantized_embedding(table, t).to_vector<float>() ==
        ops::embedding(dequantize_weight(*table), t).to_vector<float>());
}

TEST_CASE("a compact embedding refuses ids out of range and ids that are not integers, naming them",
          "[quantized][compact]") {
  const auto table = compact_table(10, 32, QuantFormat::Q8_0, 71);
  CHECK_THROWS_WITH(ops::quantized_embedding(table, Tensor::from_vector(std::vector<int64_t>{1, 10}, {2})),
                    Catch::Contains("id 10 at position 1") && Catch::Contains("V = 10"));
  CHECK_THROWS_WITH(ops::quantized_embedding(table, Tensor::from_vector(std::vector<int64_t>{-1}, {1})),
                    Catch::Contains("id -1"));
  CHECK_THROWS_WITH(ops::quantized_embedding(table, Tensor::zeros({2})), Catch::Contains("ids"));
  CHECK_THROWS_WITH(ops::quantized_embedding(nullptr, Tensor::from_vector(std::vector<int64_t>{1}, {1})),
                    Catch::Contains("no table"));
  // A compact head's loss checks its targets like the dense one.
  Generator gen(72);
  const Tensor x = Tensor::randn({2, 32}, gen);
  CHECK_THROWS_WITH(ops::linear_cross_entropy(x, table, Tensor::from_vector(std::vector<int64_t>{1, 10}, {2})),
                    Catch::Contains("10"));
  CHECK_THROWS_WITH(ops::linear_cross_entropy(Tensor::randn({2, 31}, gen), table,
                                              Tensor::from_vector(std::vector<int64_t>{1, 2}, {2})),
                    Catch::Contains("C = 32"));
}

TEST_CASE("an Embedding over a compact table has no parameter and looks up through it", "[quantized][compact]") {
  const auto table = compact_table(20, 64, QuantFormat::Q4_0, 81);
  auto layer = std::make_shared<nn::Embedding>(table);
  CHECK_FALSE(layer->has_dense_weight());
  CHECK(layer->named_parameters().empty());
  CHECK(nn::named_compact_weights(*layer).empty());  // the layer itself is not below itself
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 19}, {1, 2});
  CHECK(layer->forward(ids).to_vector<float>() == ops::embedding(dequantize_weight(*table), ids).to_vector<float>());
  CHECK_THROWS_WITH(nn::Embedding(nullptr), Catch::Contains("no compact table"));
}
