// forward_logits: a causal LM's logits for a batch of token ids, read from and written to safetensors files,
// so that scripts can compare lora.cpp's forward pass with another implementation's (tests/interop/).
//
//   forward_logits --weights models/gpt2 --ids ids.safetensors --out logits.safetensors
//   forward_logits --weights models/gpt2 --adapter out/lora [--merge] --ids ids.safetensors --out logits.safetensors
//
// --ids holds "input_ids" (an integer tensor [B, T]); --out gets "logits" (F32 [B, T, vocab_size]). The
// model runs in eval mode (no dropout) with gradients off; with --adapter the PEFT adapter is loaded on top
// of the weights, and with --merge it is merged into them before the forward pass.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "core/safetensors.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{
      "A causal LM's logits for the token ids in a safetensors file (optionally with a LoRA adapter), written "
      "to a safetensors file."};
  std::string weights, config_name, adapter, ids_path, out_path;
  bool merge = false;
  app.add_option("--weights", weights,
                 "Hugging Face model folder (config.json + model.safetensors or shards) or a .safetensors file")
      ->required();
  app.add_option("--config", config_name,
                 "A config.json path or a preset for a bare .safetensors file without a config.json beside it");
  app.add_option("--adapter", adapter, "PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)");
  app.add_flag("--merge", merge, "Merge the adapter into the weights before the forward pass (needs --adapter)");
  app.add_option("--ids", ids_path, "safetensors file holding 'input_ids', an integer tensor [B, T]")->required();
  app.add_option("--out", out_path, "safetensors file to write 'logits' (F32 [B, T, vocab_size]) to")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "error: {} (see --help)\n", e.what());
    return 1;
  }

  try {
    LORA_CHECK(!merge || !adapter.empty(), "--merge needs --adapter");
    LORA_CHECK(lora::is_regular_file(ids_path), "--ids '{}': no such file", ids_path);
    const lora::SafeTensorsFile ids_file = lora::SafeTensorsFile::open(ids_path);
    LORA_CHECK(ids_file.contains("input_ids"), "--ids '{}': no tensor 'input_ids' in the file", ids_path);
    const lora::Tensor ids = ids_file.load("input_ids", lora::DType::I64);
    LORA_CHECK(ids.shape().rank() == 2, "--ids '{}': input_ids has shape {}, expected [B, T]", ids_path,
               ids.shape().str());

    std::shared_ptr<lora::models::CausalLM> model = lora::models::load_model(weights, config_name);
    const int64_t T = ids.shape()[1], context = model->dims().context_length, vocab = model->dims().vocab_size;
    LORA_CHECK(T >= 1 && ids.shape()[0] >= 1, "--ids '{}': input_ids has shape {}, an empty batch", ids_path,
               ids.shape().str());
    LORA_CHECK(T <= context, "--ids '{}': {} tokens per sequence, more than the model's context of {}", ids_path, T,
               context);
    const std::vector<int64_t> values = ids.to_vector<int64_t>();
    for (size_t i = 0; i < values.size(); ++i) {
      LORA_CHECK(values[i] >= 0 && values[i] < vocab,
                 "--ids '{}': token {} at flat position {} is outside the model's vocabulary of {}", ids_path,
                 values[i], i, vocab);
    }

    if (!adapter.empty()) {
      lora::nn::load_adapter(*model, adapter);
      if (merge) lora::nn::merge_lora(*model);
    }

    lora::NoGradGuard no_grad;
    model->eval();
    const lora::Tensor logits = model->forward(ids);
    lora::save_safetensors(out_path, {{"logits", logits}});
    fmt::print("logits {} -> {}\n", logits.shape().str(), out_path);
    return 0;
  } catch (const std::exception& e) {  // lora::Error, and anything the standard library throws
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
