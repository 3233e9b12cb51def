// quantize: a model's frozen base written compact, once, so that LoRA fine-tuning (QLoRA with nf4) and decoding
// read it as stored instead of quantizing the float weights on every load (models/compact_checkpoint.h has
// the layout).
//
//   quantize --weights models/gpt2 --type nf4 --out models/gpt2-nf4
//   finetune --weights models/gpt2-nf4 --mode lora --data train.txt     # --base-dtype auto: the stored nf4 base
//   generate --weights models/gpt2-nf4 --prompt "Hello"
//
// The body's linear layers (every linear layer but the output head) are quantized as they are read, so no
// float32 copy of the model ever exists; the embeddings, norms, biases and the head stay float32, as
// --base-dtype holds them. The tokenizer and generation files of the source folder are copied beside the model.
// Before it finishes, the program reads the folder back and checks that it computes the same logits.
// Programs that need the float weights (a full fine-tune, merge_lora, export_gguf) refuse the result, naming
// its format.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"
#include "core/stopwatch.h"
#include "models/gguf/model_io.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "tools/model_probe.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

// The files of a model folder that are not its weights but go with them.
constexpr const char* kCompanionFiles[] = {"tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "added_tokens.json",
                                           "vocab.json",
                                           "merges.txt",
                                           "encoder.json",
                                           "vocab.bpe",
                                           "generation_config.json",
                                           "chat_template.jinja"};

uint64_t folder_bytes(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && name.ends_with(".safetensors")) total += entry.file_size(ec);
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a model's base compact (bf16, q8_0, q4_0 or nf4), to fine-tune with LoRA and decode as stored"};
  std::string weights, config_name, type, out;
  int64_t max_shard_mb = 5000;
  app.add_option("--weights", weights, "a Hugging Face model folder, a .safetensors file or an index .json")
      ->required();
  app.add_option("--config", config_name,
                 "config.json path or preset name (default: the config.json beside --weights)");
  app.add_option("--type", type, "the base's format: bf16, q8_0 (or int8), q4_0, nf4 (QLoRA's, double-quantized)")
      ->required();
  app.add_option("--out", out, "the folder to write (config.json, model.safetensors, the tokenizer files)")->required();
  app.add_option("--max-shard-size", max_shard_mb, "largest safetensors file in MB; above it the model is sharded")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const QuantFormat format = parse_quant_format(type, "--type");
    LORA_CHECK(format != QuantFormat::F32, "--type f32: nothing to quantize (the model is float32 already)");
    LORA_CHECK(!models::gguf_io::is_gguf_path(weights),
               "--weights '{}': a GGUF file is read as it is stored (--base-dtype auto); quantize writes Hugging "
               "Face checkpoints (export_gguf --type q8_0 writes GGUF)",
               weights);
    std::error_code ec;
    LORA_CHECK(!(fs::exists(out, ec) && fs::exists(weights, ec) && fs::equivalent(out, weights, ec)),
               "--out '{}' is --weights: write the compact model to another folder", out);
    LORA_CHECK(!fs::exists(out, ec) || fs::is_directory(out, ec), "--out '{}' exists and is not a folder", out);

    const auto start = std::chrono::steady_clock::now();
    const models::BaseDtype base{false, format};
    std::shared_ptr<models::CausalLM> model = models::load_model(weights, config_name, 0, base);
    const std::vector<float> expected = tools::probe_logits(*model);
    models::save_hf_checkpoint(*model, out, max_shard_mb * 1'000'000);

    // The tokenizer and generation files of the source folder go with the model (the save kept any already there).
    const fs::path source = fs::is_directory(weights, ec) ? fs::path(weights) : fs::path(weights).parent_path();
    std::vector<std::string> copied;
    for (const char* name : kCompanionFiles) {
      const fs::path from = source / name;
      if (!fs::is_regular_file(from, ec)) continue;
      const std::string bytes = read_file(from.string(), "companion file");
      write_file_atomically((fs::path(out) / name).string(), [&](std::ostream& o) { o << bytes; });
      copied.push_back(name);
    }

    // Read back as every program will, and compare bit for bit.
    model.reset();
    auto reread = models::load_model(out, "", 0, models::BaseDtype::parse("auto"));
    LORA_CHECK(tools::probe_logits(*reread) == expected,
               "'{}' does not read back to the model that was written (its logits differ); the folder is not usable",
               out);
    std::string files;
    for (const std::string& name : copied) files += (files.empty() ? "" : ", ") + name;
    fmt::print("wrote {} ({:.1f} MB of weights, from {:.1f} MB) in {:.1f} s; it reads back to the same logits\n", out,
               folder_bytes(out) / 1e6, folder_bytes(weights) / 1e6, seconds_since(start));
    fmt::print("copied beside it: {}\n", files.empty() ? "nothing (no tokenizer files in the source folder)" : files);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
