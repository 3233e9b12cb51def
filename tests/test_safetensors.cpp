// Tests of safetensors I/O (round trips, fp16/bf16 decoding, hostile files) and of write_file_atomically.
#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/half.h"
#include "core/safetensors.h"
#include "tests/mapping_residency.h"
#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#endif

using namespace lora;
using Catch::Contains;
using lora::testing::resident_kib_of_mapping;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp directory, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() / fmt::format("lora_safetensors_test_{}_{}", ::getpid(), counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::set<std::string> entries() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.insert(e.path().filename().string());
    return out;
  }
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A safetensors file image: length, header text (as given, unpadded), data.
std::string image(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

// One tensor entry of a header.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype, shape, begin, end);
}

// A header object of entries: {entry,entry,...}.
std::string object(const std::vector<std::string>& entries) {
  std::string s = "{";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i) s += ',';
    s += entries[i];
  }
  return s + "}";
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Round trips

TEST_CASE("safetensors: round trip of F32, F64, I32, I64, scalar and empty tensors with metadata", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::vector<float> w = {0.5f, -1.25f, 3.0f, 1e-30f, -0.0f, 65504.5f};
  const std::vector<int64_t> ids = {0, -5, int64_t{1} << 40, std::numeric_limits<int64_t>::min()};
  const std::vector<double> d = {0.1, -2.0};
  const std::vector<int32_t> small = {7, -8, 2147483647};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\u00e9llo \"quoted\""}};
  save_safetensors(path,
                   {{"z.weight", Tensor::from_vector(w, {2, 3})},
                    {"ids", Tensor::from_vector(ids, {4})},
                    {"double", Tensor::from_vector(d, {2, 1})},
                    {"int32", Tensor::from_vector(small, {3})},
                    {"scalar", Tensor::from_vector(std::vector<float>{42.0f}, Shape{})},
                    {"empty", Tensor::zeros({0, 3})}},
                   meta);
  CHECK(dir.entries() == std::set<std::string>{"model.safetensors"});

  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.names() == std::vector<std::string>{"z.weight", "ids", "double", "int32", "scalar", "empty"});
  CHECK(f.metadata() == meta);
  CHECK(f.contains("ids"));
  CHECK_FALSE(f.contains("nope"));

  const TensorInfo& wi = f.info("z.weight");
  CHECK(wi.dtype_name == "F32");
  CHECK(wi.dtype == DType::F32);
  CHECK(wi.shape == Shape{2, 3});
  CHECK(wi.begin == 0);
  CHECK(wi.end == 24);
  // Data offsets are contiguous in the order given.
  uint64_t expected_begin = 0;
  for (const TensorInfo& t : f.tensors()) {
    CHECK(t.begin == expected_begin);
    expected_begin = t.end;
  }
  CHECK(f.info("empty").nbytes() == 0);
  CHECK(f.info("scalar").shape.rank() == 0);

  // Bit-exact values, in the stored dtype.
  const Tensor wt = f.load("z.weight");
  CHECK(wt.shape() == Shape{2, 3});
  const std::vector<float> w_back = wt.to_vector<float>();
  for (size_t i = 0; i < w.size(); ++i) CHECK(bits(w_back[i]) == bits(w[i]));
  CHECK(f.load("ids", DType::I64).to_vector<int64_t>() == ids);
  CHECK(f.load("double", DType::F64).to_vector<double>() == d);
  CHECK(f.load("int32", DType::I32).to_vector<int32_t>() == small);
  CHECK(f.load("scalar").item() == 42.0);
  CHECK(f.load("empty").shape() == Shape{0, 3});

  // Conversions between types of the same kind.
  CHECK(f.load("int32", DType::I64).to_vector<int64_t>() == std::vector<int64_t>{7, -8, 2147483647});
  CHECK(f.load("double", DType::F32).to_vector<float>() == std::vector<float>{0.1f, -2.0f});
  CHECK(f.load("z.weight", DType::F64).to_vector<double>()[1] == -1.25);

  // raw() is the stored bytes.
  const auto raw = f.raw("ids");
  REQUIRE(raw.size() == ids.size() * 8);
  CHECK(std::memcmp(raw.data(), ids.data(), raw.size()) == 0);
}

TEST_CASE("safetensors: the std::map overload writes names in sorted order", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, std::map<std::string, Tensor>{{"b", Tensor::ones({2})}, {"a", Tensor::zeros({3})}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.names() == std::vector<std::string>{"a", "b"});
  CHECK(f.metadata().empty());
  CHECK(f.load("b").to_vector<float>() == std::vector<float>{1, 1});
}

TEST_CASE("safetensors: the header is padded with spaces to a multiple of 8 bytes", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("a.safetensors");
  for (int len = 1; len <= 17; ++len) {
    INFO("name length " << len);
    const std::string name(static_cast<size_t>(len), 'x');
    save_safetensors(path, {{name, Tensor::ones({3})}}, {{"k", std::string(len % 5, 'v')}});
    const std::string bytes = read_bytes(path);
    REQUIRE(bytes.size() >= 8);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
    CHECK(n % 8 == 0);
    REQUIRE(bytes.size() == 8 + n + 12);
    CHECK(bytes[8] == '{');
    const std::string header = bytes.substr(8, n);
    const size_t close = header.rfind('}');
    CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);
    CHECK(header.size() - close - 1 < 8);
    CHECK(SafeTensorsFile::open(path).load(name).to_vector<float>() == std::vector<float>{1, 1, 1});
  }
}

TEST_CASE("safetensors: load charges the requested memory category", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("c.safetensors");
  save_safetensors(path, {{"w", Tensor::ones({4})}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.load("w", DType::F32, Device::cpu(), MemoryCategory::FrozenParameter).storage()->category() ==
        MemoryCategory::FrozenParameter);
  MemoryCategoryGuard guard(MemoryCategory::TrainableParameter);
  CHECK(f.load("w").storage()->category() == MemoryCategory::TrainableParameter);
}

TEST_CASE("safetensors: a loaded tensor's pages of the mapping are not left resident", "[safetensors][memory]") {
  // 24 MiB of f32 and 48 MiB of f64: loading either (copied, or converted) leaves at most a page or two of it in
  // the process (the ends it shares with its neighbours), not the tensor twice (its file pages and its copy).
  TempDir dir;
  const std::string path = fs::weakly_canonical(dir.file("big.safetensors")).string();
  Generator gen(5);
  const Tensor big = Tensor::randn({6 << 20}, gen);
  save_safetensors(path, {{"a", big}, {"b", big.to(DType::F64)}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  for (const auto& [name, to] : {std::pair{"a", DType::F32}, std::pair{"b", DType::F32}, std::pair{"a", DType::F64}}) {
    INFO(name << " as " << dtype_name(to));
    const Tensor loaded = f.load(name, to);
    CHECK(resident_kib_of_mapping(path) <= 256);  // of 24 MiB, or 48 MiB
    CHECK(loaded.to_vector<float>() == big.to_vector<float>());
  }
  // Read again, the pages come back from the page cache: the same values.
  CHECK(f.load("a").to_vector<float>() == big.to_vector<float>());
}

TEST_CASE("safetensors: SafeTensorsFile is movable and outlives the deletion of its file", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"x", Tensor::arange(5)}});
  SafeTensorsFile a = SafeTensorsFile::open(path);
  const std::byte* bytes = a.raw("x").data();
  SafeTensorsFile b = std::move(a);
  CHECK(b.raw("x").data() == bytes);  // the same mapping
  CHECK_FALSE(a.contains("x"));       // NOLINT(bugprone-use-after-move): a moved-from file is empty
  CHECK(a.size() == 0);
  a = std::move(b);
  fs::remove(path);  // the mapping keeps the data
  CHECK(a.load("x").to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4});
}

#if defined(LORA_HAVE_CUDA)
TEST_CASE("safetensors: CUDA tensors save through the host and load onto the device", "[safetensors][cuda]") {
  if (!cuda_device_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  TempDir dir;
  const std::string path = dir.file("gpu.safetensors");
  const Device gpu = Device::cuda(0);
  save_safetensors(path, {{"w", Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2}, gpu)},
                          {"ids", Tensor::from_vector(std::vector<int64_t>{5, -6}, {2}, gpu)}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  const Tensor w = f.load("w", DType::F32, gpu, MemoryCategory::FrozenParameter);
  CHECK(w.device() == gpu);
  CHECK(w.storage()->category() == MemoryCategory::FrozenParameter);
  CHECK(w.to_vector<float>() == std::vector<float>{1, 2, 3, 4});
  CHECK(f.load("ids", DType::I64, gpu).to_vector<int64_t>() == std::vector<int64_t>{5, -6});
  CHECK(f.load("w", DType::F64, gpu).to_vector<double>() == std::vector<double>{1, 2, 3, 4});
}
#endif

TEST_CASE("safetensors: F16 and BF16 tensors decode bit patterns exactly", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  const float inf = std::numeric_limits<float>::infinity();
  // (pattern, value) pairs; NaN is checked separately.
  const std::vector<std::pair<uint16_t, float>> f16 = {
      {0x3C00, 1.0f},     {0xC000, -2.0f},     {0x3555, 0.333251953125f},
      {0x7BFF, 65504.0f}, {0x0001, 0x1p-24f},  {0x03FF, 1023 * 0x1p-24f},
      {0x0400, 0x1p-14f}, {0x8001, -0x1p-24f}, {0x7C00, inf},
      {0xFC00, -inf},     {0x0000, 0.0f},      {0x8000, -0.0f}};
  const std::vector<std::pair<uint16_t, float>> bf16 = {
      {0x3F80, 1.0f},      {0xC000, -2.0f}, {0x3EAB, 0.333984375f}, {0x7F7F, 0x1.FEp127f}, {0x0001, 0x1p-133f},
      {0x0080, 0x1p-126f}, {0x7F80, inf},   {0xFF80, -inf},         {0x0000, 0.0f},        {0x8000, -0.0f}};
  std::vector<uint16_t> f16_bits, bf16_bits;
  for (const auto& [b, v] : f16) f16_bits.push_back(b);
  for (const auto& [b, v] : bf16) bf16_bits.push_back(b);
  f16_bits.push_back(0x7E00);   // NaN
  bf16_bits.push_back(0x7FC0);  // NaN
  const uint64_t n16 = f16_bits.size() * 2, nb16 = bf16_bits.size() * 2;
  const std::string header = object({entry("h", "F16", fmt::format("[{}]", f16_bits.size()), 0, n16),
                                     entry("b", "BF16", fmt::format("[{}]", bf16_bits.size()), n16, n16 + nb16)});
  write_bytes(path, image(header, bytes_of(f16_bits) + bytes_of(bf16_bits)));

  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK(f.info("h").dtype == DType::F16);
  CHECK(f.info("b").dtype == DType::BF16);
  const std::vector<float> h = f.load("h").to_vector<float>();
  for (size_t i = 0; i < f16.size(); ++i) {
    INFO(fmt::format("F16 0x{:04X}", f16[i].first));
    CHECK(bits(h[i]) == bits(f16[i].second));  // bitwise, so -0.0 is told from 0.0
  }
  CHECK(std::isnan(h.back()));
  const std::vector<float> b = f.load("b").to_vector<float>();
  for (size_t i = 0; i < bf16.size(); ++i) {
    INFO(fmt::format("BF16 0x{:04X}", bf16[i].first));
    CHECK(bits(b[i]) == bits(bf16[i].second));
  }
  CHECK(std::isnan(b.back()));
  CHECK(f.load("h", DType::F64).to_vector<double>()[4] == std::ldexp(1.0, -24));

  // Loading as the stored type copies the bits; the other 16-bit type converts through float.
  const Tensor same = f.load("h", DType::F16);
  CHECK(same.dtype() == DType::F16);
  CHECK(std::memcmp(same.raw_data(), f16_bits.data(), n16) == 0);
  const Tensor as_bf16 = f.load("h", DType::BF16);
  CHECK(static_cast<const uint16_t*>(as_bf16.raw_data())[0] == 0x3F80);  // 1.0
}

TEST_CASE("safetensors: float -> F16 and BF16 round to nearest even", "[safetensors]") {
  struct Case {
    float value;
    uint16_t half, bfloat;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {1.0f, 0x3C00, 0x3F80},
      {1.0f + 0x1p-11f, 0x3C00, 0x3F80},      // f16 tie -> even
      {1.0f + 3 * 0x1p-11f, 0x3C02, 0x3F80},  // f16 tie -> even (up)
      {1.0f + 0x1p-8f, 0x3C04, 0x3F80},       // bf16 tie -> even
      {1.0f + 3 * 0x1p-8f, 0x3C0C, 0x3F82},   // bf16 tie -> even (up)
      {65504.0f, 0x7BFF, 0x4780},
      {65519.0f, 0x7BFF, 0x4780},
      {65520.0f, 0x7C00, 0x4780},  // f16 overflows to inf
      {0x1p-24f, 0x0001, 0x3380},  // smallest f16 subnormal
      {0x1p-25f, 0x0000, 0x3300},  // tie with zero -> even (0)
      {1.5f * 0x1p-25f, 0x0001, 0x3340},
      {3 * 0x1p-25f, 0x0002, 0x33C0},         // 1.5 units -> even (2)
      {0x1p-14f - 0x1p-25f, 0x0400, 0x3880},  // 1023.5 units -> carries into the smallest normal
      {-0.0f, 0x8000, 0x8000},
      {inf, 0x7C00, 0x7F80},
      {-inf, 0xFC00, 0xFF80},
      {std::numeric_limits<float>::max(), 0x7C00, 0x7F80},  // bf16 rounds up to inf
      {1e-10f, 0x0000, 0x2EDC},
  };
  for (const Case& c : cases) {
    INFO(fmt::format("value {} (0x{:08X})", c.value, bits(c.value)));
    CHECK(float_to_half(c.value) == c.half);
    CHECK(float_to_bfloat16(c.value) == c.bfloat);
  }
  CHECK((float_to_half(std::nanf("")) & 0x7FFF) > 0x7C00);
  CHECK((float_to_bfloat16(std::nanf("")) & 0x7FFF) > 0x7F80);

  // Every finite or infinite fp16 survives float and back.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_half(f) == h);
  }
#ifdef __FLT16_MANT_DIG__
  // Against the compiler's own float -> _Float16 conversion, on a spread of float bit patterns.
  for (uint64_t x = 0; x <= 0xFFFFFFFFull; x += 65521) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(x));
    if (std::isnan(f)) continue;
    const auto reference = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    INFO(fmt::format("0x{:08X}", x));
    REQUIRE(float_to_half(f) == reference);
    REQUIRE(bits(half_to_float(reference)) == bits(static_cast<float>(static_cast<_Float16>(f))));
  }
#endif
}

TEST_CASE("safetensors: F32 loads as F16 and BF16", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("f.safetensors");
  save_safetensors(path, {{"x", Tensor::from_vector(std::vector<float>{1.0f, -2.0f, 0.1f}, {3})}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  const Tensor h = f.load("x", DType::F16);
  const Tensor b = f.load("x", DType::BF16);
  const auto* hp = static_cast<const uint16_t*>(h.raw_data());
  const auto* bp = static_cast<const uint16_t*>(b.raw_data());
  CHECK(std::vector<uint16_t>(hp, hp + 3) == std::vector<uint16_t>{0x3C00, 0xC000, 0x2E66});
  CHECK(std::vector<uint16_t>(bp, bp + 3) == std::vector<uint16_t>{0x3F80, 0xC000, 0x3DCD});
  // And a 16-bit tensor written back keeps its dtype and bits.
  save_safetensors(path, {{"h", h}});
  CHECK(SafeTensorsFile::open(path).info("h").dtype_name == "F16");
  CHECK(SafeTensorsFile::open(path).load("h").to_vector<float>() == std::vector<float>{1.0f, -2.0f, 0.0999755859375f});
}

TEST_CASE("safetensors: integer file dtypes lora has no type for load as I32/I64", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("u.safetensors");
  const std::vector<uint8_t> u8 = {0, 200, 255};
  const std::vector<uint8_t> flags = {1, 0, 1};
  const std::vector<uint64_t> u64 = {5, std::numeric_limits<uint64_t>::max()};
  const std::string header = object({entry("u8", "U8", "[3]", 0, 3), entry("mask", "BOOL", "[3]", 3, 6),
                                     entry("u64", "U64", "[2]", 6, 22), entry("f8", "F8_E4M3", "[2]", 22, 24)});
  write_bytes(path, image(header, bytes_of(u8) + bytes_of(flags) + bytes_of(u64) + "\x38\x40"));
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  CHECK_FALSE(f.info("u8").dtype.has_value());
  CHECK(f.load("u8", DType::I64).to_vector<int64_t>() == std::vector<int64_t>{0, 200, 255});
  CHECK(f.load("mask", DType::I32).to_vector<int32_t>() == std::vector<int32_t>{1, 0, 1});
  CHECK(f.raw("f8").size() == 2);
  REQUIRE_THROWS_WITH(f.load("u64", DType::I64), Contains("value 18446744073709551615 does not fit in int64"));
  REQUIRE_THROWS_WITH(f.load("f8"), Contains("read its bytes with raw()") && Contains("F8_E4M3"));
}

// ---------------------------------------------------------------------------------------------------
// Errors when loading

TEST_CASE("safetensors: load rejects missing names and cross-kind conversions", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("gpt2.safetensors");
  save_safetensors(path, {{"transformer.wpe.weight", Tensor::ones({2})},
                          {"transformer.wte.weight", Tensor::ones({2})},
                          {"transformer.h.0.ln_1.weight", Tensor::ones({2})},
                          {"ids", Tensor::from_vector(std::vector<int64_t>{1, int64_t{1} << 33}, {2})}});
  const SafeTensorsFile f = SafeTensorsFile::open(path);
  // The closest name (longest common suffix) comes first.
  REQUIRE_THROWS_WITH(f.load("wte.weight"), Contains(path) && Contains("no tensor named 'wte.weight'") &&
                                                Contains("4 tensors") &&
                                                Contains("closest names: 'transformer.wte.weight'"));
  REQUIRE_THROWS_WITH(f.info("nope"), Contains("no tensor named 'nope'"));
  REQUIRE_THROWS_WITH(f.raw("nope"), Contains("no tensor named 'nope'"));
  REQUIRE_THROWS_WITH(f.load("transformer.wte.weight", DType::I64),
                      Contains("'transformer.wte.weight' holds floating-point F32") && Contains("truncate"));
  REQUIRE_THROWS_WITH(f.load("transformer.wte.weight", DType::I32), Contains("truncate"));
  REQUIRE_THROWS_WITH(f.load("ids"), Contains("holds integer I64") && Contains("int64"));
  REQUIRE_THROWS_WITH(f.load("ids", DType::I32), Contains("element 1 (value 8589934592) does not fit in int32"));

  const std::string empty_path = dir.file("empty.safetensors");
  save_safetensors(empty_path, std::vector<std::pair<std::string, Tensor>>{});
  const SafeTensorsFile e = SafeTensorsFile::open(empty_path);
  CHECK(e.size() == 0);
  REQUIRE_THROWS_WITH(e.load("x"), Contains("holds no tensors"));
}

TEST_CASE("safetensors: save rejects bad names before touching the file", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("s.safetensors");
  write_bytes(path, "original");
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"a", Tensor::ones({1})}, {"a", Tensor::ones({1})}}),
                      Contains("duplicate tensor name 'a'"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"__metadata__", Tensor::ones({1})}}), Contains("reserved"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"", Tensor::ones({1})}}), Contains("empty name"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"u", Tensor()}}), Contains("'u' is undefined"));
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"bad\xff", Tensor::ones({1})}}), Contains("not valid UTF-8"));
  CHECK(read_bytes(path) == "original");
  CHECK(dir.entries() == std::set<std::string>{"s.safetensors"});
}

// ---------------------------------------------------------------------------------------------------
// Hostile files

TEST_CASE("safetensors: hostile files give a clear error naming the file and the problem", "[safetensors]") {
  TempDir dir;
  const std::string f4 = R"("dtype":"F32","shape":[2])";
  const std::string data8(8, '\0'), data12(12, '\0');
  struct Case {
    std::string what, bytes, expected;
  };
  const std::vector<Case> cases = {
      {"empty file", "", "too short for the 8-byte header length"},
      {"5 bytes", "abcde", "too short"},
      {"length past the end", le64(100) + "{}", "the header length 100 runs past the end of the file"},
      {"absurd length", le64(uint64_t{1} << 40) + "{}", "absurdly large"},
      {"max length", le64(std::numeric_limits<uint64_t>::max()), "absurdly large"},
      {"empty header", le64(0), "does not start with '{'"},
      {"array header", image("[1, 2]"), "does not start with '{'"},
      {"leading space", image(" {}"), "does not start with '{'"},
      {"invalid JSON", image(R"({"a": )"), "not valid JSON"},
      {"trailing garbage", image("{} x"), "not valid JSON"},
      {"invalid UTF-8", image("{\"\xff\xfe\":{}}"), "not valid JSON"},
      {"entry not an object", image(R"({"a": 5})"), "the entry of tensor 'a' is not an object"},
      {"missing dtype", image(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data8),
       "tensor 'a' has no \"dtype\" field"},
      {"missing shape", image(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data8), "no \"shape\" field"},
      {"missing offsets", image(R"({"a":{"dtype":"F32","shape":[2]}})", data8), "no \"data_offsets\" field"},
      {"dtype not a string", image(R"({"a":{"dtype":1,"shape":[2],"data_offsets":[0,8]}})", data8),
       "\"dtype\" is not a string"},
      {"unknown dtype", image(object({entry("a", "F128", "[2]", 0, 8)}), data8), "unknown dtype 'F128'"},
      {"shape not an array", image(object({entry("a", "F32", "2", 0, 8)}), data8), "\"shape\" is not an array"},
      {"negative dim", image(object({entry("a", "F32", "[-2]", 0, 8)}), data8), "dimension 0 of \"shape\" is negative"},
      {"fractional dim", image(object({entry("a", "F32", "[2, 1.5]", 0, 8)}), data8),
       "dimension 1 of \"shape\" is not an integer"},
      {"string dim", image(object({entry("a", "F32", "[\"2\"]", 0, 8)}), data8), "is not a number"},
      {"huge dim", image(object({entry("a", "F32", "[18446744073709551615]", 0, 8)}), data8), "overflows 64 bits"},
      {"beyond u64 dim", image(object({entry("a", "F32", "[1e30]", 0, 8)}), data8), "is not an integer"},
      {"shape product overflow", image(object({entry("a", "F32", "[4294967296, 4294967296, 0]", 0, 0)})),
       "element count of shape [4294967296, 4294967296, ...] overflows 64 bits"},
      {"byte size overflow", image(object({entry("a", "F32", "[4611686018427387904]", 0, 8)}), data8),
       "byte size of shape [4611686018427387904] x F32 overflows"},
      {"offsets not a pair", image(R"({"a":{)" + f4 + R"(,"data_offsets":[0]}})", data8),
       "\"data_offsets\" is not an array [begin, end] (found a JSON array of 1 elements)"},
      {"offsets not an array", image(R"({"a":{)" + f4 + R"(,"data_offsets":"0-8"}})", data8),
       "\"data_offsets\" is not an array"},
      {"negative offset", image(R"({"a":{)" + f4 + R"(,"data_offsets":[-8,0]}})", data8),
       "data_offsets begin is negative"},
      {"begin after end", image(object({entry("a", "F32", "[2]", 8, 0)}), data8),
       "data_offsets [8, 0] begin after they end"},
      {"offsets out of range", image(object({entry("a", "F32", "[4]", 0, 16)}), data8),
       "data_offsets [0, 16] lie outside the data section (8 bytes)"},
      {"huge end", image(object({entry("a", "F32", "[2]", 0, 18446744073709551615ull)}), data8),
       "outside the data section"},
      {"size mismatch", image(object({entry("a", "F32", "[3]", 0, 8)}), data8),
       "shape [3] of F32 (4 bytes each) needs 12 bytes, but data_offsets [0, 8] hold 8"},
      {"overlap", image(object({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[2]", 4, 12)}), data12),
       "tensors 'a' and 'b' overlap"},
      {"gap", image(object({entry("a", "F32", "[1]", 4, 8)}), data8),
       "bytes [0, 4) of the data section belong to no tensor"},
      {"trailing data", image(object({entry("a", "F32", "[1]", 0, 4)}), data8), "holds 4 bytes after the last tensor"},
      {"duplicate names", image(object({entry("a", "F32", "[2]", 0, 8), entry("a", "F32", "[2]", 0, 8)}), data8),
       "duplicate tensor name 'a'"},
      {"duplicate field", image(R"({"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}})", data8),
       "duplicate key 'dtype' in the header entry 'a'"},
      {"duplicate metadata key", image(R"({"__metadata__":{"k":"1","k":"2"}})"),
       "duplicate key 'k' in the header entry '__metadata__'"},
      {"metadata not an object", image(R"({"__metadata__":["x"]})"), "\"__metadata__\" is not an object"},
      {"metadata value not a string", image(R"({"__metadata__":{"k":1}})"),
       "\"__metadata__\" value of 'k' is not a string"},
      {"deep nesting", image(object({std::string("\"a\":") + std::string(100000, '[') + std::string(100000, ']')})),
       "the header entry 'a' nests deeper than a safetensors entry can"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    INFO("case: " << c.what);
    const std::string path = dir.file(fmt::format("case{}.safetensors", i));
    write_bytes(path, c.bytes);
    REQUIRE_THROWS_AS(SafeTensorsFile::open(path), Error);
    REQUIRE_THROWS_WITH(SafeTensorsFile::open(path), Contains(path) && Contains(c.expected));
  }
  REQUIRE_THROWS_WITH(SafeTensorsFile::open(dir.file("missing.safetensors")), Contains("cannot open"));
  REQUIRE_THROWS_WITH(SafeTensorsFile::open(dir.path.string()), Contains("not a regular file"));
}

TEST_CASE("safetensors: truncated and bit-flipped files never crash", "[safetensors]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good,
                   {{"a", Tensor::from_vector(std::vector<float>{1, 2, 3}, {3})},
                    {"b", Tensor::from_vector(std::vector<int64_t>{4, 5}, {1, 2})},
                    {"c", Tensor::zeros({0})}},
                   {{"k", "v"}});
  const std::string bytes = read_bytes(good);
  const std::string path = dir.file("bad.safetensors");
  // Every load the file allows must succeed or throw lora::Error; anything else fails the test.
  auto exercise = [&] {
    try {
      const SafeTensorsFile f = SafeTensorsFile::open(path);
      for (const TensorInfo& t : f.tensors()) {
        for (DType to : {DType::F32, DType::I64, DType::F16}) {
          try {
            (void)f.load(t.name, to);
          } catch (const Error&) {
          }
        }
        (void)f.raw(t.name);
      }
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  for (size_t len = 0; len < bytes.size(); ++len) {
    write_bytes(path, bytes.substr(0, len));
    INFO("truncated to " << len);
    CHECK_FALSE(exercise());  // any truncation leaves the data section short
  }
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    for (uint8_t mask : {0x01, 0x08, 0x20, 0x80, 0xFF}) {
      std::string flipped = bytes;
      flipped[pos] = static_cast<char>(static_cast<uint8_t>(flipped[pos]) ^ mask);
      write_bytes(path, flipped);
      exercise();
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// write_file_atomically

TEST_CASE("atomic_file: writes a new file and replaces an old one, leaving no temporary", "[atomic_file]") {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  write_file_atomically(path, [](std::ostream& out) { out << "hello"; });
  CHECK(read_bytes(path) == "hello");
  // A large write mixing small and buffer-sized blocks.
  std::string big(300000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  write_file_atomically(path, [&](std::ostream& out) {
    out.write(big.data(), 10);
    out.write(big.data() + 10, 200000);
    for (size_t i = 200010; i < big.size(); ++i) out.put(big[i]);
  });
  CHECK(read_bytes(path) == big);
  CHECK(dir.entries() == std::set<std::string>{"out.bin"});
}

TEST_CASE("atomic_file: a writer that throws midway leaves the original intact and no temporary", "[atomic_file]") {
  TempDir dir;
  const std::string path = dir.file("keep.bin");
  write_bytes(path, "original contents");
  ::chmod(path.c_str(), 0640);
  auto throwing_writer = [](std::ostream& out) {
    out << std::string(100000, 'x');  // some of it already reached the temporary file
    throw std::runtime_error("writer failed midway");
  };
  REQUIRE_THROWS_WITH(write_file_atomically(path, throwing_writer), "writer failed midway");
  CHECK(read_bytes(path) == "original contents");
  CHECK(dir.entries() == std::set<std::string>{"keep.bin"});

  // A stream that went bad is reported, with the same clean-up.
  REQUIRE_THROWS_WITH(write_file_atomically(path, [](std::ostream& out) { out.setstate(std::ios::badbit); }),
                      Contains(path) && Contains("failed"));
  CHECK(read_bytes(path) == "original contents");
  CHECK(dir.entries() == std::set<std::string>{"keep.bin"});

  // A new file that fails is never created; a replaced file keeps its permissions.
  REQUIRE_THROWS(write_file_atomically(dir.file("new.bin"), throwing_writer));
  CHECK(dir.entries() == std::set<std::string>{"keep.bin"});
  write_file_atomically(path, [](std::ostream& out) { out << "new"; });
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
}

TEST_CASE("atomic_file: an unwritable destination is a lora::Error naming it", "[atomic_file]") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/out.bin");
  REQUIRE_THROWS_WITH(write_file_atomically(path, [](std::ostream& out) { out << "x"; }),
                      Contains(path) && Contains("cannot create the temporary file"));
  // save_safetensors goes through the same path.
  REQUIRE_THROWS_WITH(save_safetensors(path, {{"a", Tensor::ones({1})}}), Contains("cannot create the temporary file"));
}
