// JsonView: typed access to tokenizer.json values, with the file, path and value in every error.
#include "models/tokenizer/hf_json.h"

#include <algorithm>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"

namespace lora::tokenizer::hf {

namespace {

// Renders `v` as JSON into `out`, at most about `budget` bytes and `depth` levels deep (a hostile file
// can nest a million arrays; json::dump would recurse through all of them).
void render(const nlohmann::json& v, std::string& out, int depth, size_t budget) {
  if (out.size() > budget) return;
  if (v.is_object() || v.is_array()) {
    const bool object = v.is_object();
    if (depth == 0 && !v.empty()) {
      out += object ? "{...}" : "[...]";
      return;
    }
    out += object ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() <= budget; ++it) {
      if (!first) out += ", ";
      first = false;
      if (object) out += nlohmann::json(it.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": ";
      render(*it, out, depth - 1, budget);
    }
    out += object ? '}' : ']';
    return;
  }
  out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string JsonView::shown() const {
  constexpr size_t kMax = 120;
  std::string text;
  render(*value_, text, 3, kMax);
  if (text.size() > kMax) {
    size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // whole characters
    text = text.substr(0, cut) + "...";
  }
  return text;
}

void JsonView::fail(std::string_view message) const {
  LORA_FAIL("{}: {}: {} (got {})", *file_, path_.empty() ? "(top level)" : path_, message, shown());
}

void JsonView::unsupported(std::string_view message) const {
  LORA_FAIL("{}: {}: not supported: {} (got {})", *file_, path_.empty() ? "(top level)" : path_, message, shown());
}

JsonView JsonView::field(std::string_view key) const {
  if (!value_->is_object()) fail("expected a JSON object");
  const auto it = value_->find(key);
  const std::string path = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  LORA_CHECK(it != value_->end(), "{}: {}: missing field", *file_, path);
  return JsonView(*it, path, *file_);
}

std::optional<JsonView> JsonView::optional(std::string_view key) const {
  if (!value_->is_object()) fail("expected a JSON object");
  const auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return JsonView(*it, path_.empty() ? std::string(key) : path_ + "." + std::string(key), *file_);
}

void JsonView::only_fields(std::initializer_list<std::string_view> known) const {
  if (!value_->is_object()) fail("expected a JSON object");
  for (const auto& item : value_->items()) {
    if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
      JsonView(item.value(), path_.empty() ? item.key() : path_ + "." + item.key(), *file_)
          .unsupported("unknown field");
    }
  }
}

std::string JsonView::type() const {
  return field("type").string();
}

size_t JsonView::size() const {
  if (!value_->is_array()) fail("expected a JSON array");
  return value_->size();
}

JsonView JsonView::operator[](size_t i) const {
  if (!value_->is_array()) fail("expected a JSON array");
  return JsonView((*value_)[i], path_ + "[" + std::to_string(i) + "]", *file_);
}

std::string JsonView::string() const {
  if (!value_->is_string()) fail("expected a string");
  return value_->get<std::string>();
}

bool JsonView::boolean() const {
  if (!value_->is_boolean()) fail("expected true or false");
  return value_->get<bool>();
}

int64_t JsonView::integer(int64_t min, int64_t max) const {
  if (!value_->is_number_integer()) fail("expected an integer");
  if (value_->is_number_unsigned() && value_->get<uint64_t>() > static_cast<uint64_t>(max))
    fail(fmt::format("expected an integer in {}..{}", min, max));
  const auto v = value_->get<int64_t>();
  if (v < min || v > max) fail(fmt::format("expected an integer in {}..{}", min, max));
  return v;
}

char32_t JsonView::character() const {
  const std::string s = string();
  size_t pos = 0;
  if (s.empty() || find_invalid_utf8(s) != std::string_view::npos) fail("expected one character");
  const char32_t c = next_code_point(s, pos);
  if (pos != s.size()) fail("expected one character");
  return c;
}

}  // namespace lora::tokenizer::hf
