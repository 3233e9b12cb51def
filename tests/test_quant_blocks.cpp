// ggml's Q8_0 and Q4_0 blocks (core/quant_blocks.h): quantized and dequantized bit for bit as the `gguf`
// Python package does (tests/fixtures/quant_blocks.safetensors), the error bounds, and the refusals.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "core/quant_blocks.h"
#include "core/safetensors.h"

using namespace lora;

namespace {

const std::string kFixture = std::string(LORA_TEST_DATA_DIR) + "/quant_blocks.safetensors";

template <typename T>
std::vector<T> read_all(const SafeTensorsFile& file, const std::string& name) {
  const auto bytes = file.raw(name);
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("Q8_0 and Q4_0 blocks match the gguf package bit for bit", "[quant_blocks]") {
  const SafeTensorsFile file = SafeTensorsFile::open(kFixture);
  const int64_t rows = file.info("input").shape[0], k = file.info("input").shape[1];
  REQUIRE(k % kQuantBlock == 0);
  const auto x = read_all<float>(file, "input");
  const auto q8_expected = read_all<uint8_t>(file, "q8_0");
  const auto q4_expected = read_all<uint8_t>(file, "q4_0");
  const auto v8_expected = read_all<float>(file, "q8_0_values");
  const auto v4_expected = read_all<float>(file, "q4_0_values");
  REQUIRE(static_cast<int64_t>(q8_expected.size()) == rows * q8_0_row_bytes(k));
  REQUIRE(static_cast<int64_t>(q4_expected.size()) == rows * q4_0_row_bytes(k));

  std::vector<BlockQ8_0> q8(static_cast<size_t>(rows * k / kQuantBlock));
  std::vector<BlockQ4_0> q4(q8.size());
  std::vector<float> v8(x.size()), v4(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t blocks = k / kQuantBlock;
    quantize_row_q8_0(x.data() + r * k, q8.data() + r * blocks, k);
    quantize_row_q4_0(x.data() + r * k, q4.data() + r * blocks, k);
    dequantize_row_q8_0(q8.data() + r * blocks, v8.data() + r * k, k);
    dequantize_row_q4_0(q4.data() + r * blocks, v4.data() + r * k, k);
  }
  // Compare block by block so that a failure names the row and block.
  for (size_t b = 0; b < q8.size(); ++b) {
    INFO("row " << b / (k / kQuantBlock) << ", block " << b % (k / kQuantBlock));
    CHECK(std::memcmp(&q8[b], q8_expected.data() + b * sizeof(BlockQ8_0), sizeof(BlockQ8_0)) == 0);
    CHECK(std::memcmp(&q4[b], q4_expected.data() + b * sizeof(BlockQ4_0), sizeof(BlockQ4_0)) == 0);
  }
  int64_t mismatched = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mismatched += !same_bits(v8[i], v8_expected[i]) || !same_bits(v4[i], v4_expected[i]);
  }
  CHECK(mismatched == 0);
}

TEST_CASE("Q8_0 and Q4_0 round trips stay within their bounds", "[quant_blocks]") {
  // Per block: Q8_0 rounds to the nearest of 255 steps of d = absmax / 127, so |w - w'| <= d / 2 (plus the
  // fp16 rounding of d, relative 2^-11, times |q| <= 127); Q4_0's steps are d = absmax / 8, |w - w'| <= d / 2
  // likewise, except the clipped end (q = 16 -> 15), which is within d.
  std::vector<float> x(4096);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = std::sin(0.37f * static_cast<float>(i)) * (1.0f + static_cast<float>(i % 97));
  std::vector<BlockQ8_0> q8(x.size() / kQuantBlock);
  std::vector<BlockQ4_0> q4(q8.size());
  std::vector<float> v8(x.size()), v4(x.size());
  const auto k = static_cast<int64_t>(x.size());
  quantize_row_q8_0(x.data(), q8.data(), k);
  quantize_row_q4_0(x.data(), q4.data(), k);
  dequantize_row_q8_0(q8.data(), v8.data(), k);
  dequantize_row_q4_0(q4.data(), v4.data(), k);
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    float amax = 0;
    for (int64_t j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[b * kQuantBlock + j]));
    const float d8 = amax / 127, d4 = amax / 8;
    for (int64_t j = 0; j < kQuantBlock; ++j) {
      const size_t i = static_cast<size_t>(b * kQuantBlock + j);
      CHECK(std::fabs(v8[i] - x[i]) <= d8 * 0.5f + amax * 1e-3f);
      CHECK(std::fabs(v4[i] - x[i]) <= d4 + amax * 1e-3f);
    }
  }
  // A block's largest-magnitude element is exact up to the fp16 rounding of d (code 127 or code 0).
  CHECK(std::fabs(v8[0] - x[0]) <= std::fabs(x[0]) * 1e-3f);
}

TEST_CASE("Q8_0 and Q4_0 refuse rows that are not whole blocks", "[quant_blocks]") {
  float x[64] = {};
  BlockQ8_0 q8[2];
  BlockQ4_0 q4[2];
  CHECK_THROWS_WITH(quantize_row_q8_0(x, q8, 40), Catch::Contains("not a whole number of blocks of 32"));
  CHECK_THROWS_WITH(quantize_row_q4_0(x, q4, 33), Catch::Contains("not a whole number of blocks of 32"));
  CHECK_THROWS_WITH(dequantize_row_q8_0(q8, x, 31), Catch::Contains("Q8_0 dequantize"));
  CHECK_THROWS_WITH(dequantize_row_q4_0(q4, x, -32), Catch::Contains("Q4_0 dequantize"));
  quantize_row_q8_0(x, q8, 0);  // an empty row is zero blocks
}

TEST_CASE("Q8_0 and Q4_0 make a non-finite weight poison its block visibly", "[quant_blocks]") {
  // As in ggml, an infinite weight makes the block's scale infinite, so the whole block dequantizes to
  // non-finite values (never to plausible numbers); a NaN never reaches an undefined float-to-int
  // conversion (the sanitizer build checks that).
  float x[64];
  for (int j = 0; j < 64; ++j) x[j] = static_cast<float>(j) * 0.1f;
  x[3] = std::nanf("");
  x[5] = INFINITY;
  BlockQ8_0 q8[2];
  BlockQ4_0 q4[2];
  quantize_row_q8_0(x, q8, 64);
  quantize_row_q4_0(x, q4, 64);
  float v8[64], v4[64];
  dequantize_row_q8_0(q8, v8, 64);
  dequantize_row_q4_0(q4, v4, 64);
  CHECK(q8[0].d == 0x7C00);  // +inf in fp16
  for (int j = 0; j < 32; ++j) {
    CHECK_FALSE(std::isfinite(v8[j]));
    CHECK_FALSE(std::isfinite(v4[j]));
  }
  for (int j = 32; j < 64; ++j) {  // the next block is untouched
    CHECK(std::fabs(v8[j] - x[j]) <= 6.4f / 127);
    CHECK(std::fabs(v4[j] - x[j]) <= 6.4f / 8);
  }
}
