// GGUF: the reader against files written by llama.cpp's gguf-py (tests/fixtures/gguf/make_gguf_fixtures.py),
// the block decoders against its values, models converted as convert_hf_to_gguf.py converts them against
// PyTorch's logits and gradients, export -> import round trips, the tokenizer both ways, and hostile files.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/files.h"
#include "core/gguf.h"
#include "core/gguf_quants.h"
#include "core/half.h"
#include "models/gguf/arch.h"
#include "models/gguf/model_io.h"
#include "models/gguf/tokenizer.h"
#include "models/registry.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "nn/lora/apply_lora.h"
#include "tests/mapping_residency.h"
#include "tests/model_checks.h"

using namespace lora;
namespace fs = std::filesystem;
namespace gio = lora::models::gguf_io;

namespace {

const std::string kFixtures = std::string(LORA_TEST_DATA_DIR);
const std::string kGguf = kFixtures + "/gguf";

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_gguf_{}", ::getpid());
  fs::create_directories(dir);
  return dir / name;
}

std::vector<float> dequantize(const gguf::TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.elements()));
  const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(t.rows());
  for (int64_t r = 0; r < t.rows(); ++r)
    gguf::dequantize_row(t.type, t.data + r * row_bytes, out.data() + r * t.ne[0], t.ne[0]);
  return out;
}

}  // namespace

TEST_CASE("GGUF metadata written by gguf-py reads back with every value type", "[gguf]") {
  const gguf::File f = gguf::File::open(kGguf + "/metadata.gguf");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  CHECK(f.get_string("general.architecture") == "test");
  CHECK(f.find("t.u8")->u == 200);
  CHECK(f.find("t.i8")->i == -100);
  CHECK(f.find("t.u16")->u == 60000);
  CHECK(f.find("t.i16")->i == -30000);
  CHECK(f.get_uint("t.u32") == 4000000000u);
  CHECK(f.find("t.i32")->i == -2000000000);
  CHECK(f.get_float("t.f32") == 0.125);
  CHECK(f.get_uint("t.u64") == (uint64_t(1) << 63) + 5);
  CHECK(f.find("t.i64")->i == -(int64_t(1) << 62));
  CHECK(f.get_float("t.f64") == 1.0 / 3.0);
  CHECK(f.get_bool_or("t.bool") == true);
  CHECK(f.get_string("t.string") == "héllo, 世界");
  const gguf::Value& strings = f.get_array("t.strings", gguf::ValueType::STRING);
  REQUIRE(strings.array.size() == 3);
  CHECK(strings.array[2].s == "ü");
  CHECK(f.find("t.ints")->array.size() == 3);
  CHECK(f.find("t.floats")->array[1].f == -1.5);
  CHECK(f.find("t.bools")->array[0].u == 1);
  CHECK_THROWS_WITH(f.get_string("t.u8"), Catch::Contains("'t.u8' must be a string"));
  CHECK_THROWS_WITH(f.get_uint("missing.key"), Catch::Contains("'missing.key' is missing"));

  const gguf::TensorInfo* y = f.find_tensor("y");
  REQUIRE(y != nullptr);
  CHECK(y->ne == std::vector<int64_t>{3, 2});  // numpy [2, 3]: ggml order reversed
  CHECK(dequantize(*y) == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(dequantize(*f.find_tensor("x"))[9] == 9.0f);
}

TEST_CASE("GGUF block formats decode as gguf-py's reference dequantizers do", "[gguf]") {
  const gguf::File f = gguf::File::open(kGguf + "/blocks.gguf");
  for (const char* name : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K", "f16", "bf16"}) {
    INFO(name);
    const gguf::TensorInfo* t = f.find_tensor(name);
    const gguf::TensorInfo* expected = f.find_tensor(std::string(name) + ".expected");
    REQUIRE(t != nullptr);
    REQUIRE(expected != nullptr);
    CHECK(gguf::type_name(t->type) == std::string_view(name));
    const std::vector<float> got = dequantize(*t), want = dequantize(*expected);
    REQUIRE(got.size() == want.size());
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isinf(want[i])) {
        CHECK(got[i] == want[i]);
        continue;
      }
      worst = std::max(worst, std::abs(double(got[i]) - double(want[i])) / (1e-6 + std::abs(double(want[i]))));
    }
    CHECK(worst < 1e-6);  // numpy evaluates some products in another order: equal within f32 rounding
  }
}

TEST_CASE("GGUF export quantizes f16, bf16, q8_0 and q4_0 bit for bit as gguf-py does", "[gguf]") {
  const gguf::File f = gguf::File::open(kGguf + "/blocks.gguf");
  auto check = [&](const char* name, const char* source, gguf::TensorType type) {
    INFO(name);
    const gguf::TensorInfo& raw = *f.find_tensor(name);
    const std::vector<float> x = dequantize(*f.find_tensor(source));
    std::string bytes;
    for (int64_t r = 0; r < raw.rows(); ++r) gguf::quantize_row(type, x.data() + r * raw.ne[0], raw.ne[0], bytes);
    REQUIRE(bytes.size() == raw.nbytes);
    CHECK(std::memcmp(bytes.data(), raw.data, raw.nbytes) == 0);
  };
  check("q8_0", "q8_0.source", gguf::TensorType::Q8_0);
  check("q4_0", "q4_0.source", gguf::TensorType::Q4_0);
  check("f16", "f32.source", gguf::TensorType::F16);
  check("bf16", "f32.source", gguf::TensorType::BF16);
}

TEST_CASE("GGUF models converted as llama.cpp converts them match PyTorch: logits, loss, gradients, greedy tokens",
          "[gguf]") {
  // gpt2_tiny: Conv1D weights transposed; llama_tied: q/k rows permuted (llama.cpp rotates pairs) and no
  // output.weight (tied); qwen2_tiny: q/k/v biases, no permutation.
  for (const char* name : {"gpt2_tiny", "llama_tied", "qwen2_tiny"}) {
    INFO(name);
    auto model = models::load_model(kGguf + "/" + name + ".gguf", "");
    CHECK(testing::check_against_reference(*model, kFixtures + "/" + name + "/expected.safetensors") > 0);
  }
}

TEST_CASE("GGUF export then import gives the same model (f32 exactly, f16/bf16/q8_0/q4_0 within their rounding)",
          "[gguf]") {
  // A tokenizer from the fixtures, and models whose vocabulary holds it.
  const gio::TokenizerFiles tok{read_file(kFixtures + "/tokenizers/qwen2/tokenizer.json", "t"),
                                read_file(kFixtures + "/tokenizers/qwen2/tokenizer_config.json", "t"), "qwen2 fixture"};
  nlohmann::json gpt2 = models::preset_config("tiny"), llama = models::preset_config("llama-tiny");
  gpt2["vocab_size"] = 864;
  llama["vocab_size"] = 864;
  llama["hidden_size"] = 64, llama["intermediate_size"] = 96;  // rows of whole q8_0/q4_0 blocks
  for (const nlohmann::json& config : {gpt2, llama}) {
    auto model = models::create_model({config, "test"}, 7);
    model->eval();
    const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 99, 3, 800, 42, 17}, {1, 6});
    NoGradGuard no_grad;
    const Tensor reference = model->forward(ids);
    for (const auto& [type, tolerance] :
         std::vector<std::pair<gguf::TensorType, double>>{{gguf::TensorType::F32, 0.0},
                                                          {gguf::TensorType::F16, 1e-2},
                                                          {gguf::TensorType::BF16, 5e-2},
                                                          {gguf::TensorType::Q8_0, 5e-2},
                                                          {gguf::TensorType::Q4_0, 0.3}}) {
      INFO(config["model_type"] << " " << gguf::type_name(type));
      const fs::path path =
          scratch(fmt::format("rt_{}_{}.gguf", config["model_type"].get<std::string>(), gguf::type_name(type)));
      const gio::ExportSummary summary = gio::export_gguf(*model, tok, type, path.string());
      CHECK(summary.bytes == fs::file_size(path));
      auto back = models::load_model(path.string(), "");
      back->eval();
      // Every weight is exactly the original rounded to the type (1-D tensors stay f32).
      const auto original = model->named_parameters(), loaded = back->named_parameters();
      REQUIRE(original.size() == loaded.size());
      for (size_t i = 0; i < original.size(); ++i) {
        const Tensor& w = original[i].second;
        const int64_t row = w.size(w.rank() - 1);
        gguf::TensorType t = w.rank() < 2 ? gguf::TensorType::F32 : type;
        const std::string gguf_name = gio::gguf_tensor_name(model->model_type(), original[i].first);
        const bool tied = model->hf_config().value("tie_word_embeddings", false);
        if (t == gguf::TensorType::Q4_0 &&
            (gguf_name == "output.weight" || (gguf_name == "token_embd.weight" && tied))) {
          t = gguf::TensorType::Q8_0;  // the output head of a 4-bit export stays 8-bit
        }
        if (row % gguf::type_traits(t).block_size != 0) t = gguf::TensorType::F16;  // export's fallback
        std::vector<float> values = w.to_vector<float>(), rounded(values.size());
        std::string bytes;
        for (size_t at = 0; at < values.size(); at += static_cast<size_t>(row)) {
          bytes.clear();
          gguf::quantize_row(t, values.data() + at, row, bytes);
          gguf::dequantize_row(t, reinterpret_cast<const uint8_t*>(bytes.data()), rounded.data() + at, row);
        }
        INFO(original[i].first);
        CHECK(loaded[i].first == original[i].first);
        CHECK(loaded[i].second.to_vector<float>() == rounded);
      }
      const Tensor logits = back->forward(ids);
      if (tolerance == 0.0) {
        CHECK(logits.to_vector<float>() == reference.to_vector<float>());
      } else {
        // The logits move by the weights' rounding: within `tolerance` of their largest magnitude.
        const std::vector<float> got = logits.to_vector<float>(), want = reference.to_vector<float>();
        double scale = 0.0, worst = 0.0;
        for (size_t i = 0; i < want.size(); ++i) {
          scale = std::max(scale, std::abs(double(want[i])));
          worst = std::max(worst, std::abs(double(got[i]) - double(want[i])));
        }
        CHECK(worst <= tolerance * scale);
      }
    }
  }
}

TEST_CASE("GGUF tokenizers: tokenizer.json -> GGUF keys -> tokenizer encodes and decodes as the original", "[gguf]") {
  const std::vector<std::string> texts = {"Hello world! It's 2024, isn't it?", "  leading spaces and\nnew lines\n\n",
                                          "numbers 1234567 and 3.14",          "ünïcödé 世界 🙂",
                                          "<|im_start|>user\nhi<|im_end|>",    "don't WON'T I'm"};
  for (const char* name : {"gpt2", "llama3", "qwen2"}) {
    INFO(name);
    const std::string dir = kFixtures + "/tokenizers/" + name;
    const gio::TokenizerFiles files{read_file(dir + "/tokenizer.json", "t"),
                                    read_file(dir + "/tokenizer_config.json", "t"), name};
    const auto original = tokenizer::HFTokenizer::from_json(files.tokenizer_json, name, files.tokenizer_config_json);
    const int64_t vocab = static_cast<int64_t>(original.vocab_size());
    gguf::Writer w;
    w.set("general.architecture", gguf::Value::string("qwen2"));
    for (auto& [key, value] : gio::tokenizer_to_gguf(files, nlohmann::json::object(), vocab))
      w.set(key, std::move(value));
    const std::string bytes = w.to_bytes();
    const gguf::File f = gguf::File::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
    const auto back = gio::load_gguf_tokenizer(f);
    CHECK(back->vocab_size() == original.vocab_size());
    CHECK(back->bos_id() == original.bos_id());
    CHECK(back->eos_id() == original.eos_id());
    for (const std::string& text : texts) {
      INFO(text);
      for (bool add : {false, true}) {
        const auto ids = original.encode(text, {.add_special_tokens = add});
        CHECK(back->encode(text, {.add_special_tokens = add}) == ids);
        CHECK(back->decode(ids, {}) == original.decode(ids, {}));
      }
    }
  }
}

TEST_CASE("GGUF tokenizer metadata names the pre-tokenizer, special ids, add_bos and the chat template", "[gguf]") {
  const std::string dir = kFixtures + "/tokenizers/llama3";
  const gio::TokenizerFiles files{read_file(dir + "/tokenizer.json", "t"),
                                  read_file(dir + "/tokenizer_config.json", "t"), "llama3"};
  gguf::Writer w;
  for (auto& [key, value] : gio::tokenizer_to_gguf(files, nlohmann::json::object(), 909)) w.set(key, std::move(value));
  const std::string bytes = w.to_bytes();
  const gguf::File f = gguf::File::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "llama3");
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre") == "llama-bpe");
  CHECK(f.get_uint("tokenizer.ggml.bos_token_id") == 903);
  CHECK(f.get_bool_or("tokenizer.ggml.add_bos_token") == true);
  CHECK(f.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING).array.size() == 909);
  CHECK(f.get_array("tokenizer.ggml.token_type", gguf::ValueType::I32).array[903].i == 3);  // control
  // A tokenizer for more ids than the model has is refused.
  CHECK_THROWS_WITH(gio::tokenizer_to_gguf(files, nlohmann::json::object(), 100),
                    Catch::Contains("more than the model's 100"));
  // SentencePiece-style (byte_fallback) vocabularies are written as "llama": tests/test_gguf_spm.cpp.
}

TEST_CASE("GGUF export: any field of the tokenizer files of another type is refused with a message naming them",
          "[gguf]") {
  const std::string dir = kFixtures + "/tokenizers/llama3";
  const auto tok = nlohmann::json::parse(read_file(dir + "/tokenizer.json", "t"));
  const auto cfg = nlohmann::json::parse(read_file(dir + "/tokenizer_config.json", "t"));
  const std::vector<nlohmann::json> wrong = {
      nullptr, true, 7, -1, "text", nlohmann::json::array({1, "a"}), nlohmann::json::object({{"x", 1}})};
  const std::vector<std::string> tok_paths = {"/model",
                                              "/model/type",
                                              "/model/vocab",
                                              "/model/vocab/!",
                                              "/model/merges",
                                              "/model/merges/0",
                                              "/model/byte_fallback",
                                              "/model/unk_token",
                                              "/added_tokens",
                                              "/added_tokens/0",
                                              "/added_tokens/0/id",
                                              "/added_tokens/0/content",
                                              "/added_tokens/0/special",
                                              "/pre_tokenizer",
                                              "/pre_tokenizer/type",
                                              "/post_processor",
                                              "/post_processor/type",
                                              "/post_processor/single",
                                              "/normalizer"};
  const std::vector<std::string> cfg_paths = {
      "", "/bos_token", "/eos_token", "/add_bos_token", "/chat_template", "/pad_token"};
  int refused = 0, accepted = 0;
  auto attempt = [&](const nlohmann::json& t, const nlohmann::json& c, const std::string& what) {
    INFO(what);
    try {
      gio::tokenizer_to_gguf({t.dump(), c.dump(), "the-model-folder"}, nlohmann::json::object(), 909);
      ++accepted;
    } catch (const Error& e) {
      ++refused;
      CHECK(std::string(e.what()).find("the-model-folder") != std::string::npos);
    } catch (const std::exception& e) {
      FAIL("an exception that is not lora::Error: " << e.what());
    }
  };
  for (const std::string& path : tok_paths) {
    for (const nlohmann::json& value : wrong) {
      nlohmann::json t = tok;
      t[nlohmann::json::json_pointer(path)] = value;
      attempt(t, cfg, "tokenizer.json " + path + " = " + value.dump());
    }
  }
  for (const std::string& path : cfg_paths) {
    for (const nlohmann::json& value : wrong) {
      nlohmann::json c = cfg;
      c[nlohmann::json::json_pointer(path)] = value;
      attempt(tok, c, "tokenizer_config.json " + (path.empty() ? "(the whole document)" : path) + " = " + value.dump());
    }
  }
  CHECK(refused > 50);  // most of them; a few (a null pad_token, say) are legitimately read as absent
  CHECK(accepted > 0);
}

TEST_CASE("GGUF names and Llama's q/k permutation follow llama.cpp's converter", "[gguf]") {
  CHECK(gio::gguf_tensor_name("gpt2", "transformer.h.11.attn.c_attn.weight") == "blk.11.attn_qkv.weight");
  CHECK(gio::gguf_tensor_name("llama", "model.layers.3.self_attn.o_proj.weight") == "blk.3.attn_output.weight");
  CHECK(gio::gguf_tensor_name("mistral", "model.norm.weight") == "output_norm.weight");
  CHECK(gio::hf_tensor_name("qwen2", "blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias");
  CHECK(gio::hf_tensor_name("llama", "blk.01.attn_k.bias").empty());  // not a layer number llama.cpp writes
  CHECK(gio::hf_tensor_name("llama", "rope_freqs.weight").empty());
  // convert_hf_to_gguf.py's permute for 2 heads of 4 rows: [0, 1, 2, 3 | 4, 5, 6, 7] -> [0, 2, 1, 3 | 4, 6, 5, 7].
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < 8; ++r) rows.push_back(gio::hf_row_of_gguf_row(r, 8, 2));
  CHECK(rows == std::vector<int64_t>{0, 2, 1, 3, 4, 6, 5, 7});
}

TEST_CASE("GGUF LoRA adapter: lora_a / lora_b under the base names, GPT-2's q and v slices with zero k rows",
          "[gguf]") {
  nlohmann::json config = models::preset_config("tiny");
  auto model = models::create_model({config, "test"}, 3);
  nn::LoRAConfig lora;
  lora.targets = {"q", "v"};
  lora.options.rank = 4;
  lora.options.alpha = 8.0;
  nn::apply_lora(*model, lora, model->lora_targets());
  NoGradGuard no_grad;
  Generator gen(5);
  for (const auto& [path, layer] : nn::lora_layers(*model))
    layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen));
  const fs::path path = scratch("adapter.gguf");
  gio::export_gguf_adapter(*model, path.string());
  const gguf::File f = gguf::File::open(path.string());
  CHECK(f.get_string("general.type") == "adapter");
  CHECK(f.get_string("adapter.type") == "lora");
  CHECK(f.get_string("general.architecture") == "gpt2");
  const double alpha = f.get_float("adapter.lora.alpha");
  for (const auto& [layer_path, layer] : nn::lora_layers(*model)) {
    INFO(layer_path);
    const std::string base = gio::gguf_tensor_name("gpt2", layer_path + ".weight");
    const gguf::TensorInfo* a = f.find_tensor(base + ".lora_a");
    const gguf::TensorInfo* b = f.find_tensor(base + ".lora_b");
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    const int64_t C = layer->in_features(), rank = a->ne[1];
    CHECK(a->ne == std::vector<int64_t>{C, 8});  // two slices of rank 4
    CHECK(b->ne == std::vector<int64_t>{8, 3 * C});
    // llama.cpp adds (alpha / rank) B A: it must equal what merge() adds.
    const std::vector<float> A = dequantize(*a), B = dequantize(*b);
    const Tensor before = layer->base_layer->weight.clone();
    layer->merge();
    const std::vector<float> merged = layer->base_layer->weight.to_vector<float>(), base_w = before.to_vector<float>();
    layer->unmerge();
    double worst = 0.0;
    for (int64_t o = 0; o < 3 * C; ++o) {
      for (int64_t i = 0; i < C; ++i) {
        double delta = 0.0;
        for (int64_t k = 0; k < rank; ++k) delta += double(B[o * rank + k]) * double(A[k * C + i]);
        delta *= alpha / double(rank);
        worst = std::max(worst, std::abs(delta - (double(merged[o * C + i]) - double(base_w[o * C + i]))));
        if (o >= C && o < 2 * C) CHECK(delta == 0.0);  // k rows: not adapted
      }
    }
    CHECK(worst < 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------------
// Hostile files: every count, length, offset, alignment, dimension and type id checked before use.

namespace {

// A GGUF file assembled byte by byte, so that each field can be made wrong on its own.
struct Builder {
  std::string kv, tensors;
  uint64_t n_kv = 0, n_tensors = 0;
  uint32_t version = 3;
  uint64_t data_bytes = 64;

  template <typename T>
  static void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static void put_str(std::string& s, const std::string& v) {
    put<uint64_t>(s, v.size());
    s += v;
  }
  Builder& key_u32(const std::string& key, uint32_t v, uint32_t type = 4) {
    put_str(kv, key);
    put<uint32_t>(kv, type);
    put<uint32_t>(kv, v);
    ++n_kv;
    return *this;
  }
  Builder& tensor(const std::string& name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    put_str(tensors, name);
    put<uint32_t>(tensors, static_cast<uint32_t>(ne.size()));
    for (int64_t d : ne) put<int64_t>(tensors, d);
    put<uint32_t>(tensors, type);
    put<uint64_t>(tensors, offset);
    ++n_tensors;
    return *this;
  }
  std::string bytes() const {
    std::string s = "GGUF";
    put<uint32_t>(s, version);
    put<uint64_t>(s, n_tensors);
    put<uint64_t>(s, n_kv);
    s += kv + tensors;
    s.resize((s.size() + 31) / 32 * 32, '\0');
    s.append(data_bytes, '\0');
    return s;
  }
};

gguf::File parse(const std::string& bytes, gguf::MetadataArrays arrays = gguf::MetadataArrays::Keep) {
  return gguf::File::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "hostile.gguf", arrays);
}

// Refused with `message`, whether the metadata's arrays are kept or only validated.
void refused(const std::string& bytes, const std::string& message) {
  INFO(message);
  CHECK_THROWS_WITH(parse(bytes), Catch::Contains(message));
  CHECK_THROWS_WITH(parse(bytes, gguf::MetadataArrays::LengthOnly), Catch::Contains(message));
}

}  // namespace

TEST_CASE("GGUF reader: a valid file, and every truncation of it refused without reading past its end", "[gguf]") {
  Builder b;
  b.key_u32("general.alignment", 32).tensor("a", {4, 2}, 0, 0).tensor("b", {32}, 8, 32);
  b.data_bytes = 96;
  const std::string good = b.bytes();
  const gguf::File f = parse(good);
  CHECK(f.tensors().size() == 2);
  CHECK(f.find_tensor("b")->nbytes == 34);
  const uint64_t needed = f.data_offset() + 32 + 34;
  // Copies of each prefix (so ASan sees any read past the end).
  for (size_t n = 0; n < needed; ++n) {
    std::vector<uint8_t> prefix(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    INFO("length " << n);
    CHECK_THROWS_AS(gguf::File::parse(prefix.data(), prefix.size(), "truncated.gguf"), Error);
  }
}

TEST_CASE("GGUF reader refuses bad headers, naming the problem and the offset", "[gguf]") {
  refused("GGUX" + std::string(20, '\0'), "not a GGUF file");
  {
    Builder b;
    b.version = 1;
    refused(b.bytes(), "version 1 is not supported");
  }
  {
    Builder b;
    b.n_kv = uint64_t(1) << 62;
    refused(b.bytes(), "metadata entries cannot fit");
  }
  {
    Builder b;
    b.n_tensors = uint64_t(1) << 60;
    refused(b.bytes(), "tensors cannot fit");
  }
  {
    Builder b;
    Builder::put<uint64_t>(b.kv, uint64_t(1) << 63);  // a key of 2^63 bytes
    b.n_kv = 1;
    refused(b.bytes(), "a string of 9223372036854775808 bytes");
  }
  {
    Builder b;
    b.key_u32("bad\xff\xfekey", 1);
    refused(b.bytes(), "not valid UTF-8");
  }
  {
    Builder b;
    b.key_u32("k", 1).key_u32("k", 2);
    refused(b.bytes(), "'k' appears twice");
  }
  {
    Builder b;
    b.key_u32("k", 1, 13);
    refused(b.bytes(), "unknown value type 13");
  }
  {
    Builder b;  // an array of arrays
    Builder::put_str(b.kv, "nested");
    Builder::put<uint32_t>(b.kv, 9);
    Builder::put<uint32_t>(b.kv, 9);
    Builder::put<uint64_t>(b.kv, 1);
    b.n_kv = 1;
    refused(b.bytes(), "arrays of arrays");
  }
  {
    Builder b;  // an array claiming 2^61 u32 elements
    Builder::put_str(b.kv, "big");
    Builder::put<uint32_t>(b.kv, 9);
    Builder::put<uint32_t>(b.kv, 4);
    Builder::put<uint64_t>(b.kv, uint64_t(1) << 61);
    b.n_kv = 1;
    refused(b.bytes(), "cannot fit");
  }
  {
    Builder b;
    Builder::put_str(b.kv, "flag");
    Builder::put<uint32_t>(b.kv, 7);
    Builder::put<uint8_t>(b.kv, 2);
    b.n_kv = 1;
    refused(b.bytes(), "a bool must be 0 or 1");
  }
  {
    Builder b;
    b.key_u32("general.alignment", 48);
    refused(b.bytes(), "not a power of two");
  }
  {
    Builder b;
    b.key_u32("general.alignment", 0);
    refused(b.bytes(), "not a power of two");
  }
  {
    Builder b;
    b.key_u32("general.alignment", 32, 5);  // an i32
    refused(b.bytes(), "general.alignment must be a u32");
  }
}

TEST_CASE("GGUF reader: MetadataArrays::LengthOnly validates every array element and keeps only the length", "[gguf]") {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::strings({"a", "bb", "\xc3\xbc"}));
  w.set("tokenizer.ggml.scores", gguf::Value::f32s({0.5f, -1.0f, 2.0f}));
  w.set("llama.block_count", gguf::Value::u32(2));
  const std::string good = w.to_bytes();
  const gguf::File kept = parse(good), lean = parse(good, gguf::MetadataArrays::LengthOnly);
  REQUIRE(lean.metadata().size() == kept.metadata().size());
  for (size_t i = 0; i < kept.metadata().size(); ++i) {
    const auto& [key, value] = kept.metadata()[i];
    INFO(key);
    CHECK(lean.metadata()[i].first == key);
    CHECK(lean.metadata()[i].second.str() == value.str());  // "array of 3 string" either way
  }
  CHECK(lean.get_string("general.architecture") == "llama");
  CHECK(lean.get_uint("llama.block_count") == 2);
  CHECK(kept.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING).array.at(2).s == "\xc3\xbc");
  const gguf::Value* tokens = lean.find("tokenizer.ggml.tokens");
  REQUIRE(tokens != nullptr);
  CHECK(tokens->array.empty());
  CHECK(tokens->skipped == 3);
  CHECK_THROWS_WITH(lean.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING),
                    Catch::Contains("'tokenizer.ggml.tokens' was not kept"));

  // An element that is not valid UTF-8, or runs past the end, is refused either way (refused() tries both).
  std::string bad = good;
  const size_t at = bad.find("bb");
  REQUIRE(at != std::string::npos);
  bad[at] = '\xff';
  refused(bad, "not valid UTF-8");
  refused(good.substr(0, good.find("bb") + 1), "bytes");
}

TEST_CASE("GGUF reader: the header and metadata's pages of the mapping are dropped once parsed", "[gguf][memory]") {
  // 200,000 strings of 20 bytes: 5.6 MB of metadata, copied out as it is parsed.
  std::vector<std::string> strings;
  for (int i = 0; i < 200000; ++i) strings.push_back(fmt::format("token-{:014d}", i));
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::strings(strings));
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_gguf_meta_{}", ::getpid());
  fs::create_directories(dir);
  const std::string path = fs::weakly_canonical(dir / "meta.gguf").string();
  w.write(path);
  for (const auto arrays : {gguf::MetadataArrays::Keep, gguf::MetadataArrays::LengthOnly}) {
    const gguf::File f = gguf::File::open(path, arrays);
    CHECK(lora::testing::resident_kib_of_mapping(path) <= 256);  // of 5,500 KiB
    if (arrays == gguf::MetadataArrays::Keep)
      CHECK(f.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING).array.at(123456).s == strings[123456]);
  }
  fs::remove_all(dir);
}

TEST_CASE("GGUF reader refuses bad tensor descriptions", "[gguf]") {
  auto one = [](std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    Builder b;
    b.tensor("t", std::move(ne), type, offset);
    return b.bytes();
  };
  refused(one({}, 0, 0), "0 dimensions");
  refused(one({1, 1, 1, 1, 1}, 0, 0), "5 dimensions");
  refused(one({4, -1}, 0, 0), "dimension 1 is -1");
  refused(one({int64_t(1) << 40, int64_t(1) << 40}, 0, 0), "element count overflows");
  refused(one({int64_t(1) << 62}, 0, 0), "byte size overflows");
  refused(one({4}, 4, 0), "unknown tensor type 4");
  refused(one({4}, 99, 0), "unknown tensor type 99");
  refused(one({33}, 8, 0), "not a multiple of q8_0's block of 32");
  refused(one({4}, 0, 16), "not a multiple of the alignment 32");
  refused(one({4}, 0, 64), "runs past the end of the file");
  refused(one({4}, 0, ~uint64_t(31)), "runs past the end of the file");  // offset + size overflows
  {
    Builder b;
    b.tensor("a", {16}, 0, 0).tensor("b", {16}, 0, 32);  // a is 64 bytes: overlaps b
    b.data_bytes = 128;
    refused(b.bytes(), "overlap");
  }
  {
    Builder b;
    b.tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32);
    refused(b.bytes(), "'a' appears twice");
  }
  {
    Builder b;
    b.tensor("", {4}, 0, 0);
    refused(b.bytes(), "empty name");
  }
}

TEST_CASE("GGUF models: unknown architectures and keys that change the model are refused by name", "[gguf]") {
  const std::string source = kGguf + "/llama_tied.gguf";
  const std::string bytes = read_file(source, "fixture");
  const gguf::File f = parse(bytes);
  // The same metadata plus one key lora.cpp does not implement.
  auto with = [&](const std::string& key, gguf::Value value, const std::string& arch = "") {
    gguf::Writer w;
    for (const auto& [k, v] : f.metadata())
      w.set(k, k == "general.architecture" && !arch.empty() ? gguf::Value::string(arch) : v);
    w.set(key, std::move(value));
    for (const gguf::TensorInfo& t : f.tensors()) {
      w.add_tensor(t.name, t.ne, t.type,
                   [&t](std::string& out) { out.append(reinterpret_cast<const char*>(t.data), t.nbytes); });
    }
    const fs::path path = scratch("hostile_model.gguf");
    w.write(path.string());
    return path.string();
  };
  CHECK_THROWS_WITH(
      models::load_model(with("llama.attention.sliding_window", gguf::Value::u32(16)), ""),
      Catch::Contains("'llama.attention.sliding_window' (16) changes the llama model and is not supported"));
  CHECK_THROWS_WITH(models::load_model(with("llama.rope.scaling.type", gguf::Value::string("yarn")), ""),
                    Catch::Contains("rope.scaling.type = 'yarn' is not supported"));
  CHECK_THROWS_WITH(models::load_model(with("llama.expert_count", gguf::Value::u32(8)), ""),
                    Catch::Contains("mixture-of-experts"));
  CHECK_THROWS_WITH(models::load_model(with("general.note", gguf::Value::u32(0), "falcon"), ""),
                    Catch::Contains("general.architecture 'falcon' is not supported"));
  CHECK_THROWS_WITH(models::load_model(source, "gpt2"), Catch::Contains("describes its model itself"));
}
