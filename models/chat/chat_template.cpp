// ChatTemplate: parsing and rendering with the vendored minja engine, in the environment transformers gives
// a template (ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls;
// raise_exception and strftime_now as globals), with the render guard that bounds time, depth and size.
#include "models/chat/chat_template.h"
#include "core/json.h"

#include <minja/minja.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "core/files.h"

namespace lora::chat {

namespace {

using ordered_json = nlohmann::ordered_json;

// Thrown by the guard and by raise_exception: not a std::exception, so that minja passes it through
// unchanged (it adds its location text to every std::exception on the way up).
struct Stop {
  std::string message;
};

// Deep enough for every real template (a macro call nests about a dozen evaluations), shallow enough that a
// template that recurses without end stops long before the thread's stack does, sanitizers included.
constexpr int kMaxDepth = 400;

class Guard final : public minja::RenderGuard {
 public:
  explicit Guard(const TemplateLimits& limits)
      : limits_(limits),
        deadline_(std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                         std::chrono::duration<double>(limits.max_seconds))) {}

  void enter() override {
    if (++depth_ > kMaxDepth) throw Stop{fmt::format("the template nests deeper than {} levels", kMaxDepth)};
    // The clock is read every 256 steps: a step is a node or an expression, well under a microsecond.
    if ((++steps_ & 255) == 0 && std::chrono::steady_clock::now() > deadline_)
      throw Stop{fmt::format("the render ran longer than {} s (TemplateLimits::max_seconds)", limits_.max_seconds)};
  }
  void leave() noexcept override { --depth_; }
  void bytes(size_t n) override {
    if (n > limits_.max_output_bytes)
      throw Stop{
          fmt::format("the render grew past {} bytes (TemplateLimits::max_output_bytes)", limits_.max_output_bytes)};
  }

 private:
  TemplateLimits limits_;
  std::chrono::steady_clock::time_point deadline_;
  int depth_ = 0;
  uint64_t steps_ = 0;
};

// Installs a guard for this thread for the lifetime of the scope (renders may nest: the previous is restored).
class GuardInstall {
 public:
  explicit GuardInstall(minja::RenderGuard* guard) : previous_(minja::render_guard()) { minja::render_guard() = guard; }
  ~GuardInstall() { minja::render_guard() = previous_; }
  GuardInstall(const GuardInstall&) = delete;
  GuardInstall& operator=(const GuardInstall&) = delete;

 private:
  minja::RenderGuard* previous_;
};

// A special-token value of tokenizer_config.json: a string, an AddedToken object {"content": ...} or null.
std::string token_string(const ordered_json& config, const char* key, const std::string& origin) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  LORA_FAIL("{}: field '{}': expected a string, an object with a string \"content\", or null", origin, key);
}

ordered_json parse_json(const std::string& text, const std::string& origin) {
  return parse_json_ordered(text, origin);
}

// strftime_now(format): the local time, as transformers' datetime.now().strftime(format).
minja::Value strftime_now() {
  return minja::Value::callable([](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
    args.expectArgs("strftime_now", {1, 1}, {0, 0});
    const std::string format = args.args[0].get<std::string>();
    LORA_CHECK(format.size() <= 256, "strftime_now: a format longer than 256 bytes");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    std::string out(1024, '\0');
    const size_t n = std::strftime(out.data(), out.size(), format.c_str(), &local);
    out.resize(n);
    return minja::Value(out);
  });
}

// minja's builtins (filters, tests, range, namespace...), made once per thread rather than once per render (a
// render's own context, which is its child, holds what the render sets). Making them took most of a short
// conversation's render time.
const std::shared_ptr<minja::Context>& builtins_of_this_thread() {
  thread_local const std::shared_ptr<minja::Context> builtins = minja::Context::builtins();
  return builtins;
}

// tojson as transformers defines it: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False), Python's output byte for byte (", " and ": " by default; "," and ": " with an indent).
struct JsonStyle {
  bool ensure_ascii = false;
  int indent = -1;  // -1: None
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};

void write_json(const ordered_json& v, const JsonStyle& style, int level, std::string& out) {
  const auto newline = [&](int depth) {
    if (style.indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(depth) * static_cast<size_t>(style.indent), ' ');
  };
  if (v.is_object() || v.is_array()) {
    const bool object = v.is_object();
    if (v.empty()) {
      out += object ? "{}" : "[]";
      return;
    }
    minja::guard_bytes(out.size());
    out += object ? '{' : '[';
    std::vector<ordered_json::const_iterator> items;
    for (auto it = v.begin(); it != v.end(); ++it) items.push_back(it);
    if (object && style.sort_keys)
      std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.key() < b.key(); });
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += style.item_sep;
      newline(level + 1);
      if (object) {
        out += ordered_json(items[i].key()).dump(-1, ' ', style.ensure_ascii);
        out += style.key_sep;
      }
      write_json(*items[i], style, level + 1, out);
    }
    newline(level);
    out += object ? '}' : ']';
    return;
  }
  out += v.dump(-1, ' ', style.ensure_ascii);
}

minja::Value tojson() {
  return minja::Value::callable([](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
    static const char* const kNames[] = {"x", "ensure_ascii", "indent", "separators", "sort_keys"};
    LORA_CHECK(!args.args.empty() && args.args.size() <= 5, "tojson: expected 1 to 5 positional arguments, got {}",
               args.args.size());
    std::vector<const minja::Value*> given(5, nullptr);
    for (size_t i = 0; i < args.args.size(); ++i) given[i] = &args.args[i];
    for (const auto& [name, value] : args.kwargs) {
      const auto* it = std::find(std::begin(kNames), std::end(kNames), name);
      LORA_CHECK(it != std::end(kNames) && it != std::begin(kNames), "tojson: unexpected argument '{}'", name);
      given[static_cast<size_t>(it - std::begin(kNames))] = &value;
    }
    JsonStyle style;
    if (given[1]) style.ensure_ascii = given[1]->to_bool();
    if (given[2] && !given[2]->is_null()) {
      LORA_CHECK(given[2]->is_number_integer(), "tojson: indent must be an integer");
      style.indent = static_cast<int>(std::clamp<int64_t>(given[2]->get<int64_t>(), 0, 64));
      style.item_sep = ",";
    }
    if (given[3] && !given[3]->is_null()) {
      LORA_CHECK(given[3]->is_array() && given[3]->size() == 2, "tojson: separators must be a pair of strings");
      style.item_sep = given[3]->at(0).get<std::string>();
      style.key_sep = given[3]->at(1).get<std::string>();
    }
    if (given[4]) style.sort_keys = given[4]->to_bool();
    std::string out;
    write_json(given[0]->get<ordered_json>(), style, 0, out);
    return minja::Value(out);
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
struct ChatTemplate::Impl {
  std::string source;
  std::string bos_token;
  std::string eos_token;
  std::string origin;
  TemplateLimits limits;
  std::shared_ptr<minja::TemplateNode> root;  // immutable once parsed: renders share it
};

ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string origin,
                           TemplateLimits limits)
    : impl_(std::make_unique<Impl>()) {
  impl_->source = std::move(source);
  impl_->bos_token = std::move(bos_token);
  impl_->eos_token = std::move(eos_token);
  impl_->origin = std::move(origin);
  impl_->limits = limits;
  LORA_CHECK(limits.max_seconds > 0 && limits.max_output_bytes > 0,
             "{}: TemplateLimits must be positive (max_seconds {}, max_output_bytes {})", impl_->origin,
             limits.max_seconds, limits.max_output_bytes);
  try {
    // Parsing is bounded by the source's size; the guard covers what it evaluates (constant folding).
    Guard guard(impl_->limits);
    GuardInstall install(&guard);
    impl_->root = minja::Parser::parse(
        impl_->source, minja::Options{.trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false});
  } catch (const Stop& stop) {
    LORA_FAIL("chat template of {}: {}", impl_->origin, stop.message);
  } catch (const std::exception& e) {
    LORA_FAIL("chat template of {} does not parse: {}", impl_->origin, e.what());
  }
  LORA_CHECK(impl_->root != nullptr, "chat template of {} does not parse", impl_->origin);
}

std::string ChatTemplate::render(const Conversation& messages, bool add_generation_prompt) const {
  ordered_json list = ordered_json::array();
  for (const Message& m : messages) list.push_back(ordered_json{{"role", m.role}, {"content", m.content}});
  Guard guard(impl_->limits);
  GuardInstall install(&guard);
  try {
    auto context = minja::Context::make(minja::Value(ordered_json{
                                            {"messages", std::move(list)},
                                            {"add_generation_prompt", add_generation_prompt},
                                            {"tools", nullptr},
                                            {"documents", nullptr},
                                            {"bos_token", impl_->bos_token},
                                            {"eos_token", impl_->eos_token},
                                        }),
                                        builtins_of_this_thread());
    context->set("raise_exception", minja::Value::callable([](const std::shared_ptr<minja::Context>&,
                                                              minja::ArgumentsValue& args) -> minja::Value {
                   args.expectArgs("raise_exception", {1, 1}, {0, 0});
                   const minja::Value& message = args.args[0];
                   throw Stop{message.is_string() ? message.get<std::string>() : message.dump()};
                 }));
    context->set("strftime_now", strftime_now());
    context->set("tojson", tojson());
    std::string out = impl_->root->render(context);
    guard.bytes(out.size());
    return out;
  } catch (const Stop& stop) {
    LORA_FAIL("chat template of {}: {}", impl_->origin, stop.message);
  } catch (const lora::Error& e) {
    LORA_FAIL("chat template of {}: {}", impl_->origin, e.what());
  } catch (const std::exception& e) {
    LORA_FAIL("chat template of {} failed to render: {}", impl_->origin, e.what());
  }
}

// ---------------------------------------------------------------------------------------------------
std::optional<ChatTemplate> ChatTemplate::from_model_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string jinja = (fs::path(folder) / "chat_template.jinja").string();
  const std::string config_path = (fs::path(folder) / "tokenizer_config.json").string();
  ordered_json config = ordered_json::object();
  if (is_regular_file(config_path)) {
    config = parse_json(read_file(config_path, "tokenizer_config.json", uint64_t{64} << 20), config_path);
    LORA_CHECK(config.is_object(), "{}: expected a JSON object", config_path);
  }
  const std::string bos = token_string(config, "bos_token", config_path);
  const std::string eos = token_string(config, "eos_token", config_path);
  if (is_regular_file(jinja))
    return ChatTemplate(read_file(jinja, "chat template", uint64_t{16} << 20), bos, eos, jinja);
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return ChatTemplate(it->get<std::string>(), bos, eos, config_path);
  LORA_CHECK(it->is_array(), "{}: field 'chat_template': expected a string or a list of {{name, template}}",
             config_path);
  for (const ordered_json& entry : *it) {
    LORA_CHECK(entry.is_object() && entry.contains("name") && entry["name"].is_string() && entry.contains("template") &&
                   entry["template"].is_string(),
               "{}: field 'chat_template': each entry must be {{\"name\": string, \"template\": string}}", config_path);
    if (entry["name"] == "default")
      return ChatTemplate(entry["template"].get<std::string>(), bos, eos, config_path + " (chat_template 'default')");
  }
  LORA_FAIL("{}: field 'chat_template': a list of templates without one named \"default\"", config_path);
}

ChatTemplate ChatTemplate::from_file(const std::string& path, const std::string& tokenizer_folder) {
  std::string bos, eos;
  if (!tokenizer_folder.empty()) {
    const std::string config_path = (std::filesystem::path(tokenizer_folder) / "tokenizer_config.json").string();
    if (is_regular_file(config_path)) {
      const ordered_json config =
          parse_json(read_file(config_path, "tokenizer_config.json", uint64_t{64} << 20), config_path);
      LORA_CHECK(config.is_object(), "{}: expected a JSON object", config_path);
      bos = token_string(config, "bos_token", config_path);
      eos = token_string(config, "eos_token", config_path);
    }
  }
  return ChatTemplate(read_file(path, "--chat-template", uint64_t{16} << 20), bos, eos, path);
}

const std::string& ChatTemplate::source() const {
  return impl_->source;
}
const std::string& ChatTemplate::origin() const {
  return impl_->origin;
}
const std::string& ChatTemplate::eos_token() const {
  return impl_->eos_token;
}
const std::string& ChatTemplate::bos_token() const {
  return impl_->bos_token;
}

ChatTemplate::ChatTemplate(const ChatTemplate& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(const ChatTemplate& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

}  // namespace lora::chat
