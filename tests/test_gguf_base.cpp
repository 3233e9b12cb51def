// A GGUF model's frozen linear layers held compact from the file's blocks (models/gguf/base_blocks.h): Q8_0 and
// Q4_0 files loaded with --base-dtype auto against the framework's own quantizer, llama.cpp's q/k permutation
// undone on blocks, K-quant conversions and their measured error, and the tensors that are refused.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/files.h"
#include "core/gguf.h"
#include "core/gguf_quants.h"
#include "core/half.h"
#include "models/gguf/arch.h"
#include "models/gguf/base_blocks.h"
#include "models/gguf/model_io.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/layers.h"
#include "nn/lora/apply_lora.h"
#include "nn/quantized_linear.h"
#include "optim/adam.h"
#include "tests/mapping_residency.h"
#include "train/checkpoint.h"

using namespace lora;
namespace fs = std::filesystem;
namespace gio = lora::models::gguf_io;
using lora::testing::resident_kib_of_mapping;

namespace {

const std::string kFixtures = std::string(LORA_TEST_DATA_DIR);

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_gguf_base_{}", ::getpid());
  fs::create_directories(dir);
  return dir / name;
}

// The blocks of a compact q8_0/q4_0 layer's weight (without the tensor's padding to whole int32s).
std::vector<uint8_t> weight_bytes(const QuantizedWeight& w) {
  const int64_t n = w.rows * (w.format == QuantFormat::Q8_0 ? q8_0_row_bytes(w.cols) : q4_0_row_bytes(w.cols));
  const auto* p = static_cast<const uint8_t*>(w.data.raw_data());
  return std::vector<uint8_t>(p, p + n);
}

// The model's compact layers by module path.
std::map<std::string, std::shared_ptr<nn::QuantizedLinear>> compact_layers(const nn::Module& model) {
  std::map<std::string, std::shared_ptr<nn::QuantizedLinear>> out;
  for (const auto& [path, m] : model.named_modules()) {
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinear>(m)) out[path] = q;
  }
  return out;
}

// A file of one tensor `name` with ne = {cols, rows} of `type` whose bytes `fill` writes.
std::string one_tensor_file(const std::string& name, int64_t cols, int64_t rows, gguf::TensorType type,
                            const std::function<void(std::string&)>& fill) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  w.add_tensor(name, {cols, rows}, type, fill);
  return w.to_bytes();
}

gguf::File parse(const std::string& bytes, const std::string& name = "test.gguf") {
  return gguf::File::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

// Random super-blocks of a K-quant: random codes and scales, with finite fp16 scales d (and dmin).
std::string random_k_blocks(gguf::TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  const gguf::TypeTraits& traits = gguf::type_traits(type);
  const int64_t blocks = rows * cols / traits.block_size;
  std::mt19937 gen(seed);
  std::string out;
  for (int64_t b = 0; b < blocks; ++b) {
    std::string block(traits.type_size, '\0');
    for (char& c : block) c = static_cast<char>(gen() & 0xFF);
    const uint16_t d = float_to_half(0.01f), dmin = float_to_half(0.002f);
    if (type == gguf::TensorType::Q6_K) {
      std::memcpy(block.data() + traits.type_size - 2, &d, 2);  // {ql, qh, scales, d}
    } else {                                                    // Q4_K, Q5_K: {d, dmin, ...}
      std::memcpy(block.data(), &d, 2);
      std::memcpy(block.data() + 2, &dmin, 2);
    }
    out += block;
  }
  return out;
}

}  // namespace

TEST_CASE("GGUF Q8_0/Q4_0 models load with --base-dtype auto as the framework's own quantizer would hold them",
          "[gguf][quantized]") {
  const gio::TokenizerFiles tok{read_file(kFixtures + "/tokenizers/qwen2/tokenizer.json", "t"),
                                read_file(kFixtures + "/tokenizers/qwen2/tokenizer_config.json", "t"), "qwen2 fixture"};
  nlohmann::json gpt2 = models::preset_config("tiny"), llama = models::preset_config("llama-tiny");
  gpt2["vocab_size"] = 864, gpt2["n_embd"] = 64;               // rows of whole blocks
  llama["vocab_size"] = 864, llama["intermediate_size"] = 96;  // 4 heads, 2 kv heads: q and k permuted
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 99, 3, 800, 42, 17}, {1, 6});
  for (const nlohmann::json& config : {gpt2, llama}) {
    auto original = models::create_model({config, "test"}, 7);
    for (const auto& [type, format] : std::vector<std::pair<gguf::TensorType, QuantFormat>>{
             {gguf::TensorType::Q8_0, QuantFormat::Q8_0}, {gguf::TensorType::Q4_0, QuantFormat::Q4_0}}) {
      INFO(config["model_type"] << " " << gguf::type_name(type));
      const fs::path path =
          scratch(fmt::format("{}_{}.gguf", config["model_type"].get<std::string>(), gguf::type_name(type)));
      gio::export_gguf(*original, tok, type, path.string());

      // The file loaded with the auto base: its body's linear layers are the file's blocks.
      const gguf::File file = gguf::File::open(path.string());
      gio::ImportReport report;
      auto loaded = gio::load_gguf_model(file, 7, &report, models::BaseDtype::parse("auto"));
      loaded->freeze();
      loaded->eval();
      CHECK(report.base.converted == 0);
      CHECK(report.base.kept > 0);
      CHECK(report.base.layers_by_format.at(std::string(quant_format_name(format))) == report.base.kept);

      // The reference: the same file imported in float32 (embeddings, norms and head as the file holds them),
      // its body's linear weights set back to the original float32 values, then quantized by the framework.
      auto reference = models::load_model(path.string(), "");
      {
        NoGradGuard no_grad;
        const auto originals = original->named_parameters();
        const std::map<std::string, Tensor> by_name(originals.begin(), originals.end());
        auto compact = compact_layers(*loaded);
        compact.erase(loaded->output_head_path());  // the head keeps the file's values (quantized, as the file)
        for (auto [name, p] : reference->named_parameters()) {
          const std::string module = name.substr(0, name.rfind('.'));
          if (compact.count(module) && name.ends_with(".weight")) p.copy_from(by_name.at(name));
        }
      }
      reference->freeze();
      reference->eval();
      const nn::QuantizeReport quantized = models::quantize_base(*reference, format);
      // The token embedding, and an untied output head, are held compact too, as the file's blocks: the very
      // values the float32 import decodes.
      const std::string head_path = loaded->output_head_path();
      auto mine = compact_layers(*loaded);
      const auto theirs = compact_layers(*reference);
      const auto embedding = std::dynamic_pointer_cast<nn::Embedding>(
          loaded->module_at(config["model_type"] == "gpt2" ? "transformer.wte" : "model.embed_tokens"));
      REQUIRE(embedding);
      REQUIRE(embedding->compact);
      CHECK_FALSE(embedding->has_dense_weight());
      CHECK(loaded->compact_head() == (head_path.empty() ? embedding->compact : mine.at(head_path)->quantized));
      const std::string embedding_name =
          config["model_type"] == "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight";
      const auto reference_params = reference->named_parameters();
      const std::map<std::string, Tensor> reference_by_name(reference_params.begin(), reference_params.end());
      // In the file's own format (the export writes a head, tied or not, in q8_0 when q4_0 is asked, as
      // llama.cpp's quantizer keeps its output tensor above 4 bits).
      CHECK(embedding->compact->format == gio::auto_base_format(file.find_tensor("token_embd.weight")->type));
      CHECK(dequantize_weight(*embedding->compact).to_vector<float>() ==
            reference_by_name.at(embedding_name).to_vector<float>());
      CHECK(report.base.tables.size() == 1 + (head_path.empty() ? 0 : 1));
      if (!head_path.empty()) {
        CHECK(mine.at(head_path)->quantized->format == gio::auto_base_format(file.find_tensor("output.weight")->type));
        CHECK(dequantize_weight(*mine.at(head_path)->quantized).to_vector<float>() ==
              reference_by_name.at(head_path + ".weight").to_vector<float>());
        mine.erase(head_path);  // the body's layers below
      }
      // The load report counts the bytes it holds: the body's layers, and the tables beside them.
      size_t body_bytes = 0;
      for (const auto& [p, layer] : mine) body_bytes += layer->quantized->nbytes();
      CHECK(report.base.bytes == body_bytes);
      CHECK(report.base.table_bytes ==
            embedding->compact->nbytes() + (head_path.empty() ? 0 : loaded->compact_head()->nbytes()));
      REQUIRE(mine.size() == theirs.size());
      CHECK(int64_t(mine.size()) == quantized.layers);
      for (const auto& [path_of, layer] : mine) {
        INFO(path_of);
        REQUIRE(theirs.count(path_of));
        CHECK(layer->quantized->format == format);
        // Byte for byte: the q/k rows of a Llama file come back in Hugging Face order with their blocks.
        CHECK(weight_bytes(*layer->quantized) == weight_bytes(*theirs.at(path_of)->quantized));
      }
      NoGradGuard no_grad;
      // The same numbers, through the compact head's kernels rather than the f32 ones: to rounding.
      const std::vector<float> got = loaded->forward(ids).to_vector<float>(),
                               want = reference->forward(ids).to_vector<float>();
      REQUIRE(got.size() == want.size());
      float largest = 0, worst = 0;
      for (size_t i = 0; i < got.size(); ++i)
        largest = std::max(largest, std::abs(want[i])), worst = std::max(worst, std::abs(got[i] - want[i]));
      CHECK(worst <= 1e-5f * largest);

      // LoRA wraps the compact layers as they are, and trains.
      nn::LoRAConfig lora_config;
      lora_config.targets = {"all-linear"};
      models::apply_lora(*loaded, lora_config);
      CHECK(loaded->num_parameters(true) > 0);
      CHECK(compact_layers(*loaded).size() == mine.size() + (head_path.empty() ? 0 : 1));
    }
  }
}

TEST_CASE("GGUF base: LoRA trains on a compact embedding and head as on their float32 values, with no f32 copy",
          "[gguf][quantized]") {
  const gio::TokenizerFiles tok{read_file(kFixtures + "/tokenizers/qwen2/tokenizer.json", "t"),
                                read_file(kFixtures + "/tokenizers/qwen2/tokenizer_config.json", "t"), "qwen2 fixture"};
  nlohmann::json gpt2 = models::preset_config("tiny"), llama = models::preset_config("llama-tiny");
  gpt2["vocab_size"] = 864, gpt2["n_embd"] = 64;
  llama["vocab_size"] = 864, llama["intermediate_size"] = 96;  // untied: token_embd and output both compact
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 99, 3, 800, 42, 17, 9, 1}, {2, 4});
  const Tensor targets = Tensor::from_vector(std::vector<int64_t>{99, 3, 800, -100, 17, 9, 1, 2}, {2, 4});
  for (const nlohmann::json& config : {gpt2, llama}) {
    INFO(config["model_type"]);
    auto original = models::create_model({config, "test"}, 9);
    const fs::path path = scratch(fmt::format("train_{}.gguf", config["model_type"].get<std::string>()));
    gio::export_gguf(*original, tok, gguf::TensorType::Q8_0, path.string());
    nn::LoRAConfig lora_config;
    lora_config.targets = {"q", "v"};
    // The compact model, and the same numbers with a float32 embedding and head (the body compact in both).
    auto compact = models::load_model(path.string(), "", 9, models::BaseDtype::parse("auto"));
    auto dense = models::load_model(path.string(), "", 9, models::BaseDtype::parse("auto"));
    {
      const gguf::File file = gguf::File::open(path.string());
      auto f32 = gio::load_gguf_model(file, 9);  // every tensor decoded to float32
      const auto f32_params = f32->named_parameters();
      const std::map<std::string, Tensor> by_name(f32_params.begin(), f32_params.end());
      const std::string embedding_path = config["model_type"] == "gpt2" ? "transformer.wte" : "model.embed_tokens";
      const size_t dot = embedding_path.rfind('.');
      Generator unused(0);
      auto table = std::make_shared<nn::Embedding>(864, 64, unused);
      NoGradGuard no_grad;
      table->weight.copy_from(by_name.at(embedding_path + ".weight"));
      dense->module_at(embedding_path.substr(0, dot))->replace_child(embedding_path.substr(dot + 1), table);
      if (!dense->output_head_path().empty()) {
        auto head = std::make_shared<nn::Linear>(64, 864, false, unused);
        head->weight.copy_from(by_name.at("lm_head.weight"));
        dense->replace_child("lm_head", head);
      }
    }
    REQUIRE(compact->compact_head() != nullptr);
    REQUIRE(dense->compact_head() == nullptr);
    // No float32 table in the compact model: its parameters are the norms, biases and position embeddings.
    int64_t compact_f32 = 0, dense_f32 = 0;
    for (const auto& [name, p] : compact->named_parameters()) {
      INFO(name);
      CHECK(p.numel() < 864 * 64);
      compact_f32 += p.numel();
    }
    for (const auto& [name, p] : dense->named_parameters()) dense_f32 += p.numel();
    CHECK(dense_f32 - compact_f32 == 864 * 64 * (dense->output_head_path().empty() ? 1 : 2));

    for (auto* model : {compact.get(), dense.get()}) {
      model->freeze();
      models::apply_lora(*model, lora_config);
    }
    // One step's loss and LoRA gradients (B starts at zero, so B's gradient is what flows back through the
    // head, the blocks and, for the layers below, the embedding's rows).
    std::map<std::string, std::vector<float>> grads[2];
    double losses[2];
    int i = 0;
    for (auto* model : {compact.get(), dense.get()}) {
      const Tensor loss = model->loss(ids, targets);
      backward(loss);
      losses[i] = loss.item();
      for (const auto& [name, p] : model->named_parameters(true)) grads[i][name] = p.grad().to_vector<float>();
      ++i;
    }
    CHECK(losses[0] == Approx(losses[1]).epsilon(1e-6));
    REQUIRE(grads[0].size() == grads[1].size());
    float largest = 0, worst = 0;
    for (const auto& [name, g] : grads[1]) {
      const std::vector<float>& c = grads[0].at(name);
      for (size_t k = 0; k < g.size(); ++k)
        largest = std::max(largest, std::abs(g[k])), worst = std::max(worst, std::abs(c[k] - g[k]));
    }
    CHECK(largest > 0);
    CHECK(worst <= 1e-4f * largest);

    // A few AdamW steps lower the loss on the compact model.
    optim::AdamW optimizer(compact->parameters(true), {.lr = 1e-2});
    double first = 0, last = 0;
    for (int step = 0; step < 5; ++step) {
      optimizer.zero_grad();
      const Tensor loss = compact->loss(ids, targets);
      backward(loss);
      optimizer.step();
      (step == 0 ? first : last) = loss.item();
    }
    CHECK(last < first);

    // The fingerprint of the frozen weights covers the compact table: one changed block changes it.
    const std::string before = train::RunIdentity::fingerprint(*compact);
    const std::string embedding_path = config["model_type"] == "gpt2" ? "transformer.wte" : "model.embed_tokens";
    auto embedding = std::dynamic_pointer_cast<nn::Embedding>(compact->module_at(embedding_path));
    REQUIRE(embedding->compact);
    auto changed = std::make_shared<QuantizedWeight>(*embedding->compact);
    changed->data = changed->data.clone();
    static_cast<uint8_t*>(changed->data.raw_data())[7] ^= 1;
    embedding->compact = changed;
    CHECK(train::RunIdentity::fingerprint(*compact) != before);
  }
}

TEST_CASE("GGUF base: --base-dtype auto maps each tensor type to the nearest base format", "[gguf][quantized]") {
  using T = gguf::TensorType;
  CHECK(gio::auto_base_format(T::Q8_0) == QuantFormat::Q8_0);
  CHECK(gio::auto_base_format(T::Q4_0) == QuantFormat::Q4_0);
  for (T t : {T::Q6_K, T::Q5_K, T::Q5_0, T::Q5_1}) CHECK(gio::auto_base_format(t) == QuantFormat::Q8_0);
  for (T t : {T::Q4_K, T::Q4_1}) CHECK(gio::auto_base_format(t) == QuantFormat::Q4_0);
  for (T t : {T::F32, T::F16, T::BF16}) CHECK(gio::auto_base_format(t) == QuantFormat::F32);
  CHECK(models::BaseDtype::parse("auto").automatic);
  CHECK(models::BaseDtype::parse("int8").format == QuantFormat::Q8_0);
  CHECK_THROWS_WITH(models::BaseDtype::parse("q4_k"),
                    Catch::Contains("--base-dtype 'q4_k'") && Catch::Contains("auto"));
}

TEST_CASE("GGUF base: K-quants are converted row by row and their relative RMS error is measured",
          "[gguf][quantized]") {
  const int64_t rows = 8, cols = 512;
  for (const auto& [type, format, bound] : std::vector<std::tuple<gguf::TensorType, QuantFormat, double>>{
           {gguf::TensorType::Q6_K, QuantFormat::Q8_0, 0.02},
           {gguf::TensorType::Q5_K, QuantFormat::Q8_0, 0.02},
           {gguf::TensorType::Q4_K, QuantFormat::Q4_0, 0.3}}) {
    INFO(gguf::type_name(type));
    const std::string blocks = random_k_blocks(type, rows, cols, 11);
    const std::string bytes =
        one_tensor_file("blk.0.ffn_down.weight", cols, rows, type, [&](std::string& out) { out += blocks; });
    const gguf::File f = parse(bytes);
    const gguf::TensorInfo& t = f.tensors().at(0);
    const gio::BaseWeight w = gio::base_weight_from_gguf(f, t, format, 0);
    CHECK_FALSE(w.kept_blocks);
    CHECK(w.weight.format == format);
    // The error, recomputed here: the file's values against the base's, over the whole tensor.
    std::vector<float> file_row(cols);
    const Tensor back = dequantize_weight(w.weight);
    const float* b = back.data<float>();
    double err2 = 0, ref2 = 0;
    for (int64_t r = 0; r < rows; ++r) {
      gguf::dequantize_row(type, t.data + r * (t.nbytes / rows), file_row.data(), cols);
      for (int64_t i = 0; i < cols; ++i) {
        err2 += std::pow(double(file_row[i]) - b[r * cols + i], 2);
        ref2 += std::pow(double(file_row[i]), 2);
      }
    }
    CHECK(w.relative_rms_error > 0.0);
    CHECK(w.relative_rms_error == Approx(std::sqrt(err2 / ref2)).epsilon(1e-9));
    CHECK(w.relative_rms_error < bound);
    gio::BaseImportReport report;
    report.add(t, w);
    CHECK(report.converted == 1);
    CHECK_THAT(report.str(),
               Catch::Contains("blk.0.ffn_down.weight") &&
                   Catch::Contains(fmt::format("{} -> {}", gguf::type_name(type), quant_format_name(format))) &&
                   Catch::Contains("worst relative RMS error"));
  }
}

TEST_CASE("GGUF base: q/k rows permuted by llama.cpp come back in Hugging Face order, blocks with their rows",
          "[gguf][quantized]") {
  const int64_t heads = 2, rows = 8, cols = 64;  // two heads of 4 rows
  std::string blocks;
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {  // file row r holds the value r + 1 everywhere
    std::fill(row.begin(), row.end(), float(r + 1));
    gguf::quantize_row(gguf::TensorType::Q8_0, row.data(), cols, blocks);
  }
  const std::string bytes =
      one_tensor_file("blk.0.attn_q.weight", cols, rows, gguf::TensorType::Q8_0, [&](std::string& o) { o += blocks; });
  const gguf::File f = parse(bytes);
  const gio::BaseWeight w = gio::base_weight_from_gguf(f, f.tensors().at(0), QuantFormat::Q8_0, heads);
  CHECK(w.kept_blocks);
  const Tensor back = dequantize_weight(w.weight);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hf = gio::hf_row_of_gguf_row(r, rows, heads);
    INFO("file row " << r << " -> row " << hf);
    // Rows differ by 1; q8_0 holds each to within its step (r + 1) / 127.
    CHECK(back.data<float>()[hf * cols] == Approx(r + 1).margin(0.05));
    CHECK(back.data<float>()[hf * cols + cols - 1] == Approx(r + 1).margin(0.05));
  }
}

TEST_CASE("GGUF base: tensors that cannot be held compact are refused, naming the tensor", "[gguf][quantized]") {
  // Rows of 48 float weights are not whole blocks of 32.
  const std::string floats = one_tensor_file("blk.1.attn_output.weight", 48, 4, gguf::TensorType::F32,
                                             [](std::string& o) { o.append(48 * 4 * 4, '\0'); });
  const gguf::File f = parse(floats);
  CHECK_THROWS_WITH(gio::base_weight_from_gguf(f, f.tensors().at(0), QuantFormat::Q8_0, 0),
                    Catch::Contains("'blk.1.attn_output.weight'") && Catch::Contains("not whole blocks of 32"));
  CHECK_THROWS_WITH(gio::base_weight_from_gguf(f, f.tensors().at(0), QuantFormat::Q4_0, 0),
                    Catch::Contains("'blk.1.attn_output.weight'"));
  CHECK(gio::base_weight_from_gguf(f, f.tensors().at(0), QuantFormat::BF16, 0).weight.rows == 4);  // any shape

  // Block data cut short is refused by the reader, naming the tensor.
  std::string blocks;
  std::vector<float> row(64, 0.5f);
  for (int r = 0; r < 4; ++r) gguf::quantize_row(gguf::TensorType::Q8_0, row.data(), 64, blocks);
  const std::string good =
      one_tensor_file("blk.2.ffn_up.weight", 64, 4, gguf::TensorType::Q8_0, [&](std::string& o) { o += blocks; });
  const gguf::File whole = parse(good);
  const gguf::TensorInfo& t = whole.tensors().at(0);
  const size_t end_of_blocks = static_cast<size_t>(whole.data_offset() + t.offset + t.nbytes);
  CHECK_THROWS_WITH(parse(good.substr(0, end_of_blocks - 1)),
                    Catch::Contains("'blk.2.ffn_up.weight'") && Catch::Contains("runs past the end of the file"));
  // (A Q8_0 row of 48 weights is refused by the reader too, naming the tensor: test_gguf.cpp's bad descriptions.)

  // A block scale that is not finite.
  std::string bad = blocks;
  const uint16_t inf = 0x7C00;
  std::memcpy(bad.data() + 34 * 3, &inf, 2);  // row 1's second block
  const std::string nan_file =
      one_tensor_file("blk.3.ffn_up.weight", 64, 4, gguf::TensorType::Q8_0, [&](std::string& o) { o += bad; });
  const gguf::File g = parse(nan_file);
  CHECK_THROWS_WITH(gio::base_weight_from_gguf(g, g.tensors().at(0), QuantFormat::Q8_0, 0),
                    Catch::Contains("'blk.3.ffn_up.weight'") && Catch::Contains("inf or nan"));
  CHECK_THROWS_WITH(gio::base_weight_from_gguf(g, g.tensors().at(0), QuantFormat::Q4_0, 0),
                    Catch::Contains("'blk.3.ffn_up.weight'") && Catch::Contains("inf or nan"));
  // Heads that do not split the rows into pairs.
  const gguf::File h = parse(good);
  CHECK_THROWS_WITH(gio::base_weight_from_gguf(h, h.tensors().at(0), QuantFormat::Q8_0, 3),
                    Catch::Contains("'blk.2.ffn_up.weight'"));
}

TEST_CASE("GGUF loading holds about one chunk of a large tensor's mapping at a time, not the tensor and its copy",
          "[gguf][quantized][memory]") {
  // 26 MB of Q8_0 blocks (6,000 rows of 4,096 weights): the loader's chunks are 4 MiB of the file, and the
  // pages of each are dropped once read. What stays resident while a chunk is read is that chunk and at most
  // about one more: a kernel with large page-cache folios (6.18 here) maps file pages a folio at a time, and a
  // folio that straddles a chunk's end stays mapped until the next chunk's pages are dropped.
  const int64_t cols = 4096, rows = 6000;
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const std::string file_path = fs::weakly_canonical(scratch("big_q8_0.gguf")).string();
  {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value::string("llama"));
    w.add_tensor("token_embd.weight", {cols, rows}, gguf::TensorType::Q8_0, [&](std::string& out) {
      std::vector<float> row(cols);
      std::vector<BlockQ8_0> blocks(cols / kQuantBlock);
      for (int64_t r = 0; r < rows; ++r) {
        for (float& x : row) x = normal(gen);
        quantize_row_q8_0(row.data(), blocks.data(), cols);
        out.append(reinterpret_cast<const char*>(blocks.data()), blocks.size() * sizeof(BlockQ8_0));
      }
    });
    w.write(file_path);
  }
  const gguf::File f = gguf::File::open(file_path);
  const gguf::TensorInfo& t = *f.find_tensor("token_embd.weight");
  constexpr int64_t kChunkKiB = 4 << 10, kSlackKiB = 256;  // the kernel maps pages around a touched one

  SECTION("the chunks cover every row once, in order, and never more than a chunk stays mapped") {
    int64_t next = 0, calls = 0, most_resident = 0;
    uint64_t checksum = 0;
    f.for_each_row_chunk(t, [&](int64_t begin, int64_t end) {
      CHECK(begin == next);
      CHECK(end > begin);
      next = end, ++calls;
      const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(rows);
      for (uint64_t i = static_cast<uint64_t>(begin) * row_bytes; i < static_cast<uint64_t>(end) * row_bytes; i += 64)
        checksum += t.data[i];  // touch every cache line of the chunk
      most_resident = std::max(most_resident, resident_kib_of_mapping(file_path));
    });
    CHECK(next == rows);
    CHECK(calls == (static_cast<int64_t>(t.nbytes) + (kChunkKiB << 10) - 1) / (kChunkKiB << 10));
    CHECK(checksum > 0);
    CHECK(most_resident <= 2 * kChunkKiB + kSlackKiB);  // of 25,500 KiB (8,196 KiB measured on kernel 6.18)
    CHECK(resident_kib_of_mapping(file_path) <= kSlackKiB);
  }
  SECTION("a tensor kept as blocks, converted to q4_0 and to nf4 leaves none of it mapped, and reads the same") {
    const gio::BaseWeight kept = gio::base_weight_from_gguf(f, t, QuantFormat::Q8_0, 0);
    CHECK(kept.kept_blocks);
    CHECK(resident_kib_of_mapping(file_path) <= kSlackKiB);
    CHECK(std::memcmp(weight_bytes(kept.weight).data(), t.data, t.nbytes) == 0);  // read again from the page cache
    for (const QuantFormat format : {QuantFormat::Q4_0, QuantFormat::NF4}) {
      INFO(quant_format_name(format));
      const gio::BaseWeight converted = gio::base_weight_from_gguf(f, t, format, 0);
      CHECK_FALSE(converted.kept_blocks);
      CHECK(resident_kib_of_mapping(file_path) <= kSlackKiB);
      CHECK(converted.relative_rms_error > 0.0);
      CHECK(converted.relative_rms_error < 0.2);
    }
  }
  fs::remove(file_path);
}
