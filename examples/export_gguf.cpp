// export_gguf: a model (with its LoRA adapter merged in, when one is given) or the adapter alone as a GGUF
// file that llama.cpp and Ollama load, with llama.cpp's tensor names, layouts and hyperparameter keys and the
// tokenizer inside the file (docs/gguf.md).
//
//   export_gguf --weights models/gpt2 --out gpt2-f16.gguf --type f16
//   export_gguf --weights models/smollm2 --adapter out/lora --out tuned-q8.gguf --type q8_0 --ollama-modelfile
//   Modelfile export_gguf --weights models/gpt2 --adapter out/lora --adapter-only --out lora.gguf   # llama-cli --lora
//   lora.gguf export_gguf --weights model-q8_0.gguf --adapter out/lora --out tuned.gguf             # from a GGUF base
//
// Tensors are written one at a time (the file is never held in memory whole); --type q8_0 / q4_0 quantize
// block for block as ggml does, f16 / bf16 round to nearest even. Norms and biases stay f32.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"
#include "core/gguf.h"
#include "core/gguf_quants.h"
#include "models/gguf/model_io.h"
#include "models/registry.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "nn/lora/adapter.h"
#include "nn/lora/apply_lora.h"
#include "nn/quantized_linear.h"

using namespace lora;
namespace fs = std::filesystem;
namespace gio = lora::models::gguf_io;

namespace {

// The tokenizer files of a folder (tokenizer.json, else GPT-2's vocab.json + merges.txt or encoder.json +
// vocab.bpe), or of a tokenizer.json path; nullopt when there are none.
std::optional<gio::TokenizerFiles> tokenizer_files_in(const fs::path& path) {
  if (is_regular_file(path.string()) && path.extension() == ".json") {
    const fs::path config = path.parent_path() / "tokenizer_config.json";
    return gio::TokenizerFiles{
        read_file(path.string(), "--tokenizer"),
        is_regular_file(config.string()) ? read_file(config.string(), "tokenizer_config.json") : "", path.string()};
  }
  if (!is_directory(path.string())) return std::nullopt;
  if (is_regular_file((path / "tokenizer.json").string())) return tokenizer_files_in(path / "tokenizer.json");
  for (const auto& [vocab, merges] : {std::pair{"vocab.json", "merges.txt"}, std::pair{"encoder.json", "vocab.bpe"}}) {
    if (is_regular_file((path / vocab).string()) && is_regular_file((path / merges).string())) {
      return gio::TokenizerFiles{tokenizer::gpt2_tokenizer_json(path / vocab, path / merges), "", path.string()};
    }
  }
  return std::nullopt;
}

// --tokenizer; a GGUF base's own; the model folder's; GPT-2's files for a GPT-2 model.
gio::TokenizerFiles find_tokenizer(const std::string& tokenizer_arg, const std::string& weights,
                                   const models::CausalLM& model) {
  if (!tokenizer_arg.empty()) {
    auto files = tokenizer_files_in(tokenizer_arg);
    LORA_CHECK(files.has_value(), "--tokenizer '{}': not a tokenizer.json nor a folder with tokenizer files",
               tokenizer_arg);
    return *files;
  }
  if (!weights.empty() && gio::is_gguf_path(weights)) return gio::tokenizer_files_from_gguf(gguf::File::open(weights));
  if (!weights.empty()) {
    const fs::path folder = is_directory(weights) ? fs::path(weights) : fs::path(weights).parent_path();
    if (auto files = tokenizer_files_in(folder.empty() ? fs::path(".") : folder)) return *files;
  }
  LORA_CHECK(model.model_type() == "gpt2",
             "no tokenizer for this {} model: its folder has no tokenizer.json; give "
             "--tokenizer PATH (a GGUF file carries its tokenizer inside)",
             model.model_type());
  return *tokenizer_files_in(tokenizer::GPT2Tokenizer::default_dir());
}

// Ollama's Modelfile: FROM the file, a stop parameter for each end-of-sequence and end-of-turn token.
void write_modelfile(const std::string& path, const std::string& gguf_path, const std::string& adapter_path) {
  const gguf::File file = gguf::File::open(gguf_path);
  const fs::path dir = fs::absolute(path).parent_path();
  auto relative = [&](const std::string& p) {
    const fs::path rel = fs::relative(fs::absolute(p), dir);
    return rel.empty() ? fs::absolute(p).string() : "./" + rel.string();
  };
  std::string text = fmt::format("# Ollama Modelfile written by export_gguf: ollama create NAME -f {}\nFROM {}\n",
                                 fs::path(path).filename().string(), relative(gguf_path));
  if (!adapter_path.empty()) text += fmt::format("ADAPTER {}\n", relative(adapter_path));
  const gguf::Value* tokens = file.find("tokenizer.ggml.tokens");
  std::set<uint64_t> stops;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (auto id = file.get_uint_or(key)) stops.insert(*id);
  }
  for (uint64_t id : stops) {
    if (tokens && id < tokens->array.size()) text += fmt::format("PARAMETER stop \"{}\"\n", tokens->array[id].s);
  }
  write_file_atomically(path, [&](std::ostream& o) { o << text; });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Write a model (with its LoRA adapter merged in) or a LoRA adapter alone as GGUF, for llama.cpp and Ollama."};
  std::string weights, config_name, adapter, out, type_name = "f16", tokenizer_path, name, modelfile;
  bool adapter_only = false;
  app.add_option("--weights", weights,
                 "Base model: a Hugging Face folder, a .safetensors file, or a .gguf file (without it: a random model "
                 "from --config)");
  app.add_option("--config", config_name,
                 "A config.json path or a preset (for a random model, or a bare .safetensors file)");
  app.add_option(
      "--adapter", adapter,
      "PEFT adapter folder (finetune's SAVE/lora): merged into the model, or written alone with --adapter-only");
  app.add_option("--out", out, "The .gguf file to write")->required();
  app.add_option("--type", type_name, "Weight type: f32, f16, bf16, q8_0 or q4_0 (norms and biases stay f32)")
      ->capture_default_str();
  app.add_flag("--adapter-only", adapter_only,
               "Write the adapter as a GGUF LoRA adapter (llama-cli/llama-server --lora) instead of a merged model");
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer.json or a folder with tokenizer files (default: the model's own)");
  app.add_option("--name", name, "general.name in the file (default: the model type)");
  app.add_option("--ollama-modelfile", modelfile,
                 "Also write an Ollama Modelfile (FROM the file, stop tokens) at this path");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto type = gguf::type_from_name(type_name);
    LORA_CHECK(type && gguf::can_quantize(*type), "--type '{}': expected f32, f16, bf16, q8_0 or q4_0", type_name);
    LORA_CHECK(!adapter_only || !adapter.empty(), "--adapter-only needs --adapter DIR");
    LORA_CHECK(adapter.empty() || is_directory(adapter),
               "--adapter '{}': no such folder (expected a PEFT adapter folder "
               "with adapter_config.json and adapter_model.safetensors)",
               adapter);
    LORA_CHECK(modelfile.empty() || !adapter_only || gio::is_gguf_path(weights),
               "--ollama-modelfile with --adapter-only "
               "needs a GGUF --weights for its FROM line");
    std::error_code ec;
    LORA_CHECK(!(fs::exists(out, ec) && fs::exists(weights, ec) && fs::equivalent(out, weights, ec)),
               "--out '{}' would overwrite the base model: choose another path", out);
    const auto t0 = std::chrono::steady_clock::now();

    // An adapter alone needs only the base's shapes and names: the base loads as its file holds it (a compact
    // folder or a GGUF file's blocks, without a float32 copy). A model to write needs its float weights.
    auto model = models::load_model(weights, config_name, 0,
                                    adapter_only ? models::BaseDtype::parse("auto") : models::BaseDtype{});
    model->eval();
    fmt::print("model: {} ({}, {} layers, hidden {}, vocabulary {}, {} parameters)\n",
               weights.empty() ? "random (--config)" : weights, model->model_type(), model->dims().n_layer,
               model->dims().hidden, model->dims().vocab_size,
               model->num_parameters() + nn::num_compact_weights(*model));
    if (!adapter.empty()) {
      nn::load_adapter(*model, adapter);
      const auto layers = nn::lora_layers(*model);
      fmt::print("adapter: {}: {} adapted layers, rank {}, alpha {}\n", adapter, layers.size(),
                 layers.front().second->rank(), layers.front().second->options().alpha);
    }
    fs::create_directories(fs::absolute(out).parent_path());
    gio::ExportSummary summary;
    if (adapter_only) {
      summary = gio::export_gguf_adapter(*model, out, name);
      fmt::print("wrote {}: GGUF LoRA adapter, {}\n", out, summary.str());
      fmt::print("run it with: llama-cli -m BASE.gguf --lora {}   (BASE.gguf: this base exported by export_gguf)\n",
                 out);
    } else {
      if (!adapter.empty()) nn::merge_lora(*model);  // W + s B A, then written as a plain model
      const gio::TokenizerFiles tok = find_tokenizer(tokenizer_path, weights, *model);
      summary = gio::export_gguf(*model, tok, *type, out, name);
      fmt::print("wrote {}: {} ({}), tokenizer from {}\n", out, summary.str(), gguf::type_name(*type), tok.source);
      fmt::print("run it with: llama-cli -m {}\n", out);
    }
    if (!modelfile.empty()) {
      write_modelfile(modelfile, adapter_only ? weights : out, adapter_only ? out : "");
      fmt::print("wrote {}: ollama create NAME -f {}\n", modelfile, modelfile);
    }
    fmt::print("done in {:.1f} s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
