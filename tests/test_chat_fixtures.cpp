// Real chat templates (Qwen2.5, Llama 3.1, Mistral Nemo, Gemma 2, Phi-3.5, ChatML) against transformers'
// apply_chat_template: the render byte for byte, the ids, and the labels of the masking rule
// (tests/fixtures/chat/make_fixtures.py); and encode_with_offsets against encode on every tokenizer fixture.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "models/chat/chat_template.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "train/data/conversation_example.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using lora::chat::ChatTemplate;
using lora::chat::Conversation;

namespace {

const fs::path kChat = fs::path(LORA_TEST_DATA_DIR) / "chat";

nlohmann::json read_json(const fs::path& path) {
  return nlohmann::json::parse(lora::read_file(path.string(), "fixture"));
}

Conversation conversation(const nlohmann::json& messages) {
  Conversation out;
  for (const auto& m : messages) out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

void check_family(const std::string& family) {
  const nlohmann::json expected = read_json(kChat / "expected.json").at("families").at(family);
  const fs::path template_path = kChat / expected.at("template").get<std::string>();
  const ChatTemplate chat_template(lora::read_file(template_path.string(), "template"),
                                   expected.at("bos_token").get<std::string>(),
                                   expected.at("eos_token").get<std::string>(), template_path.string());
  const auto tokenizer = lora::tokenizer::HFTokenizer::from_file(kChat / expected.at("tokenizer").get<std::string>());
  for (const auto& c : expected.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    INFO(family << " / " << name);
    const Conversation messages = conversation(c.at("messages"));
    if (c.contains("raises")) {
      CHECK_THROWS_WITH(chat_template.render(messages, false), Contains(c.at("raises").get<std::string>()));
      continue;
    }
    CHECK(chat_template.render(messages, false) == c.at("text").get<std::string>());
    const Conversation prompt(messages.begin(), messages.end() - 1);
    CHECK(chat_template.render(prompt, true) == c.at("prompt").get<std::string>());
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const auto encoding = tokenizer.encode_with_offsets(c.at("text").get<std::string>(), {});
    CHECK(encoding.ids == ids);
    CHECK(tokenizer.encode(c.at("text").get<std::string>(), {}) == ids);
    if (c.contains("error")) {
      CHECK_THROWS_WITH(lora::train::conversation_example(chat_template, tokenizer, messages, false),
                        Contains(c.at("error").get<std::string>()));
      continue;
    }
    const auto spans = c.at("spans").get<std::vector<std::pair<size_t, size_t>>>();
    CHECK(lora::chat::render_for_training(chat_template, messages).trained == spans);
    const lora::train::Example example = lora::train::conversation_example(chat_template, tokenizer, messages, false);
    CHECK(example.ids == ids);
    CHECK(example.labels == c.at("labels").get<std::vector<int32_t>>());
    const lora::train::Example all = lora::train::conversation_example(chat_template, tokenizer, messages, true);
    CHECK(all.labels == ids);
  }
}

}  // namespace

TEST_CASE("chat fixtures: Qwen2.5 (ChatML with a default system prompt) as transformers renders it", "[chat]") {
  check_family("qwen2");
}
TEST_CASE("chat fixtures: Llama 3.1 as transformers renders it", "[chat]") {
  check_family("llama3");
}
TEST_CASE("chat fixtures: Mistral Nemo as transformers renders it, its system prompt refused for masking", "[chat]") {
  check_family("mistral");
}
TEST_CASE("chat fixtures: Gemma 2 as transformers renders it, its system role refused by the template", "[chat]") {
  check_family("gemma");
}
TEST_CASE("chat fixtures: Phi-3.5 as transformers renders it, its closing eos_token untrained", "[chat]") {
  check_family("phi3");
}
TEST_CASE("chat fixtures: the shipped ChatML template as transformers renders it", "[chat]") {
  check_family("chatml");
}

TEST_CASE("encode_with_offsets: encode's ids, offsets in order, on every tokenizer fixture", "[chat][tokenizer]") {
  const fs::path fixtures = fs::path(LORA_TEST_DATA_DIR) / "tokenizers";
  const auto strings = read_json(fixtures / "strings.json").get<std::vector<std::string>>();
  for (const char* name : {"gpt2", "llama2", "llama3", "mistral", "qwen2", "roberta", "spm_unk"}) {
    const auto tokenizer = lora::tokenizer::HFTokenizer::from_file(fixtures / name / "tokenizer.json");
    for (const bool add_special : {false, true}) {
      for (const std::string& text : strings) {
        INFO(name << ": " << text);
        const lora::tokenizer::EncodeOptions options{.add_special_tokens = add_special};
        const auto e = tokenizer.encode_with_offsets(text, options);
        REQUIRE(e.ids == tokenizer.encode(text, options));
        REQUIRE(e.offsets.size() == e.ids.size());
        for (size_t i = 0; i < e.offsets.size(); ++i) {
          CHECK(e.offsets[i] <= text.size());
          if (i > 0) CHECK(e.offsets[i - 1] <= e.offsets[i]);
        }
        // Byte-level without a normalizer: each token's bytes are the text between its offset and the next.
        if (tokenizer.byte_level() && !add_special) {
          std::string joined;
          for (size_t i = 0; i < e.ids.size(); ++i) {
            const size_t end = i + 1 < e.ids.size() ? e.offsets[i + 1] : text.size();
            joined += text.substr(e.offsets[i], end - e.offsets[i]);
          }
          CHECK(joined == text);
        }
      }
    }
  }
  // GPT2Tokenizer (OpenAI's files): the offsets are the running sums of the tokens' bytes.
  const auto gpt2 = lora::tokenizer::GPT2Tokenizer::load_default();
  const std::string text = "Hello <|endoftext|> wörld  \n\n x";
  const auto e = gpt2.encode_with_offsets(text, {});
  REQUIRE(e.ids == gpt2.encode(text, lora::tokenizer::EncodeOptions{}));
  for (size_t i = 0; i < e.ids.size(); ++i)
    CHECK(text.compare(e.offsets[i], gpt2.token_bytes(e.ids[i]).size(), gpt2.token_bytes(e.ids[i])) == 0);
}

TEST_CASE("chat fixtures: tojson, loop controls, namespace, filters and string methods as Jinja renders them",
          "[chat]") {
  check_family("features");
}
