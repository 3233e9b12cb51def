// ChatTemplate and render_for_training: the sandbox (hostile templates are stopped with a message that says
// why), the masking rule's refusals, and the shipped ChatML template. Real templates against transformers are
// in test_chat_fixtures.cpp.
#include <catch2/catch.hpp>

#include <ctime>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/files.h"
#include "lora_source_dir.h"
#include "models/chat/chat_template.h"

using Catch::Matchers::Contains;
using lora::chat::ChatTemplate;
using lora::chat::Conversation;
using lora::chat::TemplateLimits;

namespace {

const Conversation kChat = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}, {"assistant", "4"}};

std::string chatml_path() {
  return (std::filesystem::path(LORA_SOURCE_DIR) / "data" / "chat_templates" / "chatml.jinja").string();
}

// The message of the lora::Error that rendering `source` throws ("" when it renders).
std::string render_error(const std::string& source, TemplateLimits limits = {}) {
  try {
    ChatTemplate t(source, "<s>", "</s>", "hostile.jinja", limits);
    (void)t.render(kChat, true);
  } catch (const lora::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("chat template: the shipped ChatML template renders every turn and the generation prompt", "[chat]") {
  const ChatTemplate t = ChatTemplate::from_file(chatml_path());
  CHECK(t.render({{"user", "Hi"}}, true) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(t.render({{"user", "Hi"}, {"assistant", "Yo"}}, false) ==
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
  CHECK(t.origin() == chatml_path());
}

TEST_CASE("chat template: bos_token, eos_token, namespace, loop controls and tojson", "[chat]") {
  const ChatTemplate t(
      "{{ bos_token }}{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% continue %}"
      "{% endif %}{% if loop.index > 4 %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}[{{ m.content }}]{% endfor %}"
      "{{ ns.n }}{{ messages[1] | tojson }}{{ eos_token }}",
      "<s>", "</s>", "test");
  CHECK(t.render(kChat, false) == "<s>[Hi][Hello!][2+2?]3{\"role\": \"user\", \"content\": \"Hi\"}</s>");
  CHECK(t.bos_token() == "<s>");
  CHECK(t.eos_token() == "</s>");
}

TEST_CASE("chat template: strftime_now writes the date", "[chat]") {
  const ChatTemplate t("{{ strftime_now('%Y') }}", "", "", "test");
  const std::string year = t.render(kChat, false);
  REQUIRE(year.size() == 4);
  CHECK(year >= "2024");
}

TEST_CASE("chat template: macros, call blocks and caller() render, and a macro kept past its scope is refused",
          "[chat]") {
  // Macros and caller() hold their defining context weakly (a strong reference leaked every such context:
  // the sanitizer build's leak check covers these renders).
  const ChatTemplate t(
      "{% macro turn(m, sep='|') %}{{ m.role }}:{{ m.content }}{{ sep }}{% endmacro %}"
      "{% macro wrap() %}[{{ caller() }}]{% endmacro %}"
      "{% for m in messages %}{{ turn(m) }}{% endfor %}{% call wrap() %}{{ messages | length }}{% endcall %}",
      "<s>", "</s>", "macros.jinja");
  CHECK(t.render(kChat, false) == "system:Be brief.|user:Hi|assistant:Hello!|user:2+2?|assistant:4|[5]");
  // A macro defined inside a loop and kept in a namespace: its scope is gone when it is called.
  CHECK_THAT(render_error("{% set ns = namespace(f=none) %}{% for m in messages %}{% macro g() %}x{% endmacro %}"
                          "{% set ns.f = g %}{% endfor %}{{ ns.f() }}"),
             Contains("outside the scope"));
}

TEST_CASE("chat template: raise_exception shows the template's own message and origin", "[chat]") {
  const std::string message = render_error("{{ raise_exception('Roles must alternate user/assistant') }}");
  CHECK_THAT(message, Contains("Roles must alternate user/assistant"));
  CHECK_THAT(message, Contains("hostile.jinja"));
}

TEST_CASE("chat template: an unknown filter is named", "[chat]") {
  CHECK_THAT(render_error("{{ messages[0].content | frobnicate }}"), Contains("No filter named 'frobnicate'"));
  CHECK_THAT(render_error("{{ messages[0].content | frobnicate(2) }}"), Contains("No filter named 'frobnicate'"));
}

TEST_CASE("chat template: huge and endless loops are stopped", "[chat]") {
  CHECK_THAT(render_error("{% for i in range(10**9) %}{% endfor %}"), Contains("Range too big"));
  // Each range passes the sandbox's limit; together they would run for hours.
  const TemplateLimits quick{.max_output_bytes = size_t{1} << 20, .max_seconds = 0.2};
  CHECK_THAT(render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", quick),
             Contains("longer than"));
  CHECK_THAT(render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), Contains("nests deeper"));
}

TEST_CASE("chat template: output and string size are bounded", "[chat]") {
  const TemplateLimits small{.max_output_bytes = 1000, .max_seconds = 5.0};
  CHECK_THAT(render_error("{% for i in range(2000) %}x{% endfor %}", small), Contains("past 1000 bytes"));
  CHECK_THAT(render_error("{{ 'ab' * 100000000000 }}", small), Contains("past 1000 bytes"));
  CHECK_THAT(render_error("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
                          "{% endfor %}",
                          small),
             Contains("past 1000 bytes"));
  CHECK(render_error("{% for i in range(900) %}x{% endfor %}", small).empty());
}

// The parser's regular expressions recursed once per character they matched (libstdc++), so a long comment,
// name or run of spaces overflowed the stack; those are scanned now, and nesting and operator chains are bounded.
TEST_CASE("chat template: long comments, names and spaces parse; deep nesting and long chains are refused", "[chat]") {
  const std::string long_text(100000, 'c'), spaces(100000, ' ');
  // Comments keep their whitespace control: {#- and -#} trim, {# and #} do not.
  CHECK(ChatTemplate("a {#" + long_text + "#} b", "", "", "t").render({}, false) == "a  b");
  CHECK(ChatTemplate("a {#-" + long_text + "-#} b", "", "", "t").render({}, false) == "ab");
  CHECK(ChatTemplate("a {#- x #} b {# y -#} c", "", "", "t").render({}, false) == "a b c");
  CHECK(ChatTemplate("{##}{#-#}{#--#}x", "", "", "t").render({}, false) == "x");
  CHECK_THROWS_WITH(ChatTemplate("a {# never closed", "", "", "t").render({}, false), Contains("t"));
  const std::string name(5000, 'n');
  CHECK(ChatTemplate("{% set " + name + " = 3 %}{{ " + name + " }}", "", "", "t").render({}, false) == "3");
  CHECK(ChatTemplate("{%" + spaces + "if true" + spaces + "%}y{%" + spaces + "endif" + spaces + "%}", "", "", "t")
            .render({}, false) == "y");
  CHECK(ChatTemplate("x" + spaces + "{%- if true -%}" + spaces + "y{% endif %}", "", "", "t").render({}, false) ==
        "xy");
  CHECK(ChatTemplate("{% for a, b in [[1, 2]] %}{{ a }}{{ b }}{% endfor %}{% set ns = namespace(v=1) %}"
                     "{% set ns . v = 5 %}{{ ns.v }}{{ 1 not  in [2] }}",
                     "", "", "t")
            .render({}, false) == "125True");
  CHECK_THAT(render_error("{{ " + std::string(1000, '(') + "1" + std::string(1000, ')') + " }}"),
             Contains("nests deeper than"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  CHECK_THAT(render_error(chain + " }}"), Contains("nests deeper than"));
  CHECK(render_error("{{ 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + (1 + (1 + (1))) | string }}").empty());
}

TEST_CASE("chat template: a template that does not parse is refused at construction", "[chat]") {
  CHECK_THROWS_WITH(ChatTemplate("{% for m in messages %}", "", "", "broken.jinja"), Contains("broken.jinja"));
}

TEST_CASE("chat template: from_model_folder reads chat_template from tokenizer_config.json", "[chat]") {
  const auto folder = std::filesystem::temp_directory_path() / "lora_chat_folder_test";
  std::filesystem::create_directories(folder);
  {
    std::FILE* f = std::fopen((folder / "tokenizer_config.json").string().c_str(), "wb");
    REQUIRE(f);
    const std::string config =
        R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}]})";
    std::fwrite(config.data(), 1, config.size(), f);
    std::fclose(f);
  }
  const auto t = ChatTemplate::from_model_folder(folder.string());
  REQUIRE(t.has_value());
  CHECK(t->render(kChat, false) == "<s>D</s>");
  std::filesystem::remove_all(folder);
  CHECK_FALSE(ChatTemplate::from_model_folder(folder.string()).has_value());
}

TEST_CASE("render_for_training: the assistant turns of a ChatML conversation", "[chat]") {
  const ChatTemplate t = ChatTemplate::from_file(chatml_path());
  const auto r = lora::chat::render_for_training(t, kChat);
  REQUIRE(r.trained.size() == 2);
  CHECK(r.text.substr(r.trained[0].first, r.trained[0].second - r.trained[0].first) == "Hello!<|im_end|>\n");
  CHECK(r.text.substr(r.trained[1].first, r.trained[1].second - r.trained[1].first) == "4<|im_end|>\n");
}

TEST_CASE("render_for_training: a template whose earlier turns change when later ones follow is refused", "[chat]") {
  // Writes the number of messages first: every prefix render differs from the whole.
  const ChatTemplate t("{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}", "", "", "count");
  CHECK_THROWS_WITH(lora::chat::render_for_training(t, kChat), Contains("not a prefix"));
}

TEST_CASE("render_for_training: a conversation without an assistant turn is refused", "[chat]") {
  const ChatTemplate t = ChatTemplate::from_file(chatml_path());
  CHECK_THROWS_WITH(lora::chat::render_for_training(t, {{"system", "S"}, {"user", "U"}}),
                    Contains("no assistant turn"));
}

TEST_CASE("chat template: a list that doubles in a loop is stopped by the size limit", "[chat]") {
  const TemplateLimits small{.max_output_bytes = 100000, .max_seconds = 5.0};
  CHECK_THAT(render_error("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}"
                          "{% endfor %}",
                          small),
             Contains("past 100000 bytes"));
  CHECK_THAT(render_error("{% set l = [] %}{% for i in range(100000) %}{% set _ = l.append(i) %}{% endfor %}", small),
             Contains("past 100000 bytes"));
}

namespace {

std::string fixture_template(const std::string& name) {
  return lora::read_file(std::string(LORA_TEST_DATA_DIR) + "/chat/extra/" + name, "template");
}

std::string today(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char out[64];
  return std::string(out, std::strftime(out, sizeof out, format, &local));
}

}  // namespace

TEST_CASE("chat template: Llama 3.2 writes today's date with strftime_now, as transformers does", "[chat]") {
  const ChatTemplate t(fixture_template("llama3_2.jinja"), "<|begin_of_text|>", "<|eot_id|>", "llama3_2.jinja");
  const std::string before = today("%d %b %Y");
  const std::string text = t.render({{"user", "Hi"}, {"assistant", "Hello!"}}, false);
  const std::string after = today("%d %b %Y");
  const auto expected = [](const std::string& date) {
    return "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
           "Today Date: " +
           date +
           "\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>";
  };
  CHECK((text == expected(before) || text == expected(after)));
}

TEST_CASE("render_for_training: DeepSeek-R1's template (a generation prompt that turns write differently) is refused",
          "[chat]") {
  const ChatTemplate t(fixture_template("deepseek_r1_distill.jinja"), "<｜begin▁of▁sentence｜>",
                       "<｜end▁of▁sentence｜>", "deepseek_r1_distill.jinja");
  CHECK(t.render({{"user", "Hi"}}, true) == "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n");
  CHECK_THROWS_WITH(lora::chat::render_for_training(t, {{"user", "Hi"}, {"assistant", "Hello!"}}),
                    Contains("not a prefix"));
}
