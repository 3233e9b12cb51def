// Chat at inference time: /v1/chat/completions requests read strictly (serve/api_request.h), the tokens that
// stop a generation (models/stop_tokens.h: config.json, generation_config.json, the tokenizer, a chat
// template's end of turn), `generate --chat` rendering the conversation with a ChatML template, and the
// server's chat route streamed and not, against models::generate on the same rendered prompt.
#include <httplib.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "models/generate.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "models/stop_tokens.h"
#include "serve/api_request.h"
#include "serve/http/server.h"
#include "tests/program_runner.h"
#include "tests/serve_checks.h"

using namespace lora;
using namespace lora::testing;
using json = nlohmann::json;

namespace {

// ChatML as Qwen2 writes it, refusing roles it does not know (as many published templates do).
const std::string kChatML =
    "{%- for message in messages %}\n"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('Unknown role: ' + message['role']) }}{%- endif %}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n";

// The Qwen2 tokenizer fixture: 853 ids, <|endoftext|> 850, <|im_start|> 851, <|im_end|> 852. Its
// tokenizer_config.json names <|endoftext|> as eos here, so that <|im_end|> stops only as the template's
// end of turn.
const fs::path& tokenizer_folder() {
  static const fs::path dir = [] {
    const fs::path d = scratch_dir() / "chat_tokenizer";
    fs::create_directories(d);
    fs::copy_file(fs::path(LORA_TEST_DATA_DIR) / "tokenizers" / "qwen2" / "tokenizer.json", d / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    write_file(d / "tokenizer_config.json", R"({"bos_token": null, "eos_token": "<|endoftext|>"})");
    return d;
  }();
  return dir;
}

const json& model_config() {
  static const json config = {{"model_type", "llama"},    {"vocab_size", 853},
                              {"hidden_size", 32},        {"intermediate_size", 64},
                              {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                              {"num_key_value_heads", 2}, {"max_position_embeddings", 128},
                              {"rms_norm_eps", 1e-5},     {"tie_word_embeddings", true},
                              {"bos_token_id", nullptr},  {"eos_token_id", 850}};
  return config;
}

const fs::path& chatml_file() {
  static const fs::path path = [] {
    const fs::path p = scratch_dir() / "chatml.jinja";
    write_file(p, kChatML);
    return p;
  }();
  return path;
}

// A random model saved as a Hugging Face folder with the tokenizer beside it (and no chat template).
fs::path make_chat_model_folder() {
  const fs::path dir = scratch_dir() / "chat_model";
  if (fs::exists(dir / "model.safetensors")) return dir;
  auto model = models::create_model({model_config(), "test"}, 5);
  models::save_hf_checkpoint(*model, dir.string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(tokenizer_folder() / f, dir / f);
  return dir;
}

void require_refused(const std::string& body, const std::string& fragment) {
  INFO(body);
  try {
    serve::parse_chat_request(body, {.max_tokens = 100});
    FAIL("accepted");
  } catch (const serve::ApiError& e) {
    CHECK(e.status == 400);
    CHECK_THAT(std::string(e.what()), Catch::Contains(fragment));
  }
}

std::vector<int32_t> greedy(models::CausalLM& model, const std::vector<int32_t>& prompt, int64_t n,
                            std::vector<int64_t> stop = {}) {
  models::SamplingOptions o;
  o.max_new_tokens = n;
  o.temperature = 0;
  o.stop_tokens = std::move(stop);
  o.stop_at_eos = !o.stop_tokens.empty();
  return models::generate(model, prompt, o);
}

}  // namespace

TEST_CASE("chat requests: the fields read, and each field refused with its name", "[chat_serve]") {
  const serve::ChatRequest r = serve::parse_chat_request(R"({
      "model": "base", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
      "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n\n"], "stream": true,
      "n": 1, "user": "u", "logprobs": false, "response_format": {"type": "text"}})",
                                                         {.max_tokens = 100});
  CHECK(r.model == "base");
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[0].content == "Be brief.");
  CHECK(r.messages[1].content == "Hi\nthere");
  CHECK(r.max_tokens == 7);
  CHECK(r.options.temperature == 0.5);
  CHECK(r.options.top_p == 0.9);
  CHECK(r.options.seed == 3);
  CHECK(r.options.stop == std::vector<std::string>{"\n\n"});
  CHECK(r.stream);
  const serve::ChatRequest plain =
      serve::parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})", {});
  CHECK_FALSE(plain.max_tokens.has_value());
  CHECK_FALSE(plain.stream);
  CHECK(serve::parse_chat_request(R"({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]})",
                                  {})
            .max_tokens == 4);

  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  require_refused(R"({"model": "m"})", "'messages' is missing");
  require_refused(R"({"model": "m", "messages": []})", "'messages'");
  require_refused(R"({"messages": [{"role": "user", "content": "x"}]})", "'model'");
  require_refused(R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content");
  require_refused(R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role");
  require_refused(R"({"model": "m", "messages": [{"role": "user", "content": null}]})", "messages[0].content");
  require_refused(R"({"model": "m", "messages": [{"role": "user", "content": "x", "name": "bob"}]})",
                  "messages[0].name");
  require_refused(
      R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
      "messages[0].content[0].type");
  require_refused(R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]})",
                  "messages[0].content[0].text");
  require_refused("{\"model\": \"m\", " + user + ", \"n\": 2}", "'n'");
  require_refused("{\"model\": \"m\", " + user + ", \"logprobs\": true}", "'logprobs'");
  require_refused("{\"model\": \"m\", " + user + ", \"tools\": [{\"type\": \"function\"}]}", "'tools'");
  require_refused("{\"model\": \"m\", " + user + ", \"response_format\": {\"type\": \"json_object\"}}",
                  "'response_format'");
  require_refused("{\"model\": \"m\", " + user + ", \"presence_penalty\": 1}", "'presence_penalty'");
  require_refused("{\"model\": \"m\", " + user + ", \"foo\": 1}", "unknown field 'foo'");
  require_refused("{\"model\": \"m\", " + user + ", \"max_tokens\": 0}", "max_tokens");
  require_refused("{\"model\": \"m\", " + user + ", \"max_completion_tokens\": 101}", "max_completion_tokens");
  require_refused("{\"model\": \"m\", " + user + ", \"max_tokens\": 3, \"max_completion_tokens\": 4}", "differ");
  require_refused("{\"model\": \"m\", " + user + ", \"temperature\": 3}", "temperature");
  require_refused("{\"model\": \"m\", " + user + ", \"stream\": \"yes\"}", "stream");
  require_refused("{\"model\": \"m\", " + user + ", \"stop\": [1]}", "stop");
  require_refused("[]", "JSON object");
}

TEST_CASE("stop tokens: config.json, generation_config.json (an id or a list), the tokenizer and the end of turn",
          "[chat_serve]") {
  CHECK(models::read_generation_eos(R"({"eos_token_id": 7})", "g.json", 100) == std::vector<int64_t>{7});
  CHECK(models::read_generation_eos(R"({"eos_token_id": [7, 9, 500]})", "g.json", 100) == std::vector<int64_t>{7, 9});
  CHECK(models::read_generation_eos(R"({"eos_token_id": null})", "g.json", 100).empty());
  CHECK(models::read_generation_eos(R"({"bos_token_id": 1})", "g.json", 100).empty());
  CHECK_THROWS_WITH(models::read_generation_eos(R"({"eos_token_id": "x"})", "g.json", 100),
                    Catch::Contains("g.json") && Catch::Contains("eos_token_id"));
  CHECK_THROWS_WITH(models::read_generation_eos("{\n\"eos_token_id\": [1,", "g.json", 100),
                    Catch::Contains("g.json") && Catch::Contains("line 2"));

  auto model = models::create_model({model_config(), "test"}, 5);
  const auto tokenizer = tokenizer::load_tokenizer(tokenizer_folder());
  const chat::ChatTemplate chatml(kChatML, "", "<|endoftext|>", "chatml.jinja");
  CHECK(models::end_of_turn_token(chatml, *tokenizer) == 852);  // <|im_end|>
  // A template that ends a turn with plain text has no end-of-turn token.
  const chat::ChatTemplate plain("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}", "", "",
                                 "plain");
  CHECK_FALSE(models::end_of_turn_token(plain, *tokenizer).has_value());

  const fs::path folder = scratch_dir() / "stop_tokens_folder";
  fs::create_directories(folder);
  write_file(folder / "generation_config.json", R"({"eos_token_id": [850, 17, 5000]})");
  models::StopTokens s = models::stop_tokens(*model, folder.string(), *tokenizer, &chatml);
  CHECK(s.ids == std::vector<int64_t>{17, 850, 852});
  CHECK_THAT(s.why, Catch::Contains("generation_config.json") && Catch::Contains("chat template"));
  s = models::stop_tokens(*model, "", *tokenizer);
  CHECK(s.ids == std::vector<int64_t>{850});  // config.json's and the tokenizer's eos
  write_file(folder / "generation_config.json", R"({"eos_token_id": {"a": 1}})");
  CHECK_THROWS_WITH(models::stop_tokens(*model, folder.string(), *tokenizer),
                    Catch::Contains("generation_config.json"));
}

TEST_CASE("serve: a sequence stops at an eos of generation_config.json's list, without its text", "[chat_serve]") {
  auto model = models::create_model({model_config(), "test"}, 5);
  const auto tokenizer = tokenizer::load_tokenizer(tokenizer_folder());
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> free_run = greedy(*model, prompt, 8);
  // The third greedy token becomes an end-of-sequence id: decoding stops at its first occurrence.
  const int32_t stop = free_run[2];
  const size_t first = static_cast<size_t>(std::find(free_run.begin(), free_run.end(), stop) - free_run.begin());
  const fs::path folder = scratch_dir() / "stop_list_folder";
  fs::create_directories(folder);
  write_file(folder / "generation_config.json", json{{"eos_token_id", {850, stop}}}.dump());
  const models::StopTokens stops = models::stop_tokens(*model, folder.string(), *tokenizer);
  REQUIRE(std::find(stops.ids.begin(), stops.ids.end(), stop) != stops.ids.end());
  CHECK(greedy(*model, prompt, 8, stops.ids) == std::vector<int32_t>(free_run.begin(), free_run.begin() + first + 1));

  serve::AdapterSet set(*model, 2);
  serve::DecodeEngine engine(*model, set, {.max_sequences = 2, .max_queue = 2, .eos_token_ids = stops.ids},
                             tokenizer.get());
  std::string text;
  int64_t tokens = 0;
  serve::FinishReason finish = serve::FinishReason::None;
  serve::Request r{prompt, "", {}, [&](const serve::Event& e) {
                     text += e.text;
                     tokens += e.token >= 0;
                     if (e.finish != serve::FinishReason::None) finish = e.finish;
                   }};
  r.options.max_tokens = 8;
  r.options.temperature = 0;
  engine.submit(std::move(r));
  while (engine.step()) {
  }
  CHECK(finish == serve::FinishReason::Stop);
  CHECK(tokens == static_cast<int64_t>(first) + 1);
  CHECK(text == tokenizer->decode(std::vector<int32_t>(free_run.begin(), free_run.begin() + first), {}));
}

TEST_CASE("generate --chat renders the conversation with the template and prints only the reply",
          "[chat_serve][examples]") {
  REQUIRE_PROGRAM(generate, "generate");
  const fs::path model = make_chat_model_folder();
  const auto tokenizer = tokenizer::load_tokenizer(tokenizer_folder());
  const std::string rendered =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n";
  const std::vector<int32_t> expected_ids =
      tokenizer->encode(rendered, {.add_special_tokens = false, .parse_special_tokens = true});
  REQUIRE(std::count(expected_ids.begin(), expected_ids.end(), 851) == 3);  // <|im_start|>, one token each

  const std::string base = "--weights " + quote(model) + " --chat --max-new-tokens 6 --temperature 0 --json";
  RunResult r = run(generate, base + " --chat-template " + quote(chatml_file()) +
                                  " --system 'Be brief.' --prompt 'Hello there' --print-prompt");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains(rendered));
  const json j = last_json_line(r.out);
  CHECK(j["prompt_ids"].get<std::vector<int32_t>>() == expected_ids);
  std::vector<int32_t> reply = j["generated_ids"].get<std::vector<int32_t>>();
  // generate's own tokens for the same prompt: the program used the rendered prompt.
  auto reference = models::load_model(model.string(), "");
  CHECK(reply == greedy(*reference, expected_ids, 6, {850, 852}));
  if (!reply.empty() && (reply.back() == 850 || reply.back() == 852)) reply.pop_back();
  CHECK(j["text"] == tokenizer->decode(reply, {}));
  CHECK(r.out.rfind(tokenizer->decode(reply, {}) + "\n", 0) == 0);  // the reply alone, not the prompt

  // The same conversation from --messages (JSON, or one JSONL line with text parts).
  const fs::path messages = scratch_dir() / "conversation.jsonl";
  write_file(
      messages,
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]})"
      "\n");
  r = run(generate, base + " --chat-template " + quote(chatml_file()) + " --messages " + quote(messages));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r.out)["prompt_ids"].get<std::vector<int32_t>>() == expected_ids);

  // No template anywhere: the error names --chat-template. The model folder's, then an adapter's, are used.
  r = run(generate, base + " --prompt hi");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("--chat-template"));
  const fs::path adapter = scratch_dir() / "chat_adapter";
  {
    auto m = models::load_model(model.string(), "");
    nn::LoRAConfig config;
    config.options.rank = 2;
    config.targets = {"q", "v"};
    models::apply_lora(*m, config);
    nn::save_adapter(*m, adapter.string(), "chat_model", m->hf_fan_in_fan_out());
    write_file(adapter / "chat_template.jinja", kChatML);
  }
  r = run(generate, base + " --adapter " + quote(adapter) + " --system 'Be brief.' --prompt 'Hello there'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("chat_adapter"));
  CHECK(last_json_line(r.out)["prompt_ids"].get<std::vector<int32_t>>() == expected_ids);
  fs::copy_file(chatml_file(), model / "chat_template.jinja", fs::copy_options::overwrite_existing);
  r = run(generate, base + " --system 'Be brief.' --prompt 'Hello there'");
  fs::remove(model / "chat_template.jinja");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r.out)["prompt_ids"].get<std::vector<int32_t>>() == expected_ids);

  // Refusals: a role the template refuses (its own message), a bad messages file, flags without --chat.
  write_file(messages, R"({"messages": [{"role": "tool", "content": "x"}]})");
  r = run(generate, base + " --chat-template " + quote(chatml_file()) + " --messages " + quote(messages));
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("tool"));
  write_file(messages, R"({"messages": [{"role": "user", "content": 3}], "id": 1})");
  r = run(generate, base + " --chat-template " + quote(chatml_file()) + " --messages " + quote(messages));
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("conversation.jsonl") && Catch::Contains("'id'"));
  r = run(generate, "--weights " + quote(model) + " --prompt hi --system x");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("--chat"));
}

namespace {

httplib::Result post_chat(int port, const json& body) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  return client.Post("/v1/chat/completions", body.dump(), "application/json");
}

// The chat.completion.chunk events of a stream: the role of the first delta, the content, the finish reason,
// and whether [DONE] closed it.
struct ChatStream {
  std::string role, content, finish;
  bool done = false;
  int chunks = 0;
};
ChatStream read_chat_stream(const std::string& raw) {
  ChatStream s;
  size_t at = 0;
  while ((at = raw.find("data: ", at)) != std::string::npos) {
    const size_t end = raw.find("\n\n", at);
    const std::string data = raw.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const json chunk = json::parse(data);
    REQUIRE(chunk["object"] == "chat.completion.chunk");
    const json& choice = chunk["choices"][0];
    if (s.chunks++ == 0) s.role = choice["delta"].value("role", "");
    s.content += choice["delta"].value("content", "");
    if (!choice["finish_reason"].is_null()) s.finish = choice["finish_reason"];
  }
  return s;
}

}  // namespace

TEST_CASE("serve: /v1/chat/completions streamed and not, with adapters, and its refusals",
          "[chat_serve][serve][http]") {
  auto model = models::create_model({model_config(), "test"}, 9);
  auto reference = models::create_model({model_config(), "test"}, 9);
  const auto tokenizer = tokenizer::load_tokenizer(tokenizer_folder());
  auto chatml = std::make_shared<const chat::ChatTemplate>(kChatML, "", "<|endoftext|>", "chatml.jinja");
  const std::vector<nn::AdapterState> states = random_adapters(*reference, {{"qv", 2, {"q", "v"}}}, 8);
  serve::AdapterSet set(*model, 2);
  set.load("qv", states[0]);
  const models::StopTokens stops = models::stop_tokens(*model, "", *tokenizer, chatml.get());
  REQUIRE(stops.ids == std::vector<int64_t>{850, 852});
  // Slots of 48 tokens: the rendered prompt (29 tokens) leaves 19.
  serve::DecodeEngine engine(
      *model, set, {.max_sequences = 2, .max_queue = 8, .capacity = 48, .eos_token_ids = stops.ids}, tokenizer.get());
  serve::ServerOptions options;
  options.port = 0;
  options.limits.max_tokens = 40;
  options.chat_template = chatml;
  serve::HttpServer server(engine, *tokenizer, options);
  const int port = server.start();

  const json messages = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", "Hello there"}}};
  const std::vector<int32_t> prompt = tokenizer->encode(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
      {.add_special_tokens = false, .parse_special_tokens = true});
  REQUIRE(prompt.size() == 29);
  // What generate gives on the rendered prompt: the reply's text (without its stop token) and finish reason.
  auto expected = [&](int64_t max_tokens, const nn::AdapterState* adapter) {
    if (adapter) nn::import_adapter(*reference, *adapter);
    std::vector<int32_t> out = greedy(*reference, prompt, max_tokens, stops.ids);
    nn::remove_lora(*reference);
    const bool stopped = !out.empty() && (out.back() == 850 || out.back() == 852);
    if (stopped) out.pop_back();
    return std::pair<std::string, std::string>{tokenizer->decode(out, {}), stopped ? "stop" : "length"};
  };

  for (const std::string model_name : {"base", "qv"}) {
    INFO(model_name);
    const auto [text, finish] = expected(9, model_name == "qv" ? &states[0] : nullptr);
    json body = {{"model", model_name}, {"messages", messages}, {"max_tokens", 9}, {"temperature", 0}};
    auto res = post_chat(port, body);
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    const json reply = json::parse(res->body);
    CHECK(reply["object"] == "chat.completion");
    CHECK(reply["model"] == model_name);
    CHECK(reply["choices"][0]["message"]["role"] == "assistant");
    CHECK(reply["choices"][0]["message"]["content"] == text);
    CHECK(reply["choices"][0]["finish_reason"] == finish);
    CHECK(reply["usage"]["prompt_tokens"] == prompt.size());

    body["stream"] = true;
    res = post_chat(port, body);
    REQUIRE(res);
    REQUIRE(res->status == 200);
    const ChatStream s = read_chat_stream(res->body);
    CHECK(s.role == "assistant");
    CHECK(s.content == text);
    CHECK(s.finish == finish);
    CHECK(s.done);
  }

  // Without max_tokens the reply may run to the end of the slot (up to the server's limit of 40).
  auto res = post_chat(port, {{"model", "base"}, {"messages", messages}, {"temperature", 0}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(json::parse(res->body)["usage"]["completion_tokens"].get<size_t>() <= 48 - prompt.size());

  auto refused = [&](const json& body, int status, const std::string& fragment) {
    auto r = post_chat(port, body);
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == status);
    const json j = json::parse(r->body);
    CHECK_THAT(j["error"]["message"].get<std::string>(), Catch::Contains(fragment));
  };
  refused({{"model", "base"}, {"messages", {{{"role", "tool"}, {"content", "x"}}}}}, 400, "tool");
  refused({{"model", "base"}, {"messages", messages}, {"n", 2}}, 400, "'n'");
  refused({{"model", "base"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}, 400,
          "image_url");
  refused({{"model", "nope"}, {"messages", messages}}, 404, "'nope' does not exist");
  refused({{"model", "base"}, {"messages", messages}, {"max_tokens", 40}}, 400, "context");
  httplib::Client client("127.0.0.1", port);
  auto health = client.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);  // the server is still up after the refusals
  server.stop();
}

TEST_CASE("serve: chat without a server template uses an adapter's own, else names --chat-template",
          "[chat_serve][serve][http]") {
  auto model = models::create_model({model_config(), "test"}, 9);
  const auto tokenizer = tokenizer::load_tokenizer(tokenizer_folder());
  const std::vector<nn::AdapterState> states = random_adapters(*model, {{"qv", 2, {"q", "v"}}}, 8);
  serve::AdapterSet set(*model, 2);
  set.load("qv", states[0]);
  serve::DecodeEngine engine(*model, set, {.max_sequences = 2, .max_queue = 4}, tokenizer.get());
  serve::ServerOptions options;
  options.port = 0;
  options.limits.max_tokens = 8;
  serve::HttpServer server(engine, *tokenizer, options);
  const int port = server.start();
  const json messages = {{{"role", "user"}, {"content", "Hi"}}};
  auto res = post_chat(port, {{"model", "base"}, {"messages", messages}});
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK_THAT(res->body, Catch::Contains("--chat-template"));
  server.set_chat_template("qv", std::make_shared<const chat::ChatTemplate>(kChatML, "", "", "qv/chat_template.jinja"));
  res = post_chat(port, {{"model", "qv"}, {"messages", messages}, {"max_tokens", 3}});
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 200);
  CHECK(json::parse(res->body)["choices"][0]["message"]["role"] == "assistant");

  // An adapter folder loaded at run time brings its chat_template.jinja; unloaded, its name is unknown.
  const fs::path folder = scratch_dir() / "served_chat_adapter";
  {
    auto copy = models::create_model({model_config(), "test"}, 9);
    nn::LoRAConfig config;
    config.options.rank = 2;
    config.targets = {"q", "v"};
    models::apply_lora(*copy, config);
    nn::save_adapter(*copy, folder.string(), "test", copy->hf_fan_in_fan_out());
    write_file(folder / "chat_template.jinja", kChatML);
  }
  httplib::Client client("127.0.0.1", port);
  auto loaded =
      client.Post("/v1/adapters", json{{"name", "poem"}, {"path", folder.string()}}.dump(), "application/json");
  REQUIRE(loaded);
  REQUIRE(loaded->status == 201);
  res = post_chat(port, {{"model", "poem"}, {"messages", messages}, {"max_tokens", 3}});
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 200);
  auto deleted = client.Delete("/v1/adapters/poem");
  REQUIRE(deleted);
  CHECK(deleted->status == 200);
  res = post_chat(port, {{"model", "poem"}, {"messages", messages}, {"max_tokens", 3}});
  REQUIRE(res);
  CHECK(res->status == 404);
  server.stop();
}
