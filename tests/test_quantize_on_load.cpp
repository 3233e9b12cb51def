// Quantize while loading (models/hf_checkpoint.h load_hf_weights_compact): a Hugging Face checkpoint loaded
// with a compact --base-dtype holds the same weights as one loaded in float32 and quantized after, and the
// allocator never holds the float32 body at once.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>

#include "core/memory.h"
#include "models/hf_checkpoint.h"
#include "models/quantize_base.h"
#include "models/registry.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::shared_ptr<nn::QuantizedLinear>> compact_layers(const nn::Module& model) {
  std::map<std::string, std::shared_ptr<nn::QuantizedLinear>> out;
  for (const auto& [path, m] : model.named_modules()) {
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinear>(m)) out[path] = q;
  }
  return out;
}

// The codes of a weight (the blocks of q8_0/q4_0, the packed 4-bit codes of nf4), without the tensor's padding.
std::vector<uint8_t> bytes_of(const QuantizedWeight& w) {
  const int64_t n = w.format == QuantFormat::Q8_0   ? w.rows * q8_0_row_bytes(w.cols)
                    : w.format == QuantFormat::Q4_0 ? w.rows * q4_0_row_bytes(w.cols)
                                                    : (w.rows * w.cols + 1) / 2;
  const auto* p = static_cast<const uint8_t*>(w.data.raw_data());
  return std::vector<uint8_t>(p, p + n);
}

}  // namespace

TEST_CASE("quantize while loading: the same compact weights as quantizing after, without the f32 body at once",
          "[quantized][checkpoint]") {
  nlohmann::json config = models::preset_config("llama-tiny");
  config["hidden_size"] = 256, config["intermediate_size"] = 512, config["head_dim"] = 64;
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_quantize_on_load_{}", ::getpid());
  {
    auto model = models::create_model({config, "test"}, 3);
    models::save_hf_checkpoint(*model, dir.string());
  }
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{5, 99, 3, 42, 17}, {1, 5});
  for (const QuantFormat format : {QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4}) {
    INFO(quant_format_name(format));
    // Float32, then quantized: the reference.
    auto reference = models::load_model(dir.string(), "");
    reference->freeze();
    reference->eval();
    const nn::QuantizeReport after = models::quantize_base(*reference, format);
    int64_t body_f32_bytes = static_cast<int64_t>(after.f32_bytes);

    MemoryTracker::instance().reset_peaks(Device::cpu());
    const int64_t before = MemoryTracker::instance().stats(Device::cpu()).global_peak;
    auto loaded = models::load_model(dir.string(), "", 3, models::BaseDtype{false, format});
    const int64_t peak = MemoryTracker::instance().stats(Device::cpu()).global_peak - before;
    loaded->freeze();
    loaded->eval();

    const auto mine = compact_layers(*loaded), theirs = compact_layers(*reference);
    REQUIRE(int64_t(mine.size()) == after.layers);
    for (const auto& [path, layer] : mine) {
      INFO(path);
      REQUIRE(theirs.count(path));
      CHECK(bytes_of(*layer->quantized) == bytes_of(*theirs.at(path)->quantized));
      CHECK(dequantize_weight(*layer->quantized).to_vector<float>() ==
            dequantize_weight(*theirs.at(path)->quantized).to_vector<float>());
    }
    NoGradGuard no_grad;
    CHECK(loaded->forward(ids).to_vector<float>() == reference->forward(ids).to_vector<float>());
    // The body in float32 never exists at once: the load's peak stays below half of it (the compact body, the
    // f32 embeddings and norms, and one f32 weight at a time).
    INFO("load peak " << peak << " bytes, f32 body " << body_f32_bytes << " bytes");
    CHECK(peak < body_f32_bytes / 2);
  }
  fs::remove_all(dir);
}
