// Stop tokens: the end-of-sequence ids of config.json, generation_config.json and the tokenizer, and a chat
// template's end-of-turn token.
#include "models/stop_tokens.h"
#include "core/json.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/files.h"

namespace lora::models {

std::vector<int64_t> read_generation_eos(const std::string& text, const std::string& origin, int64_t vocab_size) {
  const nlohmann::json j = parse_json(text, origin);
  LORA_CHECK(j.is_object(), "{}: expected a JSON object, got {}", origin, j.type_name());
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return {};
  const nlohmann::json& v = j["eos_token_id"];
  std::vector<int64_t> ids;
  for (const nlohmann::json& id : v.is_array() ? v : nlohmann::json::array({v})) {
    LORA_CHECK(id.is_number_integer(), "{}: field 'eos_token_id' = {}: expected a token id or a list of token ids",
               origin, v.dump());
    const int64_t x = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t(INT64_MAX) ? -1 : id.get<int64_t>();
    if (x >= 0 && x < vocab_size) ids.push_back(x);
  }
  return ids;
}

std::string model_folder_of(const std::string& weights) {
  if (weights.empty()) return "";
  if (is_directory(weights)) return weights;
  const std::filesystem::path parent = std::filesystem::path(weights).parent_path();
  return parent.empty() ? "." : parent.string();
}

std::string generation_config_folder(const std::string& weights, const std::string& config_arg) {
  if (!config_arg.empty() && is_regular_file(config_arg)) return model_folder_of(config_arg);
  return model_folder_of(weights);
}

std::optional<int32_t> end_of_turn_token(const chat::ChatTemplate& chat_template,
                                         const tokenizer::Tokenizer& tokenizer) {
  // An assistant content no template changes (no spaces to trim), found again in the render.
  static const std::string kProbe = "LoraEndOfTurnProbe";
  std::string text;
  try {
    text = chat_template.render({{"user", "Hi"}, {"assistant", kProbe}}, /*add_generation_prompt=*/false);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const size_t at = text.rfind(kProbe);
  if (at == std::string::npos) return std::nullopt;
  std::string after = text.substr(at + kProbe.size());
  after.erase(0, std::min(after.size(), after.find_first_not_of(" \t\r\n")));
  if (after.empty()) return std::nullopt;
  std::vector<int32_t> ids;
  try {
    ids = tokenizer.encode(after, {.add_special_tokens = false, .parse_special_tokens = true});
  } catch (const Error&) {
    return std::nullopt;
  }
  if (ids.empty() || !tokenizer.is_special(ids[0])) return std::nullopt;
  return ids[0];
}

StopTokens stop_tokens(const CausalLM& model, const std::string& config_folder, const tokenizer::Tokenizer& tokenizer,
                       const chat::ChatTemplate* chat_template) {
  const int64_t V = model.dims().vocab_size;
  std::map<int64_t, std::vector<std::string>> found;  // id -> where it came from
  auto add = [&](int64_t id, const std::string& source) {
    if (id < 0 || id >= V) return;
    auto& sources = found[id];
    if (std::find(sources.begin(), sources.end(), source) == sources.end()) sources.push_back(source);
  };
  for (int64_t id : model.eos_token_ids()) add(id, "config.json");
  if (!config_folder.empty()) {
    const std::string path = (std::filesystem::path(config_folder) / "generation_config.json").string();
    if (is_regular_file(path)) {
      for (int64_t id : read_generation_eos(read_file(path, "generation_config.json", 1 << 20), path, V)) {
        add(id, "generation_config.json");
      }
    }
  }
  if (const auto eos = tokenizer.eos_id()) add(*eos, "tokenizer");
  if (chat_template) {
    if (const auto eot = end_of_turn_token(*chat_template, tokenizer)) add(*eot, "chat template");
  }
  StopTokens out;
  for (const auto& [id, sources] : found) {
    out.ids.push_back(id);
    std::string name;
    if (const auto token = tokenizer.id_to_token(static_cast<int32_t>(id));
        token && tokenizer.is_special(static_cast<int32_t>(id))) {
      name = " " + *token;
    }
    std::string from;
    for (const std::string& s : sources) from += (from.empty() ? "" : ", ") + s;
    out.why += fmt::format("{}{}{} ({})", out.why.empty() ? "" : ", ", id, name, from);
  }
  if (out.why.empty()) out.why = "none";
  return out;
}

}  // namespace lora::models
