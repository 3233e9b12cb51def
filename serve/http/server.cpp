// HttpServer: routes, the decoding thread, and streaming a request's events to its client.
#include "serve/http/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "models/stop_tokens.h"
#include "nn/lora/adapter.h"

namespace lora::serve {
using json = nlohmann::json;

namespace {

// A request's events, handed from the engine's thread to the HTTP thread that answers it.
struct EventQueue {
  std::mutex m;
  std::condition_variable cv;
  std::deque<Event> events;

  void push(const Event& e) {
    {
      std::lock_guard<std::mutex> lock(m);
      events.push_back(e);
    }
    cv.notify_all();
  }
  // Waits up to `timeout` for events and takes them all.
  std::deque<Event> take(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(m);
    cv.wait_for(lock, timeout, [&] { return !events.empty(); });
    std::deque<Event> out;
    out.swap(events);
    return out;
  }
};

// Text from a model may end inside a UTF-8 character: JSON gets U+FFFD for such bytes.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message) {
  res.status = status;
  res.set_content(dump(error_body(type, message)), "application/json");
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A chat template and its end-of-turn token (which ends a reply besides the engine's end-of-sequence tokens).
struct ChatFormat {
  std::shared_ptr<const chat::ChatTemplate> chat_template;
  std::optional<int32_t> end_of_turn;
};

// What a route answers with: OpenAI's completion objects, or its chat completion objects.
enum class Shape { Completion, Chat };

}  // namespace

struct HttpServer::Impl {
  DecodeEngine& engine;
  const tokenizer::Tokenizer& tokenizer;
  ServerOptions options;
  httplib::Server http;
  std::thread http_thread, decode_thread;
  std::atomic<bool> running{false};
  std::mutex wake_m;
  std::condition_variable wake;         // a request arrived: the decoding thread stops waiting
  std::optional<ChatFormat> base_chat;  // options.chat_template
  std::mutex chat_m;                    // guards adapter_chat (renders run in parallel: a template is immutable)
  std::map<std::string, ChatFormat> adapter_chat;

  Impl(DecodeEngine& e, const tokenizer::Tokenizer& t, ServerOptions o)
      : engine(e), tokenizer(t), options(std::move(o)) {
    if (options.chat_template)
      base_chat = ChatFormat{options.chat_template, models::end_of_turn_token(*options.chat_template, tokenizer)};
  }

  void decode_loop() {
    while (running) {
      bool busy = false;
      try {
        busy = engine.step();
      } catch (const std::exception& e) {
        fmt::print(stderr, "serve: decode step failed: {}\n", e.what());
      }
      if (!busy) {
        std::unique_lock<std::mutex> lock(wake_m);
        wake.wait_for(lock, std::chrono::milliseconds(20));
      }
    }
  }

  json models_json() {
    json data = json::array();
    data.push_back({{"id", options.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "lora.cpp"}});
    for (const std::string& name : engine.adapter_names()) {
      data.push_back({{"id", name},
                      {"object", "model"},
                      {"created", 0},
                      {"owned_by", "lora.cpp"},
                      {"parent", options.model_name}});
    }
    return {{"object", "list"}, {"data", data}};
  }

  // The adapter a request's "model" names ("" for the base model); 404 when none is loaded by that name.
  std::string adapter_for(const std::string& model) {
    if (model == options.model_name) return "";
    const std::vector<std::string> names = engine.adapter_names();
    if (std::find(names.begin(), names.end(), model) == names.end()) {
      std::string known = options.model_name;
      for (const std::string& n : names) known += ", " + n;
      throw ApiError(404, "not_found_error", fmt::format("the model '{}' does not exist (models: {})", model, known));
    }
    return model;
  }

  // Refuses a prompt that encodes to nothing, or that leaves no room for max_tokens in a slot.
  void check_prompt(const std::vector<int32_t>& ids, int64_t max_tokens) {
    if (ids.empty()) throw ApiError(400, "invalid_request_error", "the prompt encodes to no tokens");
    const int64_t P = static_cast<int64_t>(ids.size()), C = engine.capacity();
    if (P + max_tokens > C) {
      throw ApiError(400, "invalid_request_error",
                     fmt::format("this model's context is {} tokens, but the prompt has {} and max_tokens asks for {} "
                                 "more",
                                 C, P, max_tokens));
    }
  }

  std::vector<int32_t> encode(const std::string& text, const tokenizer::EncodeOptions& o, const char* what) {
    try {
      return tokenizer.encode(text, o);
    } catch (const Error& e) {
      throw ApiError(400, "invalid_request_error", fmt::format("the {} cannot be tokenized: {}", what, e.what()));
    }
  }

  // The prompt's token ids, checked against the context.
  std::vector<int32_t> prompt_ids(const CompletionRequest& r) {
    std::vector<int32_t> ids;
    if (const auto* text = std::get_if<std::string>(&r.prompt)) {
      ids = encode(*text, {.add_special_tokens = true, .parse_special_tokens = false}, "prompt");
    } else {
      ids = std::get<std::vector<int32_t>>(r.prompt);
    }
    check_prompt(ids, r.options.max_tokens);
    return ids;
  }

  // The chat template of a request for `adapter`: the server's, else the adapter's own.
  std::optional<ChatFormat> chat_format(const std::string& adapter) {
    if (base_chat) return base_chat;
    std::lock_guard<std::mutex> lock(chat_m);
    const auto it = adapter_chat.find(adapter);
    if (it == adapter_chat.end()) return std::nullopt;
    return it->second;
  }

  // A chunk of a stream: completions' text, or chat's delta (the role in the first).
  json chunk(Shape shape, int64_t id, const std::string& model, int64_t created, const json& delta,
             const json& finish) {
    const bool chat = shape == Shape::Chat;
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
    choice[chat ? "delta" : "text"] = delta;
    return {{"id", fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", id)},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", json::array({choice})}};
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    const CompletionRequest r = parse_completion_request(req.body, options.limits);
    const std::string adapter = adapter_for(r.model);
    const std::vector<int32_t> ids = prompt_ids(r);
    answer(res, Shape::Completion, r.model, adapter, ids, r.options, r.stream);
  }

  void chat_completions(const httplib::Request& req, httplib::Response& res) {
    ChatRequest r = parse_chat_request(req.body, options.limits);
    const std::string adapter = adapter_for(r.model);
    const std::optional<ChatFormat> format = chat_format(adapter);
    if (!format) {
      throw ApiError(
          400, "invalid_request_error",
          fmt::format("the model '{}' has no chat template: start serve with --chat-template FILE (the model "
                      "folder has no chat_template.jinja or tokenizer_config.json with chat_template)",
                      r.model));
    }
    std::string prompt;
    try {
      prompt = format->chat_template->render(r.messages, /*add_generation_prompt=*/true);
    } catch (const std::exception& e) {
      throw ApiError(400, "invalid_request_error", e.what());  // the template's own message (raise_exception)
    }
    // Templates write their own BOS and markers: the special tokens in the text are the template's.
    const std::vector<int32_t> ids =
        encode(prompt, {.add_special_tokens = false, .parse_special_tokens = true}, "rendered conversation");
    const int64_t left = engine.capacity() - static_cast<int64_t>(ids.size());
    r.options.max_tokens =
        r.max_tokens ? *r.max_tokens : std::max<int64_t>(1, std::min(options.limits.max_tokens, left));
    check_prompt(ids, r.options.max_tokens);
    if (format->end_of_turn) r.options.stop_tokens.push_back(*format->end_of_turn);
    answer(res, Shape::Chat, r.model, adapter, ids, r.options, r.stream);
  }

  // Queues the request, then answers with the whole completion, or streams it as server-sent events.
  void answer(httplib::Response& res, Shape shape, const std::string& model, const std::string& adapter,
              const std::vector<int32_t>& ids, const RequestOptions& request_options, bool stream) {
    auto events = std::make_shared<EventQueue>();
    Request er{ids, adapter, request_options, [events](const Event& e) { events->push(e); }};
    int64_t id = 0;
    try {
      id = engine.submit(std::move(er));
    } catch (const QueueFull& e) {
      throw ApiError(429, "rate_limit_error", std::string("the server is busy: ") + e.what() + "; retry later");
    } catch (const Error& e) {
      throw ApiError(400, "invalid_request_error", e.what());
    }
    wake.notify_all();
    const int64_t created = unix_time(), prompt_tokens = static_cast<int64_t>(ids.size());
    const bool chat = shape == Shape::Chat;

    if (!stream) {
      std::string text;
      int64_t completion_tokens = 0;
      FinishReason finish = FinishReason::None;
      while (finish == FinishReason::None) {
        if (!running) {
          engine.cancel(id);
          throw ApiError(503, "server_error", "the server is stopping");
        }
        for (const Event& e : events->take(std::chrono::milliseconds(100))) {
          text += e.text;
          completion_tokens += e.token >= 0 ? 1 : 0;
          if (e.finish != FinishReason::None) finish = e.finish;
        }
      }
      if (finish == FinishReason::Error) {
        throw ApiError(500, "server_error", "decoding failed (the server's log says why)");
      }
      if (finish == FinishReason::Cancelled) {
        throw ApiError(409, "conflict_error",
                       fmt::format("the request was cancelled: its adapter '{}' was unloaded", adapter));
      }
      json body = chunk(shape, id, model, created, text, finish_reason_name(finish));
      if (chat) {
        body["object"] = "chat.completion";
        json& choice = body["choices"][0];
        choice.erase("delta");
        choice["message"] = {{"role", "assistant"}, {"content", text}};
      }
      body["usage"] = {{"prompt_tokens", prompt_tokens},
                       {"completion_tokens", completion_tokens},
                       {"total_tokens", prompt_tokens + completion_tokens}};
      res.set_content(dump(body), "application/json");
      return;
    }

    // Server-sent events: a chunk per piece of text, the last with its finish reason, then [DONE]. A chat
    // stream opens with the role and closes with an empty delta that carries the finish reason. A client
    // that goes away makes a write fail: the request is cancelled and its slot freed.
    auto done = std::make_shared<bool>(false);
    auto opened = std::make_shared<bool>(!chat);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, events, done, opened, id, model, created, shape, chat](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& delta, const json& finish) {
            const std::string data = "data: " + dump(chunk(shape, id, model, created, delta, finish)) + "\n\n";
            return sink.write(data.data(), data.size());
          };
          if (!*opened) {
            if (!send({{"role", "assistant"}, {"content", ""}}, nullptr)) return false;
            *opened = true;
          }
          for (const Event& e : events->take(std::chrono::milliseconds(100))) {
            const bool last = e.finish != FinishReason::None;
            if (e.text.empty() && !last) continue;
            const json finish = last ? json(finish_reason_name(e.finish)) : json(nullptr);
            if (chat) {
              if (!e.text.empty() && !send({{"content", e.text}}, nullptr)) return false;
              if (last && !send(json::object(), finish)) return false;
            } else if (!send(e.text, finish)) {
              return false;
            }
            if (last) {
              static const std::string kDone = "data: [DONE]\n\n";
              if (!sink.write(kDone.data(), kDone.size())) return false;
              *done = true;
              sink.done();
              return true;
            }
          }
          return sink.is_writable();
        },
        [this, done, id](bool) {
          if (!*done) engine.cancel(id);
          wake.notify_all();
        });
  }

  void load_adapter(const httplib::Request& req, httplib::Response& res) {
    const AdapterRequest a = parse_adapter_request(req.body);
    if (a.name == options.model_name)
      throw ApiError(409, "conflict_error", fmt::format("'{}' is the base model's name", a.name));
    nn::AdapterState state;
    std::shared_ptr<const chat::ChatTemplate> chat;  // the folder's own chat template, when it has one
    try {
      state = nn::read_adapter(a.path);
      if (auto t = chat::ChatTemplate::from_model_folder(a.path))
        chat = std::make_shared<const chat::ChatTemplate>(std::move(*t));
    } catch (const Error& e) {
      throw ApiError(400, "invalid_request_error", e.what());
    }
    const std::vector<std::string> names = engine.adapter_names();
    if (std::find(names.begin(), names.end(), a.name) != names.end()) {
      throw ApiError(409, "conflict_error", fmt::format("an adapter named '{}' is already loaded", a.name));
    }
    try {
      engine.load_adapter(a.name, state);
    } catch (const Error& e) {
      const std::string what = e.what();
      const bool full = what.find("slots are taken") != std::string::npos;
      throw ApiError(full ? 503 : 400, full ? "server_error" : "invalid_request_error", what);
    }
    if (chat) set_chat_template(a.name, std::move(chat));
    res.status = 201;
    res.set_content(dump({{"id", a.name}, {"object", "model"}, {"owned_by", "lora.cpp"}}), "application/json");
  }

  void set_chat_template(const std::string& adapter, std::shared_ptr<const chat::ChatTemplate> t) {
    ChatFormat format{t, t ? models::end_of_turn_token(*t, tokenizer) : std::nullopt};
    std::lock_guard<std::mutex> lock(chat_m);
    if (t)
      adapter_chat[adapter] = std::move(format);
    else
      adapter_chat.erase(adapter);
  }

  void unload_adapter(const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const std::vector<std::string> names = engine.adapter_names();
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      throw ApiError(404, "not_found_error", fmt::format("no adapter named '{}' is loaded", name));
    }
    engine.unload_adapter(name);
    set_chat_template(name, nullptr);
    res.set_content(dump({{"id", name}, {"object", "model"}, {"deleted", true}}), "application/json");
  }

  // Runs a route: ApiError and every other exception become JSON errors; nothing escapes to httplib.
  template <typename F>
  httplib::Server::Handler route(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*f)(req, res);
      } catch (const ApiError& e) {
        send_error(res, e.status, e.type, e.what());
      } catch (const std::exception& e) {
        send_error(res, 500, "server_error", e.what());
      }
    };
  }

  void routes() {
    http.Post("/v1/completions", route(&Impl::completions));
    http.Post("/v1/chat/completions", route(&Impl::chat_completions));
    http.Post("/v1/adapters", route(&Impl::load_adapter));
    http.Delete(R"(/v1/adapters/([^/]+))", route(&Impl::unload_adapter));
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(models_json()), "application/json");
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const EngineOptions& o = engine.options();
      res.set_content(dump({{"status", "ok"},
                            {"active", engine.active()},
                            {"queued", engine.queued()},
                            {"cancelled", engine.cancelled_total()},
                            {"max_sequences", o.max_sequences},
                            {"max_queue", o.max_queue},
                            {"prompt_pass_tokens", o.prompt_pass_tokens},
                            {"adapters", engine.adapter_names()}}),
                      "application/json");
    });
    // Errors httplib answers itself (413 for a body over the limit, 404 for an unknown path) get a JSON body.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string type = res.status == 404 ? "not_found_error" : "invalid_request_error";
      const std::string message = res.status == 413   ? "the request body is over the size limit"
                                  : res.status == 404 ? fmt::format("no route for {} {}", req.method, req.path)
                                                      : fmt::format("HTTP {}", res.status);
      res.set_content(dump(error_body(type, message)), "application/json");
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_error(res, 500, "server_error", "internal error");
    });
  }
};

HttpServer::HttpServer(DecodeEngine& engine, const tokenizer::Tokenizer& tokenizer, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(options))) {
  impl_->routes();
}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::set_chat_template(const std::string& adapter,
                                   std::shared_ptr<const chat::ChatTemplate> chat_template) {
  impl_->set_chat_template(adapter, std::move(chat_template));
}

int HttpServer::start() {
  // Writing to a client that has gone away raises SIGPIPE (Debian's httplib sends without MSG_NOSIGNAL):
  // the write must fail instead, and the request be cancelled.
  std::signal(SIGPIPE, SIG_IGN);
  Impl& s = *impl_;
  const EngineOptions& e = s.engine.options();
  const int threads =
      s.options.http_threads > 0 ? s.options.http_threads : static_cast<int>(e.max_sequences + e.max_queue + 4);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.http.set_payload_max_length(s.options.max_body_bytes);
  // httplib listens with a backlog of 5: a burst of clients overflows it while the accepting thread waits
  // for a core, and the kernel then resets their connections. Keep the listening socket (with httplib's
  // SO_REUSEADDR) and listen again on it with a longer backlog, so a burst waits for its 429 or its turn.
  int listen_fd = -1;
  s.http.set_socket_options([&listen_fd](socket_t fd) {
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = fd;
  });
  const int port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host)
                                       : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  LORA_CHECK(port > 0, "serve: cannot listen on {}:{}", s.options.host, s.options.port);
  LORA_CHECK(listen_fd >= 0 && ::listen(listen_fd, SOMAXCONN) == 0,
             "serve: cannot listen on {}:{} with a longer backlog", s.options.host, port);
  s.running = true;
  s.decode_thread = std::thread([&s] { s.decode_loop(); });
  s.http_thread = std::thread([&s] { s.http.listen_after_bind(); });
  return port;
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (!s.running.exchange(false)) return;
  s.http.stop();
  s.wake.notify_all();
  if (s.http_thread.joinable()) s.http_thread.join();
  if (s.decode_thread.joinable()) s.decode_thread.join();
}

}  // namespace lora::serve
