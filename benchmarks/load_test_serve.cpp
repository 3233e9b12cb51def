// load_test_serve: the HTTP server under a bounded load on loopback. The server runs in this process on a
// free port (the same HttpServer and DecodeEngine as the `serve` program), with --adapters random LoRA
// adapters resident; --clients threads send --requests completions between them: each request names one of
// the adapters or the base, some are streamed, and some of the streamed ones hang up after their first
// tokens (a client going away mid-stream). Every reply is checked (status, token count, finish reason, the
// stream's [DONE]); the run ends with /health showing nothing active or queued.
//
// It runs in two equal halves and reads the process's resident memory after each: a server that leaks
// grows from the first half to the second, one in a steady state does not. Reported: errors, requests/s,
// generated tokens/s, latency percentiles (whole request, and time to the first streamed token), RSS.
//
//   load_test_serve                                      GPT-2 small shape, random weights, 2,000 requests
//   load_test_serve --config tiny --requests 200         a quick run
//
// Exit status: 0 when every request got a correct reply and nothing was left running, 1 otherwise.
#include <fmt/format.h>
#include <httplib.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/json.h"
#include "core/random.h"
#include "core/stopwatch.h"
#include "models/registry.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "serve/adapter_set.h"
#include "serve/decode_engine.h"
#include "serve/http/server.h"
#include "tools/bench_support.h"

using namespace lora;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string config = "gpt2";
  int64_t requests = 2000, clients = 32, adapters = 16, rank = 8;
  int64_t max_sequences = 16, min_tokens = 4, max_tokens = 24, min_prompt = 4, max_prompt = 32;
  double stream_share = 0.3, cancel_share = 0.1;
  uint64_t seed = 1;
};

// One request, decided before the run from the seed, so two runs send the same load.
struct Plan {
  std::string model;  // "base" or an adapter's name
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
  double temperature = 0;
  bool stream = false, hang_up = false;  // hang_up: a streamed request whose client leaves after 2 chunks
};

struct Outcome {
  bool ok = false;
  std::string error;  // what was wrong, when !ok
  double seconds = 0, first_token_seconds = -1;
  int64_t tokens = 0;
};

std::vector<Plan> make_plans(const Options& o, int64_t vocab) {
  Generator gen(o.seed);
  std::vector<Plan> plans(static_cast<size_t>(o.requests));
  for (size_t i = 0; i < plans.size(); ++i) {
    Plan& p = plans[i];
    const int64_t pick = static_cast<int64_t>(gen.below(static_cast<uint64_t>(o.adapters + 1)));
    p.model = pick == o.adapters ? "base" : fmt::format("a{}", pick);
    const int64_t n =
        o.min_prompt + static_cast<int64_t>(gen.below(static_cast<uint64_t>(o.max_prompt - o.min_prompt + 1)));
    for (int64_t t = 0; t < n; ++t) p.prompt.push_back(static_cast<int32_t>(gen.below(static_cast<uint64_t>(vocab))));
    p.max_tokens =
        o.min_tokens + static_cast<int64_t>(gen.below(static_cast<uint64_t>(o.max_tokens - o.min_tokens + 1)));
    p.temperature = gen.uniform() < 0.5 ? 0.0 : 0.8;
    p.stream = gen.uniform() < o.stream_share;
    p.hang_up = p.stream && p.max_tokens > 2 && gen.uniform() < o.cancel_share / std::max(o.stream_share, 1e-9);
  }
  return plans;
}

// The data lines of a server-sent event stream: the text chunks' count, whether [DONE] came, the finish reason.
struct StreamRead {
  int64_t chunks = 0;
  bool done = false;
  std::string finish;
};
StreamRead read_events(const std::string& raw) {
  StreamRead r;
  size_t at = 0;
  while ((at = raw.find("data: ", at)) != std::string::npos) {
    const size_t end = raw.find("\n\n", at);
    if (end == std::string::npos) break;
    const std::string data = raw.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      r.done = true;
      continue;
    }
    const json chunk = parse_json(data, "a streamed chunk");
    const json& choice = chunk.at("choices").at(0);
    if (!choice.at("finish_reason").is_null()) r.finish = choice.at("finish_reason").get<std::string>();
    ++r.chunks;
  }
  return r;
}

Outcome send(int port, const Plan& p) {
  Outcome out;
  const json body = {{"model", p.model},           {"prompt", p.prompt},
                     {"max_tokens", p.max_tokens}, {"temperature", p.temperature},
                     {"stream", p.stream},         {"seed", 7}};
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120, 0);
  const auto start = Clock::now();
  auto fail = [&](const std::string& why) {
    out.error = why;
    return out;
  };
  try {
    if (!p.stream) {
      auto res = client.Post("/v1/completions", body.dump(), "application/json");
      out.seconds = seconds_since(start);
      if (!res) return fail("no reply: " + httplib::to_string(res.error()));
      if (res->status != 200) return fail(fmt::format("status {}: {}", res->status, res->body.substr(0, 200)));
      const json reply = parse_json(res->body, "a completion");
      out.tokens = reply.at("usage").at("completion_tokens").get<int64_t>();
      const std::string finish = reply.at("choices").at(0).at("finish_reason").get<std::string>();
      if (out.tokens < 1 || out.tokens > p.max_tokens)
        return fail(fmt::format("{} tokens for max_tokens {}", out.tokens, p.max_tokens));
      if (finish != "length" && finish != "stop") return fail("finish_reason " + finish);
      if (finish == "length" && out.tokens != p.max_tokens) return fail("finish_reason length before max_tokens");
      out.ok = true;
      return out;
    }
    std::string raw;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    int64_t chunks_seen = 0;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (out.first_token_seconds < 0) out.first_token_seconds = seconds_since(start);
      raw.append(data, n);
      chunks_seen = read_events(raw).chunks;
      return !(p.hang_up && chunks_seen >= 2);  // false: the client goes away mid-stream
    };
    auto res = client.send(req);
    out.seconds = seconds_since(start);
    if (p.hang_up) {  // the reply was cut by this side; what arrived until then must be well formed
      out.tokens = chunks_seen;
      if (chunks_seen < 2) return fail(fmt::format("hung up after {} chunks", chunks_seen));
      out.ok = true;
      return out;
    }
    if (!res) return fail("no reply: " + httplib::to_string(res.error()));
    if (res->status != 200) return fail(fmt::format("status {}: {}", res->status, raw.substr(0, 200)));
    const StreamRead r = read_events(raw);
    out.tokens = r.chunks;
    if (!r.done) return fail("the stream ended without [DONE]");
    if (r.finish != "length" && r.finish != "stop") return fail("finish_reason '" + r.finish + "'");
    out.ok = true;
    return out;
  } catch (const std::exception& e) {
    return fail(std::string("malformed reply: ") + e.what());
  }
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(std::min<double>(static_cast<double>(v.size() - 1), q * static_cast<double>(v.size())))];
}

struct Half {
  double seconds = 0;
  int64_t errors = 0, tokens = 0, hung_up = 0, requests = 0;
  std::vector<double> latencies, first_tokens;
  std::vector<std::string> error_samples;
  tools::ResidentMemory memory;
};

Half run_half(int port, const std::vector<Plan>& plans, size_t begin, size_t end, int64_t clients) {
  Half h;
  std::vector<Outcome> outcomes(end - begin);
  std::atomic<size_t> next{begin};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int64_t c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < end;) outcomes[i - begin] = send(port, plans[i]);
    });
  }
  for (auto& t : threads) t.join();
  h.seconds = seconds_since(start);
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    ++h.requests;
    if (!o.ok) {
      ++h.errors;
      if (h.error_samples.size() < 5) h.error_samples.push_back(fmt::format("request {}: {}", begin + i, o.error));
      continue;
    }
    h.tokens += o.tokens;
    h.latencies.push_back(o.seconds);
    if (plans[begin + i].hang_up) ++h.hung_up;
    if (o.first_token_seconds >= 0) h.first_tokens.push_back(o.first_token_seconds);
  }
  h.memory = tools::resident_memory();
  return h;
}

void print_half(const char* name, const Half& h) {
  fmt::print("| {} | {} | {} | {} | {:.1f} | {:.1f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.1f} | {:.2f} |\n", name,
             h.requests, h.errors, h.hung_up, static_cast<double>(h.requests) / h.seconds,
             static_cast<double>(h.tokens) / h.seconds, percentile(h.latencies, 0.5), percentile(h.latencies, 0.99),
             percentile(h.first_tokens, 0.5), percentile(h.first_tokens, 0.99),
             static_cast<double>(h.memory.rss) / (1 << 20), tools::load_average());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "The HTTP server under a bounded load on loopback: many clients, mixed adapters, streamed and "
      "cancelled requests; every reply checked, memory read after each half of the run"};
  Options o;
  app.add_option("--config", o.config, "A preset or config.json (random weights)")->capture_default_str();
  app.add_option("--requests", o.requests, "Requests in all (two halves)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000000));
  app.add_option("--clients", o.clients, "Concurrent clients")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--adapters", o.adapters, "Random adapters resident (requests pick one of them or the base)")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--rank", o.rank, "The adapters' rank (on q and v)")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--max-sequences", o.max_sequences, "Sequences the engine decodes at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--min-tokens", o.min_tokens, "Fewest new tokens a request asks for")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-tokens", o.max_tokens, "Most new tokens a request asks for")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--min-prompt", o.min_prompt, "Shortest prompt (tokens)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-prompt", o.max_prompt, "Longest prompt (tokens)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--stream-share", o.stream_share, "Share of requests streamed")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--cancel-share", o.cancel_share, "Share of requests whose client hangs up mid-stream (streamed ones)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o.seed, "Seed of the weights, the adapters and the requests")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    LORA_CHECK(o.min_tokens <= o.max_tokens, "--min-tokens {} is above --max-tokens {}", o.min_tokens, o.max_tokens);
    LORA_CHECK(o.min_prompt <= o.max_prompt, "--min-prompt {} is above --max-prompt {}", o.min_prompt, o.max_prompt);
    LORA_CHECK(o.cancel_share <= o.stream_share,
               "--cancel-share {} is above --stream-share {} (only streamed requests hang up)", o.cancel_share,
               o.stream_share);
    auto model = models::create_model(models::read_config_arg(o.config), o.seed);
    model->eval();
    const int64_t context = model->dims().context_length;
    LORA_CHECK(o.max_prompt + o.max_tokens <= context,
               "--max-prompt {} + --max-tokens {} exceed the model's context {}", o.max_prompt, o.max_tokens, context);
    const auto tokenizer = tokenizer::GPT2Tokenizer::load_default();
    LORA_CHECK(model->dims().vocab_size <= static_cast<int64_t>(tokenizer.vocab_size()),
               "--config '{}': its vocabulary ({}) is larger than GPT-2's tokenizer's", o.config,
               model->dims().vocab_size);
    std::vector<nn::AdapterState> states;  // made on the plain model, before the set wraps its layers
    for (int64_t a = 0; a < o.adapters; ++a) {
      states.push_back(tools::random_adapter(*model, o.rank, {"q", "v"}, o.seed + 100 + static_cast<uint64_t>(a)));
    }
    serve::AdapterSet set(*model, std::max<int64_t>(o.adapters, 1));
    for (int64_t a = 0; a < o.adapters; ++a) set.load(fmt::format("a{}", a), states[static_cast<size_t>(a)]);
    serve::DecodeEngine engine(
        *model, set,
        {.max_sequences = o.max_sequences, .max_queue = o.clients + 8, .capacity = o.max_prompt + o.max_tokens},
        &tokenizer);
    serve::ServerOptions server_options;
    server_options.port = 0;
    server_options.limits.max_tokens = o.max_tokens;
    server_options.http_threads = static_cast<int>(o.clients + 4);
    serve::HttpServer server(engine, tokenizer, server_options);
    const int port = server.start();
    const std::vector<Plan> plans = make_plans(o, model->dims().vocab_size);
    const tools::ResidentMemory before = tools::resident_memory();
    fmt::print(
        "load test: '{}' with {} adapters of rank {} on q, v; {} requests from {} clients ({:.0f}% streamed, "
        "{:.0f}% hang up mid-stream), {}-{} new tokens, prompts of {}-{} tokens; {} sequences at once; port {}\n",
        o.config, o.adapters, o.rank, o.requests, o.clients, 100 * o.stream_share, 100 * o.cancel_share, o.min_tokens,
        o.max_tokens, o.min_prompt, o.max_prompt, o.max_sequences, port);
    fmt::print("RSS before the first request: {:.1f} MiB, load average {:.2f}\n\n",
               static_cast<double>(before.rss) / (1 << 20), tools::load_average());

    const size_t mid = plans.size() / 2;
    fmt::print(
        "| half | requests | errors | hung up | requests/s | tokens/s | p50 s | p99 s | first token p50 s | "
        "first token p99 s | RSS after (MiB) | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const Half first = run_half(port, plans, 0, mid, o.clients);
    print_half("1", first);
    const Half second = run_half(port, plans, mid, plans.size(), o.clients);
    print_half("2", second);

    // The server's own view once the clients are gone: hung-up requests are noticed at their next write.
    json health;
    for (int attempt = 0; attempt < 100; ++attempt) {
      httplib::Client client("127.0.0.1", port);
      auto res = client.Get("/health");
      LORA_CHECK(res && res->status == 200, "GET /health failed after the load");
      health = parse_json(res->body, "/health");
      if (health.at("active") == 0 && health.at("queued") == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const int64_t errors = first.errors + second.errors;
    const int64_t hung_up = first.hung_up + second.hung_up;
    fmt::print("\n/health after the load: active {}, queued {}, cancelled {} (clients hung up on {})\n",
               health.at("active").dump(), health.at("queued").dump(), health.at("cancelled").dump(), hung_up);
    const double growth = static_cast<double>(second.memory.rss - first.memory.rss) / (1 << 20);
    fmt::print(
        "RSS: {:.1f} MiB before, {:.1f} after the first half, {:.1f} after the second ({:+.1f} MiB over the "
        "second half), peak {:.1f} MiB; the allocator's cache {:.1f} MiB\n",
        static_cast<double>(before.rss) / (1 << 20), static_cast<double>(first.memory.rss) / (1 << 20),
        static_cast<double>(second.memory.rss) / (1 << 20), growth, static_cast<double>(second.memory.peak) / (1 << 20),
        static_cast<double>(memory::cpu_allocator_stats().cached_bytes) / (1 << 20));
    for (const Half* h : {&first, &second}) {
      for (const std::string& e : h->error_samples) fmt::print(stderr, "error: {}\n", e);
    }
    const bool drained = health.at("active") == 0 && health.at("queued") == 0;
    fmt::print("{}: {} errors, {}\n", errors == 0 && drained ? "passed" : "FAILED", errors,
               drained ? "nothing left running" : "requests still running after the clients left");
    return errors == 0 && drained ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
