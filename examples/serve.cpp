// serve: an OpenAI-compatible HTTP server for one base model and many LoRA adapters at once. Requests for
// different adapters are decoded together in one batch (each row gathers its own adapter), and requests
// join and leave the batch as they come and finish (continuous batching).
//
//   serve --weights models/gpt2 --adapter sql=out/sql/lora --adapter chat=out/chat/lora --port 8080
//   curl localhost:8080/v1/completions -d '{"model": "sql", "prompt": "SELECT", "max_tokens": 20}'
//   curl localhost:8080/v1/completions -d '{"model": "base", "prompt": "Hi", "stream": true}'
//   curl localhost:8080/v1/chat/completions -d '{"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}'
//   curl localhost:8080/v1/adapters -d '{"name": "poem", "path": "out/poem/lora"}'     (load at run time)
//   curl -X DELETE localhost:8080/v1/adapters/poem                                     (unload)
//   curl localhost:8080/health                                                         (load: active, queued)
//
// /v1/chat/completions renders conversations with --chat-template FILE, else the model folder's template
// (chat_template.jinja, tokenizer_config.json), else a requested adapter's own. Generation stops at every
// end-of-sequence token of config.json, generation_config.json and the tokenizer, and at the template's
// end-of-turn token (models/stop_tokens.h).
// Without --weights the model is randomly initialised (for trying the server out: the text is gibberish).
// Ctrl-C stops it.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "core/files.h"
#include "models/base_dtype.h"
#include "models/chat/chat_template.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "models/stop_tokens.h"
#include "nn/lora/adapter.h"
#include "serve/adapter_set.h"
#include "serve/decode_engine.h"
#include "serve/http/server.h"
#include "tools/model_tokenizer.h"

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) {
  g_stop = true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Serve a causal LM and its LoRA adapters over HTTP (OpenAI-compatible /v1/completions and "
      "/v1/chat/completions)."};
  std::string weights, config_name, tokenizer_path, chat_template_path, base_dtype = "auto";
  std::vector<std::string> adapters;
  lora::serve::ServerOptions server;
  lora::serve::EngineOptions engine_options;
  int64_t max_adapters = 64;
  uint64_t seed = 0;
  app.add_option("--weights", weights,
                 "Hugging Face model folder (config.json + model.safetensors or shards) or a .safetensors file");
  app.add_option("--config", config_name,
                 "A config.json path or a preset (gpt2, tiny, llama-tiny, ...): for a bare .safetensors file, or the "
                 "random model");
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer.json or a folder with tokenizer files (default: the model folder's, or GPT-2's for GPT-2)");
  app.add_option("--chat-template", chat_template_path,
                 "A Jinja chat template file for /v1/chat/completions (default: the model folder's)");
  app.add_option("--adapter", adapters, "NAME=DIR: a PEFT adapter folder served as model NAME (repeatable)");
  app.add_option("--host", server.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", server.port, "Port to listen on (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--model-name", server.model_name, "The base model's name in requests and /v1/models")
      ->capture_default_str();
  app.add_option("--max-sequences", engine_options.max_sequences, "Sequences decoded at once (KV-cache slots)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-queue", engine_options.max_queue, "Requests waiting beyond which the server answers 429")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--prompt-pass-tokens", engine_options.prompt_pass_tokens,
                 "Prompts arriving together run in one pass of at most this many tokens, padding included (1: one "
                 "prompt per pass)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--context", engine_options.capacity, "Tokens per sequence, prompt included (0: the model's context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-tokens-limit", server.limits.max_tokens, "The largest max_tokens a request may ask for")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-body-bytes", server.max_body_bytes, "The largest request body")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-adapters", max_adapters, "Adapters resident at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--seed", seed, "Seed of the random model (without --weights)")->capture_default_str();
  app.add_option("--base-dtype", base_dtype,
                 "Hold the base's linear layers as f32, bf16, q8_0 (or int8), q4_0 or nf4 (quantized on load; the "
                 "adapters stay f32 beside them), or auto: a GGUF file's own Q8_0/Q4_0 blocks as they are, f32 for "
                 "other weights")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    if (weights.empty()) {
      std::cerr << "notice: no --weights given: using a randomly initialised '"
                << (config_name.empty() ? "gpt2" : config_name) << "' model, so the text will be gibberish\n";
    }
    const lora::models::BaseDtype base = lora::models::BaseDtype::parse(base_dtype);
    const lora::QuantFormat base_format = lora::models::resolved_base_format(base, weights, config_name);
    // The tokenizer before the model where it can be (tools/model_tokenizer.h).
    std::unique_ptr<lora::tokenizer::Tokenizer> tokenizer =
        lora::tools::tokenizer_before_model(weights, tokenizer_path);
    auto model = lora::models::load_model(weights, config_name, seed, base);
    if (base_format != lora::QuantFormat::F32) {
      model->freeze();  // serving: nothing trains; what loading left in f32 (a random model's) is quantized now
      std::cerr << fmt::format("base weights as {}: {}\n", lora::quant_format_name(base_format),
                               lora::models::quantize_base(*model, base_format, /*inference_head=*/true).str());
    }
    if (!tokenizer) tokenizer = lora::tools::tokenizer_for_model(*model, weights, tokenizer_path);
    const std::string folder = lora::models::model_folder_of(weights);
    std::shared_ptr<const lora::chat::ChatTemplate> chat;
    if (!chat_template_path.empty()) {
      chat = std::make_shared<const lora::chat::ChatTemplate>(
          lora::chat::ChatTemplate::from_file(chat_template_path, folder));
    } else if (!folder.empty()) {
      if (auto t = lora::chat::ChatTemplate::from_model_folder(folder))
        chat = std::make_shared<const lora::chat::ChatTemplate>(std::move(*t));
    }
    server.chat_template = chat;
    std::cerr << "chat template: "
              << (chat ? chat->origin()
                       : std::string("none (/v1/chat/completions needs --chat-template, or an adapter's own)"))
              << '\n';
    const lora::models::StopTokens stops = lora::models::stop_tokens(
        *model, lora::models::generation_config_folder(weights, config_name), *tokenizer, chat.get());
    engine_options.eos_token_ids = stops.ids;
    std::cerr << "stop tokens: " << stops.why << '\n';
    lora::serve::AdapterSet set(*model, max_adapters);
    std::vector<std::pair<std::string, std::shared_ptr<const lora::chat::ChatTemplate>>> adapter_chat;
    for (const std::string& spec : adapters) {
      const size_t eq = spec.find('=');
      LORA_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(),
                 "--adapter '{}': expected NAME=DIR (a name, '=', a PEFT adapter folder)", spec);
      const std::string name = spec.substr(0, eq), dir = spec.substr(eq + 1);
      LORA_CHECK(name != server.model_name, "--adapter '{}': '{}' is the base model's name (--model-name)", spec, name);
      LORA_CHECK(lora::is_directory(dir), "--adapter '{}': no such folder '{}'", spec, dir);
      set.load(name, lora::nn::read_adapter(dir));
      if (auto t = lora::chat::ChatTemplate::from_model_folder(dir)) {
        adapter_chat.emplace_back(name, std::make_shared<const lora::chat::ChatTemplate>(std::move(*t)));
      }
      std::cerr << fmt::format("adapter '{}' from {}\n", name, dir);
    }
    lora::serve::DecodeEngine engine(*model, set, engine_options, tokenizer.get());
    lora::serve::HttpServer http(engine, *tokenizer, server);
    for (auto& [name, t] : adapter_chat) http.set_chat_template(name, std::move(t));
    const int port = http.start();
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::cerr << fmt::format(
        "serving '{}' and {} adapters on http://{}:{} ({} sequences at once, {} waiting at most, "
        "context {})\n",
        server.model_name, set.size(), server.host, port, engine_options.max_sequences, engine_options.max_queue,
        engine.capacity());
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::cerr << "stopping\n";
    http.stop();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
