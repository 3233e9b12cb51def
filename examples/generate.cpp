// generate: continue a prompt with a causal LM (greedy or sampled), streaming the text as it comes.
//
//   generate --weights models/gpt2 --prompt "The meaning of life is" --max-new-tokens 40
//   generate --weights gpt2.safetensors --config gpt2 --prompt-ids 464,3139 --temperature 0
//   generate --weights models/gpt2 --prompt "Hello" --top-k 40 --top-p 0.9 --seed 7 --json
//   generate --weights models/gpt2 --adapter out/lora --merge --prompt "ROMEO:"
//   generate --weights models/qwen --chat --system "Be brief." --prompt "What is LoRA?"
//   generate --weights models/qwen --chat --messages conversation.json --chat-template chatml.jinja
//
// Without --weights the model is randomly initialised (for trying the program out: the text is gibberish).
// --adapter DIR puts a LoRA adapter in PEFT's format (finetune --mode lora --save S writes S/lora) on
// the model: unmerged (base(x) + s (x A^T) B^T, two extra thin gemms per adapted layer), or with --merge
// folded into the base weights (W + s B A: the base model's speed). A model written by merge_lora is a
// plain model: give it as --weights.
// --chat renders a conversation (--prompt as one user message after an optional --system message, or
// --messages FILE holding {"messages": [{"role", "content"}, ...]}) with the chat template and
// add_generation_prompt, and prints only the reply. The template: --chat-template FILE, else the model
// folder's (chat_template.jinja, tokenizer_config.json), else the --adapter folder's. The rendered text is
// encoded with its special tokens and no BOS of the tokenizer's (templates write their own).
// Generation stops at every end-of-sequence token of config.json, generation_config.json and the tokenizer,
// and with --chat at the template's end-of-turn token (models/stop_tokens.h).
// With --json the last line of stdout is {"prompt_ids", "generated_ids", "text", "tokens_per_s"}.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "core/json.h"
#include "models/chat/chat_template.h"
#include "models/generate.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "models/stop_tokens.h"
#include "models/tokenizer/tokenizer.h"
#include "nn/lora/adapter.h"
#include "serve/api_request.h"
#include "tools/bench_support.h"
#include "tools/model_tokenizer.h"

namespace {

// Token ids separated by commas or spaces: "464,3139" or "464 3139".
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while ((pos = text.find_first_not_of(" ,", pos)) != std::string::npos) {
    size_t end = text.find_first_of(" ,", pos);
    if (end == std::string::npos) end = text.size();
    int32_t id = 0;
    const auto [stop, ec] = std::from_chars(text.data() + pos, text.data() + end, id);
    LORA_CHECK(ec == std::errc() && stop == text.data() + end && id >= 0,
               "--prompt-ids: '{}' is not a token id (expected non-negative integers like 464,3139)",
               text.substr(pos, end - pos));
    ids.push_back(id);
    pos = end;
  }
  return ids;
}

// --messages FILE: one JSON object {"messages": [...]} (a JSON file, or a JSONL file of one line), its
// messages read as the server reads them.
lora::chat::Conversation read_messages_file(const std::string& path) {
  const std::string text = lora::read_file(path, "--messages", 16 << 20);
  const nlohmann::json j = lora::parse_json(text, fmt::format("--messages '{}'", path));
  LORA_CHECK(j.is_object() && j.contains("messages"), "--messages '{}': expected a JSON object with \"messages\"",
             path);
  for (const auto& [key, value] : j.items()) {
    LORA_CHECK(key == "messages", "--messages '{}': field '{}' is not read (expected only \"messages\")", path, key);
  }
  try {
    return lora::serve::parse_messages(j["messages"]);
  } catch (const lora::serve::ApiError& e) {
    LORA_FAIL("--messages '{}': {}", path, e.what());
  }
}

// The chat template of --chat: --chat-template FILE, else the model folder's, else the adapter folder's.
lora::chat::ChatTemplate find_chat_template(const std::string& file, const std::string& model_folder,
                                            const std::string& tokenizer_folder, const std::string& adapter) {
  if (!file.empty()) return lora::chat::ChatTemplate::from_file(file, tokenizer_folder);
  if (!model_folder.empty()) {
    if (auto t = lora::chat::ChatTemplate::from_model_folder(model_folder)) return std::move(*t);
  }
  if (!adapter.empty()) {
    if (auto t = lora::chat::ChatTemplate::from_model_folder(adapter)) return std::move(*t);
  }
  LORA_FAIL(
      "--chat: no chat template: {}{} no chat_template.jinja or tokenizer_config.json with \"chat_template\"; give "
      "--chat-template FILE",
      model_folder.empty() ? "a random model has none, and" : "the model folder '" + model_folder + "' has",
      adapter.empty() ? "" : " (nor does the adapter folder '" + adapter + "')");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Generate text with a causal LM: greedy (--temperature 0) or sampled with temperature, top-k and top-p."};
  std::string weights, config_name, tokenizer_path, prompt, prompt_ids_text, adapter, base_dtype = "auto";
  std::string system, messages_path, chat_template_path;
  lora::models::SamplingOptions sampling;
  bool json = false, merge = false, chat = false, print_prompt = false;
  app.add_option("--weights", weights,
                 "Hugging Face model folder (config.json + model.safetensors or shards) or a .safetensors file");
  app.add_option("--config", config_name,
                 "A config.json path or a preset (gpt2, gpt2-medium, ..., tiny, smollm2-135m, llama-tiny): for a bare "
                 ".safetensors file, or the random model");
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer.json or a folder with tokenizer files (default: the model folder's, or GPT-2's for GPT-2)");
  auto* prompt_opt =
      app.add_option("--prompt", prompt, "Prompt text (default: start from the beginning-of-sequence token)");
  auto* ids_opt = app.add_option("--prompt-ids", prompt_ids_text, "Prompt as token ids, e.g. 464,3139");
  prompt_opt->excludes(ids_opt);
  auto* chat_opt = app.add_flag(
      "--chat", chat, "Render --prompt (a user message) or --messages with the chat template and print only the reply");
  app.add_option("--system", system, "With --chat: a system message before --prompt")
      ->needs(chat_opt)
      ->needs(prompt_opt);
  auto* messages_opt = app.add_option("--messages", messages_path,
                                      "With --chat: a JSON file {\"messages\": [{\"role\", \"content\"}, ...]} (or a "
                                      "JSONL file of one such line)")
                           ->needs(chat_opt)
                           ->excludes(prompt_opt);
  app.add_option("--chat-template", chat_template_path,
                 "With --chat: a Jinja chat template file (default: the model folder's, else the adapter's)")
      ->needs(chat_opt);
  app.add_flag("--print-prompt", print_prompt, "With --chat: print the rendered conversation to stderr")
      ->needs(chat_opt);
  chat_opt->excludes(ids_opt);
  app.add_option("--max-new-tokens", sampling.max_new_tokens, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", sampling.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", sampling.top_k, "Sample from the k most likely tokens (0 = all)")->capture_default_str();
  app.add_option("--top-p", sampling.top_p, "Sample from the smallest set with this probability mass")
      ->capture_default_str();
  app.add_option("--seed", sampling.seed, "Seed of the sampler (and of the random model)")->capture_default_str();
  auto* adapter_opt = app.add_option(
      "--adapter", adapter, "LoRA adapter folder in PEFT's format (adapter_config.json + adapter_model.safetensors)");
  app.add_flag("--merge", merge,
               "Merge the adapter into the base weights (zero extra latency) instead of running it beside them")
      ->needs(adapter_opt);
  app.add_option("--base-dtype", base_dtype,
                 "Hold the linear layers' weights as f32, bf16, q8_0 (or int8), q4_0 or nf4 (quantized on load, after "
                 "--adapter and --merge), or auto: a GGUF file's own Q8_0/Q4_0 blocks as they are (K-quants to the "
                 "nearest of the two), f32 for other weights")
      ->capture_default_str();
  app.add_flag("--json", json, "End with one JSON line: prompt_ids, generated_ids, text, tokens_per_s");
  CLI11_PARSE(app, argc, argv);

  try {
    sampling.validate();
    const lora::models::BaseDtype base = lora::models::BaseDtype::parse(base_dtype);
    const lora::QuantFormat base_format = lora::models::resolved_base_format(base, weights, config_name);

    if (weights.empty()) {
      std::cerr << "notice: no --weights given: using a randomly initialised '"
                << (config_name.empty() ? "gpt2" : config_name) << "' model (seed " << sampling.seed
                << "), so the text will be gibberish\n";
    }
    // The tokenizer before the model where it can be (tools/model_tokenizer.h: what building it freed goes back
    // to the system, instead of staying resident beside the model).
    std::unique_ptr<lora::tokenizer::Tokenizer> tokenizer =
        lora::tools::tokenizer_before_model(weights, tokenizer_path);
    // --merge writes into the base weights: they load in float32 and are quantized after the merge.
    const lora::tools::ResidentMemory before_load = lora::tools::resident_memory();
    const auto load_start = std::chrono::steady_clock::now();
    std::shared_ptr<lora::models::CausalLM> model =
        lora::models::load_model(weights, config_name, sampling.seed, merge ? lora::models::BaseDtype{} : base);
    {
      // What loading cost the process: its resident set grew by the model plus whatever the load held at its
      // peak (the file's pages, conversion buffers).
      const lora::tools::ResidentMemory after_load = lora::tools::resident_memory();
      std::cerr << fmt::format("model loaded in {:.2f} s: resident {:.1f} -> {:.1f} MB (peak {:.1f} MB)\n",
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
                               before_load.rss / 1e6, after_load.rss / 1e6, after_load.peak / 1e6);
    }
    if (!tokenizer) tokenizer = lora::tools::tokenizer_for_model(*model, weights, tokenizer_path);

    const std::string model_folder = lora::models::model_folder_of(weights);
    std::optional<lora::chat::ChatTemplate> chat_template;
    std::vector<int32_t> prompt_ids;
    if (chat) {
      LORA_CHECK(*prompt_opt || *messages_opt,
                 "--chat needs the conversation: --prompt TEXT (a user message) or --messages FILE");
      LORA_CHECK(!*adapter_opt || lora::is_directory(adapter), "--adapter '{}': no such folder", adapter);
      const std::string tokenizer_folder =
          !tokenizer_path.empty() && lora::is_directory(tokenizer_path) ? tokenizer_path : model_folder;
      chat_template = find_chat_template(chat_template_path, model_folder, tokenizer_folder, adapter);
      lora::chat::Conversation conversation;
      if (*messages_opt) {
        conversation = read_messages_file(messages_path);
      } else {
        if (!system.empty()) conversation.push_back({"system", system});
        conversation.push_back({"user", prompt});
      }
      const std::string rendered = chat_template->render(conversation, /*add_generation_prompt=*/true);
      if (print_prompt) std::cerr << rendered << (rendered.ends_with('\n') ? "" : "\n");
      // The template writes its own BOS and turn markers: its special tokens are parsed, none is added.
      prompt_ids = tokenizer->encode(rendered, {.add_special_tokens = false, .parse_special_tokens = true});
      LORA_CHECK(!prompt_ids.empty(), "the rendered conversation encodes to no tokens");
      std::cerr << fmt::format("chat template: {} ({} prompt tokens)\n", chat_template->origin(), prompt_ids.size());
    } else if (*ids_opt) {
      prompt_ids = parse_ids(prompt_ids_text);
      LORA_CHECK(!prompt_ids.empty(), "--prompt-ids is empty: give at least one token id");
    } else if (*prompt_opt) {
      LORA_CHECK(!prompt.empty(),
                 "--prompt is empty: give some text (or leave --prompt out to start from the "
                 "beginning-of-sequence token)");
      // As transformers' tokenizer(prompt): the tokenizer's own special tokens (Llama's BOS) are added; special
      // tokens written in the text stay text.
      prompt_ids = tokenizer->encode(prompt, {.add_special_tokens = true, .parse_special_tokens = false});
      LORA_CHECK(!prompt_ids.empty(), "--prompt encodes to no tokens");
    } else {
      // The beginning-of-sequence token; GPT-2 has only <|endoftext|>, which begins documents too.
      int64_t start = model->bos_token_id() >= 0 ? model->bos_token_id() : model->eos_token_id();
      if (start < 0) start = tokenizer->bos_id().value_or(tokenizer->eos_id().value_or(-1));
      LORA_CHECK(start >= 0,
                 "the model and its tokenizer name no beginning-of-sequence token: give --prompt or --prompt-ids");
      prompt_ids = {static_cast<int32_t>(start)};
    }

    if (*adapter_opt) {
      lora::nn::load_adapter(*model, adapter);
      if (merge) lora::nn::merge_lora(*model);
      const auto layers = lora::nn::lora_layers(*model);
      const auto& first = *layers.front().second;
      std::cerr << fmt::format("adapter {}: {} adapted layers, rank {} per slice, scale {}, {}\n", adapter,
                               layers.size(), first.rank(), first.scaling(),
                               merge ? "merged into the base weights" : "unmerged (--merge folds it into the weights)");
    }
    if (base_format != lora::QuantFormat::F32) {
      model->freeze();  // inference: nothing trains
      const auto report = lora::models::quantize_base(*model, base_format, /*inference_head=*/true);
      std::cerr << fmt::format("base weights as {}: {}\n", lora::quant_format_name(base_format), report.str());
    }
    const lora::models::StopTokens stops =
        lora::models::stop_tokens(*model, lora::models::generation_config_folder(weights, config_name), *tokenizer,
                                  chat_template ? &*chat_template : nullptr);
    sampling.stop_tokens = stops.ids;
    std::cerr << "stop tokens: " << stops.why << '\n';
    const int64_t context = model->dims().context_length, vocab = model->dims().vocab_size;
    for (int32_t id : prompt_ids) {
      LORA_CHECK(id < vocab, "the prompt's token {} is outside the model's vocabulary of {} tokens", id, vocab);
    }
    if (static_cast<int64_t>(prompt_ids.size()) + sampling.max_new_tokens > context) {
      std::cerr << "notice: the context is " << context << " tokens: generation stops when it is full\n";
    }

    // Stream: the prompt (unless it is the implicit start token), then each token's text as soon as it is
    // complete (a character split across tokens waits for its last byte).
    // With --chat only the reply, without the token that ends it.
    lora::tokenizer::IncrementalDecoder decoder(*tokenizer);
    if ((*prompt_opt || *ids_opt) && !chat) {
      for (int32_t id : prompt_ids) std::cout << decoder.push(id);
      std::cout.flush();
    }
    auto is_stop = [&](int32_t id) { return std::find(stops.ids.begin(), stops.ids.end(), id) != stops.ids.end(); };
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> generated = lora::models::generate(*model, prompt_ids, sampling, [&](int32_t id) {
      if (!(chat && is_stop(id))) std::cout << decoder.push(id) << std::flush;
    });
    std::vector<int32_t> reply = generated;
    if (chat && !reply.empty() && is_stop(reply.back())) reply.pop_back();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << decoder.finish() << std::endl;  // flushed before the figures on stderr

    const double tokens_per_s = seconds > 0 ? static_cast<double>(generated.size()) / seconds : 0.0;
    fmt::print(stderr, "{} tokens in {:.2f} s ({:.1f} tokens/s)\n", generated.size(), seconds, tokens_per_s);
    if (json) {
      const nlohmann::json out = {{"prompt_ids", prompt_ids},
                                  {"generated_ids", generated},
                                  {"text", tokenizer->decode(reply, {})},
                                  {"tokens_per_s", tokens_per_s}};
      // A generation may end inside a multi-byte character: JSON gets U+FFFD for those bytes.
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
