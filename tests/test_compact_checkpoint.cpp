// A compact base saved as safetensors and read back as stored (models/compact_checkpoint.h): the same weights to
// the bit in every format, the same logits and the same frozen-base fingerprint (so a run resumes across the
// two), sharded or not; and refused, naming what is wrong, by programs that need float weights and for every
// kind of malformed file.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "models/base_dtype.h"
#include "models/compact_checkpoint.h"
#include "models/hf_checkpoint.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "train/checkpoint.h"

using namespace lora;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_compact_{}_{}", name, ::getpid());
  fs::remove_all(dir);
  return dir;
}

// Every tensor of a compact weight's encoding as bytes (the int32 holders' zero padding included: it must match).
std::vector<uint8_t> encoding_of(const QuantizedWeight& w) {
  std::vector<uint8_t> out;
  for (const Tensor* t : {&w.data, &w.scale, &w.absmax_codes, &w.absmax_scale}) {
    if (!t->defined()) continue;
    const auto* p = static_cast<const uint8_t*>(t->raw_data());
    out.insert(out.end(), p, p + t->nbytes());
  }
  return out;
}

void check_same_base(const models::CausalLM& loaded, const models::CausalLM& reference) {
  const auto mine = nn::named_compact_weights(loaded), theirs = nn::named_compact_weights(reference);
  REQUIRE(mine.size() == theirs.size());
  REQUIRE(!mine.empty());
  for (size_t i = 0; i < mine.size(); ++i) {
    INFO(mine[i].first);
    CHECK(mine[i].first == theirs[i].first);
    const QuantizedWeight &a = *mine[i].second, &b = *theirs[i].second;
    CHECK(a.format == b.format);
    CHECK(a.rows == b.rows);
    CHECK(a.cols == b.cols);
    CHECK(a.double_quant == b.double_quant);
    CHECK(a.absmax_mean == b.absmax_mean);
    CHECK(encoding_of(a) == encoding_of(b));
  }
  CHECK(train::RunIdentity::fingerprint(loaded) == train::RunIdentity::fingerprint(reference));
}

std::vector<float> logits_of(models::CausalLM& model) {
  NoGradGuard no_grad;
  return model.forward(Tensor::from_vector(std::vector<int32_t>{5, 99, 3, 42, 17, 8}, {1, 6})).to_vector<float>();
}

// GPT-2's layout (Conv1D weights stored [in, out]) at a width of whole q8_0/q4_0 blocks.
nlohmann::json small_gpt2() {
  nlohmann::json config = models::preset_config("tiny");
  config["n_embd"] = 64;
  return config;
}

nlohmann::json small_llama() {
  nlohmann::json config = models::preset_config("llama-tiny");
  config["hidden_size"] = 128, config["intermediate_size"] = 256, config["head_dim"] = 32;
  config["tie_word_embeddings"] = false;
  return config;
}

// A model of `config` with its base compact in `format` (nf4: double-quantized or not), as a program holds it.
std::shared_ptr<models::CausalLM> compact_model(const nlohmann::json& config, QuantFormat format, bool double_quant) {
  auto model = models::create_model({config, "test"}, 7);
  model->freeze();
  model->eval();
  const std::set<std::string> body = models::base_linear_paths(*model);
  nn::quantize_frozen_linears(*model, format, double_quant, [&](const std::string& p) { return body.count(p) > 0; });
  return model;
}

// `dir` read back with `base`: the same compact base and logits as `reference`. Returns the model read.
std::shared_ptr<models::CausalLM> check_reads_back(const fs::path& dir, const models::BaseDtype& base,
                                                   models::CausalLM& reference) {
  auto loaded = models::load_model(dir.string(), "", 0, base);
  loaded->freeze();
  loaded->eval();
  check_same_base(*loaded, reference);
  CHECK(logits_of(*loaded) == logits_of(reference));
  return loaded;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("a compact base saved and read back as stored: the same bits, logits and fingerprint",
          "[quantized][checkpoint]") {
  const fs::path dir = temp_dir("roundtrip");
  struct Case {
    const char* model;
    QuantFormat format;
    bool double_quant;
  };
  for (const Case c : {Case{"gpt2", QuantFormat::BF16, false}, Case{"gpt2", QuantFormat::Q8_0, false},
                       Case{"gpt2", QuantFormat::Q4_0, false}, Case{"gpt2", QuantFormat::NF4, true},
                       Case{"llama", QuantFormat::NF4, false}, Case{"llama", QuantFormat::Q4_0, false},
                       Case{"llama", QuantFormat::BF16, false}}) {
    INFO(c.model << " " << quant_format_name(c.format) << (c.double_quant ? " double-quantized" : ""));
    const nlohmann::json config = std::string(c.model) == "llama" ? small_llama() : small_gpt2();
    auto reference = compact_model(config, c.format, c.double_quant);
    models::save_hf_checkpoint(*reference, dir.string());

    // Read as stored by auto and by the format itself; the config names lora.cpp's method.
    const nlohmann::json written = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    CHECK(written["quantization_config"]["quant_method"] == "lora.cpp");
    CHECK(written["quantization_config"]["formats"] == nlohmann::json::array({quant_format_name(c.format)}));
    CHECK(models::resolved_base_format(models::BaseDtype::parse("auto"), dir.string()) == c.format);
    for (const models::BaseDtype& base : {models::BaseDtype::parse("auto"), models::BaseDtype{false, c.format}}) {
      const auto loaded = check_reads_back(dir, base, *reference);
      // Counted with its compact weights, the model is as large as the float one.
      CHECK(loaded->num_parameters() + nn::num_compact_weights(*loaded) ==
            models::create_model({config, "test"})->num_parameters());
      // The float parameters too (embeddings, norms, biases, the head).
      const auto a = loaded->named_parameters(), b = reference->named_parameters();
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].second.to_vector<float>() == b[i].second.to_vector<float>());
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("a compact base sharded: every weight's encoding stays in one shard, and it reads back the same",
          "[quantized][checkpoint]") {
  const fs::path dir = temp_dir("sharded");
  auto reference = compact_model(small_llama(), QuantFormat::NF4, true);
  models::save_hf_checkpoint(*reference, dir.string(), 100'000);
  const models::HFWeights files = models::HFWeights::open(dir.string());
  REQUIRE(files.num_files() > 3);
  const auto stored = models::stored_compact_weights(files);  // checks each file holds what it declares
  CHECK(stored.size() == models::base_linear_paths(*reference).size());
  check_reads_back(dir, models::BaseDtype::parse("auto"), *reference);
  fs::remove_all(dir);
}

TEST_CASE("a compact token embedding and head (a GGUF-made base) are saved and read back compact",
          "[quantized][checkpoint]") {
  const fs::path dir = temp_dir("tables");
  auto reference = compact_model(small_llama(), QuantFormat::Q4_0, false);
  models::make_tables_compact(*reference, {QuantFormat::Q8_0, QuantFormat::Q8_0});
  REQUIRE(reference->compact_head() != nullptr);
  models::save_hf_checkpoint(*reference, dir.string());
  const models::CompactTables tables = models::compact_tables(models::BaseDtype::parse("auto"), dir.string());
  CHECK(tables.embedding == QuantFormat::Q8_0);
  CHECK(tables.head == QuantFormat::Q8_0);
  CHECK(models::resolved_base_format(models::BaseDtype::parse("auto"), dir.string()) == QuantFormat::Q4_0);
  // --base-dtype q4_0 names the body's format: the tables keep theirs.
  const auto loaded = check_reads_back(dir, models::BaseDtype{false, QuantFormat::Q4_0}, *reference);
  CHECK(loaded->compact_head() != nullptr);
  fs::remove_all(dir);
}

TEST_CASE("a compact base is refused by what needs float weights, and another quantization method is refused",
          "[quantized][checkpoint]") {
  const fs::path dir = temp_dir("refused");
  auto reference = compact_model(small_gpt2(), QuantFormat::NF4, true);
  models::save_hf_checkpoint(*reference, dir.string());
  // Float32 (a full fine-tune, merge_lora, export_gguf), another format, quantizing again.
  for (const std::string& message :
       {error_of([&] { models::load_model(dir.string(), ""); }), error_of([&] {
          models::load_model(dir.string(), "", 0, models::BaseDtype{false, QuantFormat::Q8_0});
        })}) {
    CHECK_THAT(message, Contains("stored compact (nf4"));
    CHECK_THAT(message, Contains(dir.string()));
  }
  const models::HFWeights files = models::HFWeights::open(dir.string());
  auto meta_model = [&] {
    DefaultDeviceGuard meta(Device::meta());
    return models::create_model(models::resolve_config(dir.string(), ""));
  };
  CHECK_THAT(error_of([&] { models::load_hf_weights(*meta_model(), files); }), Contains("compact base (nf4"));
  CHECK_THAT(error_of([&] { models::load_hf_weights_compact(*meta_model(), files, QuantFormat::Q4_0); }),
             Contains("quantized again to q4_0"));

  // config.json: another method (bitsandbytes' 4-bit) is refused by name; lora.cpp's over float files too.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  config["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}};
  std::ofstream(dir / "config.json") << config.dump();
  CHECK_THAT(error_of([&] { models::load_model(dir.string(), "", 0, models::BaseDtype::parse("auto")); }),
             Contains("quant_method 'bitsandbytes') is not supported"));
  config["quantization_config"] = {{"quant_method", "lora.cpp"}, {"formats", {"q8_0"}}};
  std::ofstream(dir / "config.json") << config.dump();
  CHECK_THAT(error_of([&] { models::load_model(dir.string(), "", 0, models::BaseDtype::parse("auto")); }),
             Contains("names the formats [\"q8_0\"] (quantization_config), but the files hold [\"nf4\"]"));
  config["quantization_config"] = {{"quant_method", "lora.cpp"}, {"formats", {"nf4"}}, {"bits", 4}};
  std::ofstream(dir / "config.json") << config.dump();
  CHECK_THAT(error_of([&] { models::load_model(dir.string(), "", 0, models::BaseDtype::parse("auto")); }),
             Contains("bits"));
  const fs::path plain = temp_dir("plain");
  models::save_hf_checkpoint(*models::create_model({small_gpt2(), "test"}, 1), plain.string());
  config["quantization_config"] = {{"quant_method", "lora.cpp"}, {"formats", {"nf4"}}};
  std::ofstream(plain / "config.json") << config.dump();
  CHECK_THAT(error_of([&] { models::load_model(plain.string(), "", 0, models::BaseDtype::parse("auto")); }),
             Contains("no file declares a compact weight"));
  fs::remove_all(dir);
  fs::remove_all(plain);
}

namespace {

// A small GPT-2's checkpoint with one compact weight written by hand: its metadata entry and the tensors
// given, beside the model's float parameters (the weight's own float entry left out).
struct HandWritten {
  fs::path dir = temp_dir("hand");
  std::shared_ptr<models::CausalLM> model = models::create_model({small_gpt2(), "test"}, 2);
  const std::string name = "transformer.h.0.attn.c_attn.weight";

  std::string load_error(const std::string& metadata, const std::vector<SafeTensorsRecord>& compact) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<SafeTensorsRecord> records = compact;
    for (const auto& entry : model->hf_state()) {
      const std::string& key = entry.first;
      const bool replaced = key == name || std::any_of(compact.begin(), compact.end(),
                                                       [&](const SafeTensorsRecord& r) { return r.name == key; });
      if (!replaced) records.push_back({key, entry.second, "F32", entry.second.shape()});
    }
    save_safetensors_records((dir / "model.safetensors").string(), records,
                             {{"format", "pt"}, {models::kCompactWeightsMetadataKey, metadata}});
    std::ofstream(dir / "config.json") << model->hf_config().dump();
    return error_of([&] { models::load_model(dir.string(), "", 0, models::BaseDtype::parse("auto")); });
  }
  ~HandWritten() { fs::remove_all(dir); }
};

SafeTensorsRecord bytes_record(const std::string& name, int64_t n, const std::string& dtype = "U8",
                               Shape shape = Shape{}) {
  Tensor t = Tensor::zeros({(n + 3) / 4}, DType::I32);
  return {name, t, dtype, shape.rank() ? shape : Shape{n}};
}

}  // namespace

TEST_CASE("malformed compact checkpoints are refused naming the file, the weight and what is wrong",
          "[quantized][checkpoint]") {
  HandWritten h;
  const int64_t rows = 3 * 64, cols = 64;  // c_attn of n_embd 64: [3 x 64, 64]
  const int64_t q8_bytes = rows * q8_0_row_bytes(cols);
  const auto q8 = [&](const std::string& fields) { return "{\"" + h.name + "\": {" + fields + "}}"; };
  const std::string good = q8("\"format\": \"q8_0\", \"shape\": [192, 64], \"double_quant\": false");
  const SafeTensorsRecord blocks = bytes_record(h.name, q8_bytes, "U8", Shape{rows, q8_bytes / rows});

  // A correct hand-written file loads (zero blocks: scale 0 is finite), so each case below fails for its reason.
  CHECK(h.load_error(good, {blocks}) == "(no error)");

  CHECK_THAT(h.load_error("not json", {blocks}), Contains("lora.compact_weights"));
  CHECK_THAT(h.load_error("[1, 2]", {blocks}), Contains("expected a JSON object"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q5_1\", \"shape\": [192, 64], \"double_quant\": false"), {blocks}),
             Contains("format 'q5_1' is not one lora.cpp stores"));
  CHECK_THAT(h.load_error(q8("\"format\": \"int8\", \"shape\": [192, 64], \"double_quant\": false"), {blocks}),
             Contains("format 'int8'"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [192], \"double_quant\": false"), {blocks}),
             Contains("'shape' must be [rows, cols]"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [-192, 64], \"double_quant\": false"), {blocks}),
             Contains("each side must be in [1, 2^31)"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [18446744073709551615, 64], \"double_quant\": false"),
                          {blocks}),
             Contains("each side must be in [1, 2^31)"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [192, 64]"), {blocks}),
             Contains("'double_quant' must be true or false"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [192, 64], \"double_quant\": true"), {blocks}),
             Contains("double quantization is nf4's"));
  CHECK_THAT(
      h.load_error(q8("\"format\": \"q8_0\", \"shape\": [192, 64], \"double_quant\": false, \"scale\": 2"), {blocks}),
      Contains("scale"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [192, 48], \"double_quant\": false"), {blocks}),
             Contains("whole blocks of 32"));
  // The tensors against the declaration, and the declaration against the model.
  CHECK_THAT(h.load_error(good, {bytes_record(h.name, q8_bytes)}), Contains("is U8 [13056]"));
  CHECK_THAT(h.load_error(good, {bytes_record(h.name + "_other", q8_bytes)}), Contains("holds no tensor"));
  CHECK_THAT(h.load_error(q8("\"format\": \"q8_0\", \"shape\": [96, 64], \"double_quant\": false"),
                          {bytes_record(h.name, 96 * 68, "U8", Shape{96, 68})}),
             Contains("model expects [out, in] = [192, 64]"));
  const std::string nf4 = q8("\"format\": \"nf4\", \"shape\": [192, 64], \"double_quant\": false");
  CHECK_THAT(h.load_error(nf4, {bytes_record(h.name, rows * cols / 2)}), Contains(".absmax"));
  // A norm's weight cannot be compact.
  const std::string norm = "transformer.h.0.ln_1.weight";
  const std::string with_norm = good.substr(0, good.size() - 1) + ", \"" + norm +
                                "\": {\"format\": \"bf16\", \"shape\": [1, 64], \"double_quant\": false}}";
  CHECK_THAT(h.load_error(with_norm, {blocks, bytes_record(norm, 128, "BF16", Shape{1, 64})}),
             Contains("only linear layers and the token embedding"));
  // Values: a block scale that is inf, an absmax that is nan.
  SafeTensorsRecord inf_scale = bytes_record(h.name, q8_bytes, "U8", Shape{rows, q8_bytes / rows});
  inf_scale.tensor = Tensor::zeros({(q8_bytes + 3) / 4}, DType::I32);
  static_cast<uint8_t*>(inf_scale.tensor.raw_data())[34 * 5 + 1] = 0x7C;  // block 5's fp16 d = inf
  CHECK_THAT(h.load_error(good, {inf_scale}), Contains("the scale of block 5 (row 2) is inf or nan"));
  SafeTensorsRecord absmax{h.name + ".absmax", Tensor::full({rows * cols / 64}, std::nanf("")), "F32",
                           Shape{rows * cols / 64}};
  CHECK_THAT(h.load_error(nf4, {bytes_record(h.name, rows * cols / 2), absmax}), Contains("absmax element 0 is nan"));
  absmax.tensor = Tensor::full({rows * cols / 64}, 0.5);
  absmax.tensor.data<float>()[7] = -0.5f;
  CHECK_THAT(h.load_error(nf4, {bytes_record(h.name, rows * cols / 2), absmax}),
             Contains("absmax element 7 is -0.5 (expected a finite value >= 0)"));
  absmax.tensor.data<float>()[7] = 0.5f;
  CHECK(h.load_error(nf4, {bytes_record(h.name, rows * cols / 2), absmax}) == "(no error)");
}
