// The HTTP server (serve/http/server.h), in this process on a free localhost port, driven by concurrent
// cpp-httplib clients: completions equal models::generate's, streaming as server-sent events, refusals
// with JSON errors, an overloaded queue, a client that goes away mid-stream, adapters loaded and unloaded
// at run time; and the server still answers /health after all of it.
#include <httplib.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include "models/generate.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "serve/http/server.h"
#include "tests/program_runner.h"
#include "tests/serve_checks.h"

using namespace lora;
using json = nlohmann::json;

namespace {

struct Reply {
  int status = 0;
  json body;
  std::string raw;
};

Reply post(int port, const std::string& path, const std::string& body) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  auto res = client.Post(path.c_str(), body, "application/json");
  REQUIRE(res);
  Reply r{res->status, json(), res->body};
  if (!res->body.empty() && res->get_header_value("Content-Type") == "application/json")
    r.body = json::parse(res->body);
  return r;
}

Reply get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get(path.c_str());
  REQUIRE(res);
  return {res->status, json::parse(res->body), res->body};
}

void require_error(const Reply& r, int status, const std::string& fragment) {
  INFO(r.raw);
  REQUIRE(r.status == status);
  REQUIRE(r.body.contains("error"));
  REQUIRE(r.body["error"]["type"].is_string());
  REQUIRE(r.body["error"]["message"].get<std::string>().find(fragment) != std::string::npos);
}

// The text of the data: lines of a server-sent event stream, and whether it ended with [DONE].
std::pair<std::string, bool> read_stream(const std::string& raw, std::string* finish = nullptr) {
  std::string text;
  bool done = false;
  size_t at = 0;
  while ((at = raw.find("data: ", at)) != std::string::npos) {
    const size_t end = raw.find("\n\n", at);
    const std::string data = raw.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const json chunk = json::parse(data);
    text += chunk["choices"][0]["text"].get<std::string>();
    if (finish && !chunk["choices"][0]["finish_reason"].is_null()) *finish = chunk["choices"][0]["finish_reason"];
  }
  return {text, done};
}

json completion(const std::string& model, const std::vector<int32_t>& prompt, int64_t max_tokens, bool stream = false) {
  return {{"model", model}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", stream}};
}

}  // namespace

TEST_CASE("serve: completions, streaming, refusals, overload and disconnects over HTTP", "[serve][http]") {
  const models::ModelConfig config = models::read_config_arg("tiny");
  auto model = models::create_model(config, 21);
  auto reference = models::create_model(config, 21);
  const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();
  const std::vector<nn::AdapterState> states = testing::random_adapters(*reference, {{"qv", 2, {"q", "v"}}}, 8);
  serve::AdapterSet set(*model, 4);
  set.load("qv", states[0]);
  // The tiny preset's context is 32 tokens.
  serve::DecodeEngine engine(*model, set, {.max_sequences = 4, .max_queue = 8, .capacity = 32}, &tokenizer);
  serve::ServerOptions options;
  options.port = 0;
  options.max_body_bytes = 4096;
  options.limits.max_tokens = 40;
  serve::HttpServer server(engine, tokenizer, options);
  const int port = server.start();

  // What generate() gives alone, as text.
  auto expected_text = [&](const std::vector<int32_t>& prompt, int64_t max_tokens, const nn::AdapterState* adapter) {
    if (adapter) nn::import_adapter(*reference, *adapter);
    models::SamplingOptions o;
    o.max_new_tokens = max_tokens;
    o.temperature = 0;
    const std::vector<int32_t> out = models::generate(*reference, prompt, o);
    nn::remove_lora(*reference);
    return tokenizer.decode(out, {});
  };

  SECTION("health and models") {
    const Reply h = get(port, "/health");
    REQUIRE(h.status == 200);
    REQUIRE(h.body["status"] == "ok");
    REQUIRE(h.body["active"] == 0);
    const Reply m = get(port, "/v1/models");
    REQUIRE(m.body["object"] == "list");
    REQUIRE(m.body["data"].size() == 2);
    REQUIRE(m.body["data"][0]["id"] == "base");
    REQUIRE(m.body["data"][1]["id"] == "qv");
  }

  SECTION("concurrent completions equal generate's, streamed or not") {
    std::vector<std::thread> clients;
    std::vector<Reply> replies(8);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) prompts.push_back({static_cast<int32_t>(i + 1), 7, static_cast<int32_t>(3 * i + 2)});
    for (int i = 0; i < 8; ++i) {
      clients.emplace_back([&, i] {
        const json body = completion(i % 2 ? "qv" : "base", prompts[i], 6 + i, i >= 4);
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(30, 0);
        auto res = client.Post("/v1/completions", body.dump(), "application/json");
        if (res) replies[i] = {res->status, json(), res->body};
      });
    }
    for (auto& t : clients) t.join();
    for (int i = 0; i < 8; ++i) {
      INFO("client " << i << ": " << replies[i].raw);
      REQUIRE(replies[i].status == 200);
      const std::string expected = expected_text(prompts[i], 6 + i, i % 2 ? &states[0] : nullptr);
      if (i < 4) {
        const json body = json::parse(replies[i].raw);
        REQUIRE(body["object"] == "text_completion");
        REQUIRE(body["choices"][0]["text"] == expected);
        REQUIRE(body["choices"][0]["finish_reason"] == "length");
        REQUIRE(body["usage"]["completion_tokens"] == 6 + i);
        REQUIRE(body["usage"]["prompt_tokens"] == 3);
      } else {
        std::string finish;
        const auto [text, done] = read_stream(replies[i].raw, &finish);
        REQUIRE(done);
        REQUIRE(finish == "length");
        REQUIRE(text == expected);
      }
    }
  }

  SECTION("a text prompt is tokenized") {
    const Reply r = post(port, "/v1/completions",
                         json{{"model", "base"}, {"prompt", "Z"}, {"max_tokens", 3}, {"temperature", 0}}.dump());
    REQUIRE(r.status == 200);
    REQUIRE(r.body["choices"][0]["text"] == expected_text(tokenizer.encode("Z", {}), 3, nullptr));
  }

  SECTION("bad requests get a JSON error naming what was wrong") {
    require_error(post(port, "/v1/completions", "{\"model\": "), 400, "not valid JSON");
    require_error(post(port, "/v1/completions", "[1, 2]"), 400, "JSON object");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "max_tokens": "5"})"), 400,
                  "max_tokens");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "foo": 1})"), 400,
                  "unknown field 'foo'");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "n": 2})"), 400, "'n'");
    require_error(post(port, "/v1/completions", R"({"model": 3, "prompt": [1]})"), 400, "'model'");
    require_error(post(port, "/v1/completions", R"({"model": "nope", "prompt": [1]})"), 404, "'nope' does not exist");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "max_tokens": 41})"), 400,
                  "max_tokens");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "temperature": -1})"), 400,
                  "temperature");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [1], "stream": "yes"})"), 400, "stream");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": [100000]})"), 400, "vocabulary");
    require_error(post(port, "/v1/completions", R"({"model": "base", "prompt": ""})"), 400, "no tokens");
    const json long_prompt = completion("base", std::vector<int32_t>(30, 5), 10);
    require_error(post(port, "/v1/completions", long_prompt.dump()), 400, "context is 32 tokens");
    require_error(post(port, "/v1/completions", std::string(5000, ' ')), 413, "size limit");
    require_error(post(port, "/v1/nothing", "{}"), 404, "no route");
    require_error(post(port, "/v1/adapters", R"({"name": "x"})"), 400, "'path'");
    require_error(post(port, "/v1/adapters", R"({"name": "x", "path": "/nonexistent"})"), 400, "/nonexistent");
    httplib::Client client("127.0.0.1", port);
    auto res = client.Delete("/v1/adapters/nope");
    REQUIRE(res);
    REQUIRE(res->status == 404);
  }

  SECTION("an overloaded queue answers 429; a client that leaves mid-stream frees its slot") {
    std::vector<std::thread> clients;
    std::vector<int> status(24, 0);
    for (int i = 0; i < 24; ++i) {
      clients.emplace_back([&, i] {
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(60, 0);
        auto res = client.Post("/v1/completions", completion("base", {1, 2}, 30).dump(), "application/json");
        status[i] = res ? res->status : -100 - static_cast<int>(res.error());
      });
    }
    for (auto& t : clients) t.join();
    int ok = 0, busy = 0;
    for (int s : status) (s == 200 ? ok : busy) += s == 200 || s == 429 ? 1 : 0;
    for (int s : status) INFO("status " << s);
    std::string all;
    for (int s : status) all += std::to_string(s) + " ";
    INFO("statuses: " << all);
    REQUIRE(ok + busy == 24);
    REQUIRE(ok >= 4);  // the slots at least
    REQUIRE(busy >= 1);

    // A client that reads one chunk of a stream, then hangs up.
    httplib::Client leaving("127.0.0.1", port);
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = completion("qv", {4, 5}, 30, true).dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
    (void)leaving.send(req);
    REQUIRE(chunks >= 1);
    // The server notices at its next write, cancels the request and frees the slot.
    json health;
    for (int i = 0; i < 100; ++i) {
      health = get(port, "/health").body;
      if (health["active"] == 0 && health["queued"] == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(health["active"] == 0);
    REQUIRE(health["queued"] == 0);
  }

  SECTION("adapters are loaded and unloaded at run time") {
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("lora_serve_" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    nn::import_adapter(*reference, states[0]);
    models::save_adapter(*reference, dir, "tiny");
    nn::remove_lora(*reference);
    const Reply loaded = post(port, "/v1/adapters", json{{"name", "fresh"}, {"path", dir}}.dump());
    INFO(loaded.raw);
    REQUIRE(loaded.status == 201);
    require_error(post(port, "/v1/adapters", json{{"name", "fresh"}, {"path", dir}}.dump()), 409, "already loaded");
    const Reply r = post(port, "/v1/completions", completion("fresh", {9, 8, 7}, 5).dump());
    REQUIRE(r.status == 200);
    REQUIRE(r.body["choices"][0]["text"] == expected_text({9, 8, 7}, 5, &states[0]));
    httplib::Client client("127.0.0.1", port);
    auto del = client.Delete("/v1/adapters/fresh");
    REQUIRE(del);
    REQUIRE(del->status == 200);
    require_error(post(port, "/v1/completions", completion("fresh", {9, 8, 7}, 5).dump()), 404,
                  "'fresh' does not exist");
    std::filesystem::remove_all(dir);
  }

  // Whatever happened above, the server still answers.
  const Reply h = get(port, "/health");
  REQUIRE(h.status == 200);
  REQUIRE(h.body["status"] == "ok");
  server.stop();
}

TEST_CASE("load_test_serve: a small bounded load passes with every reply checked and nothing left running",
          "[serve][examples]") {
  REQUIRE_PROGRAM(load_test, "load_test_serve");
  const testing::RunResult r =
      testing::run(load_test, "--config tiny --requests 80 --clients 8 --adapters 3 --max-tokens 8 --max-prompt 8");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("passed: 0 errors, nothing left running"));
  CHECK_THAT(r.out, Catch::Contains("active 0, queued 0"));
  CHECK(testing::run(load_test, "--cancel-share 0.5 --stream-share 0.2").exit_code != 0);
}

TEST_CASE("serve program: bad flags are refused before anything is served", "[serve][examples]") {
  REQUIRE_PROGRAM(serve, "serve");
  testing::RunResult r = testing::run(serve, "--config tiny --adapter nothing");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("expected NAME=DIR"));
  r = testing::run(serve, "--config tiny --adapter a=/nonexistent/adapter");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("no such folder '/nonexistent/adapter'"));
  r = testing::run(serve, "--config tiny --adapter base=/tmp");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("base model's name"));
  r = testing::run(serve, "--port 70000");
  CHECK(r.exit_code != 0);
  r = testing::run(serve, "--config tiny --base-dtype q5_k");
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("--base-dtype") && Catch::Contains("q5_k"));
}

TEST_CASE("serve: a client that hangs up mid-stream has its request cancelled, and the server goes on",
          "[serve][http]") {
  // A model with room for 4000 tokens and wide enough (about 12M multiply-adds a token) that generating them
  // takes seconds: the stream is still running when the client leaves, even on a loaded machine. (The tiny
  // preset generated 4000 tokens in a fraction of a second and sometimes finished before the server saw
  // the hang-up.)
  nlohmann::json config = models::read_config_arg("tiny").json;
  config["n_positions"] = 4096;
  config["n_ctx"] = 4096;
  config["n_embd"] = 512;
  config["n_head"] = 8;
  config["n_layer"] = 4;
  auto model = models::create_model({config, "a 512-wide model with 4096 positions"}, 4);
  const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();
  serve::AdapterSet set(*model, 1);
  serve::DecodeEngine engine(*model, set, {.max_sequences = 2, .max_queue = 2}, &tokenizer);
  serve::ServerOptions options;
  options.port = 0;
  serve::HttpServer server(engine, tokenizer, options);
  const int port = server.start();

  {
    httplib::Client leaving("127.0.0.1", port);
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = completion("base", {4, 5}, 4000, true).dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
    (void)leaving.send(req);
    REQUIRE(chunks == 2);
    // Hang up. A client that only stops reading keeps its socket open: the server's writes then block in a
    // full socket buffer while the engine finishes all 4000 tokens, and nothing is cancelled.
    leaving.stop();
  }
  // Wait for the cancellation itself, not only for "active" to read 0: the engine counts active sequences at
  // the end of a step, so during the first step (which may already have streamed both chunks) it still reads
  // 0. A request that finished all 4000 tokens instead would leave "cancelled" at 0 and fail below.
  json health;
  for (int i = 0; i < 200; ++i) {
    health = get(port, "/health").body;
    if (health["active"] == 0 && health["cancelled"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(health["active"] == 0);
  REQUIRE(health["cancelled"] == 1);
  // And the server goes on serving.
  const Reply r = post(port, "/v1/completions", completion("base", {1, 2}, 3).dump());
  REQUIRE(r.status == 200);
  REQUIRE(r.body["usage"]["completion_tokens"] == 3);
  server.stop();
}
