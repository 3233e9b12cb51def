// The data people fine-tune on (train/data/load_examples.h): each JSON format's ids and labels as TRL makes
// them, auto-detection (llm.c token files, JSONL, .json arrays, raw text) with its reason, the line ends and
// escapes real files hold, and every malformed input refused naming the file, the line and the field.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "lora_source_dir.h"
#include "models/chat/chat_template.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "tests/program_runner.h"
#include "train/data/json_records.h"
#include "train/data/load_examples.h"
#include "train/data/record_fields.h"
#include "train/token_file.h"

using namespace lora;
using train::DataFormat;
using train::kIgnoreLabel;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

namespace {

const tokenizer::GPT2Tokenizer& gpt2() {
  static const tokenizer::GPT2Tokenizer t = tokenizer::GPT2Tokenizer::load_default();
  return t;
}

constexpr int32_t kEos = 50256;

// A file in the scratch folder holding `bytes`; returns its path.
std::string data_file(const std::string& name, const std::string& bytes) {
  const fs::path path = testing::scratch_dir() / name;
  testing::write_file(path, bytes);
  return path.string();
}

train::LoadedExamples load(const std::string& path, DataFormat format = DataFormat::Auto, bool train_on_inputs = false,
                           const tokenizer::Tokenizer& tokenizer = gpt2()) {
  return train::load_examples(path, tokenizer, {.format = format, .train_on_inputs = train_on_inputs});
}

Ids encode(const std::string& text) {
  return gpt2().encode(text, true);
}

Ids concat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Ids masked(size_t n) {
  return Ids(n, kIgnoreLabel);
}

// load_examples' error for `bytes` written to `name`.
std::string load_error(const std::string& name, const std::string& bytes, DataFormat format = DataFormat::Auto) {
  const std::string path = data_file(name, bytes);
  try {
    load(path, format);
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no error for " << name);
  return "";
}

nlohmann::json parse(const std::string& text) {
  return nlohmann::json::parse(text);
}

std::string conversation_error(const std::string& record) {
  const nlohmann::json r = parse(record);
  try {
    if (r.contains("conversations")) {
      train::sharegpt_conversation(r, "data file 'c.jsonl' line 7");
    } else if (r.contains("messages")) {
      train::messages_conversation(r, "data file 'c.jsonl' line 7");
    } else {
      train::alpaca_conversation(r, "data file 'c.jsonl' line 7");
    }
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no error for " << record);
  return "";
}

}  // namespace

TEST_CASE("data formats: names, and an unknown --format name refused with the list", "[data_formats]") {
  for (const char* name : {"auto", "raw", "tokens", "text", "prompt_completion", "alpaca", "messages", "sharegpt"}) {
    CHECK(train::data_format_name(train::parse_data_format(name)) == name);
  }
  REQUIRE_THROWS_WITH(train::parse_data_format("chatml"), Catch::Contains("unknown data format 'chatml'") &&
                                                              Catch::Contains("prompt_completion") &&
                                                              Catch::Contains("sharegpt"));
  CHECK(train::is_conversation_format(DataFormat::Alpaca));
  CHECK(train::is_conversation_format(DataFormat::ShareGPT));
  CHECK_FALSE(train::is_conversation_format(DataFormat::PromptCompletion));
}

TEST_CASE("data formats: text records, EOS appended unless already last, every token trained", "[data_formats]") {
  const std::string path = data_file("text.jsonl",
                                     "{\"text\": \"Hello world\", \"id\": 7}\n"
                                     "{\"text\": \"Hello<|endoftext|>\"}\n"
                                     "{\"meta\": {\"a\": [1, 2]}, \"text\": \"\"}\n");
  const train::LoadedExamples loaded = load(path);
  CHECK(loaded.format == DataFormat::Text);
  REQUIRE(loaded.examples.size() == 3);
  CHECK(loaded.examples[0].ids == Ids{15496, 995, kEos});
  CHECK(loaded.examples[0].labels == loaded.examples[0].ids);
  // Special tokens written in the data are parsed (as transformers does by default): no second EOS.
  CHECK(loaded.examples[1].ids == Ids{15496, kEos});
  CHECK(loaded.examples[2].ids == Ids{kEos});
  CHECK(loaded.examples[2].line == 3);
  // Explicit --format text gives the same.
  CHECK(load(path, DataFormat::Text).examples[0].ids == loaded.examples[0].ids);
}

TEST_CASE("data formats: prompt/completion, only the completion and EOS trained unless train_on_inputs",
          "[data_formats]") {
  const std::string path = data_file("pc.jsonl",
                                     "{\"prompt\": \"Translate: cheese\", \"completion\": \" fromage\"}\n"
                                     "{\"completion\": \" world\", \"prompt\": \"Hello\"}\n");
  const train::LoadedExamples loaded = load(path);
  CHECK(loaded.format == DataFormat::PromptCompletion);
  REQUIRE(loaded.examples.size() == 2);
  const Ids prompt = encode("Translate: cheese"), completion = encode(" fromage");
  CHECK(loaded.examples[0].ids == concat(concat(prompt, completion), {kEos}));
  CHECK(loaded.examples[0].labels == concat(masked(prompt.size()), concat(completion, {kEos})));
  CHECK(loaded.examples[1].ids == Ids{15496, 995, kEos});
  CHECK(loaded.examples[1].labels == Ids{kIgnoreLabel, 995, kEos});
  const train::LoadedExamples all = load(path, DataFormat::PromptCompletion, true);
  CHECK(all.examples[1].labels == Ids{15496, 995, kEos});
}

TEST_CASE("data formats: a tokenizer with BOS adds it to the prompt only, EOS after the completion", "[data_formats]") {
  const auto llama = tokenizer::load_tokenizer(fs::path(LORA_TEST_DATA_DIR) / "tokenizers" / "llama2");
  REQUIRE(llama->bos_id());
  REQUIRE(llama->eos_id());
  const int32_t bos = *llama->bos_id(), eos = *llama->eos_id();
  const std::string pc = data_file("pc_llama.jsonl", "{\"prompt\": \"Hi\", \"completion\": \" there\"}\n");
  const train::Example e = load(pc, DataFormat::Auto, false, *llama).examples.at(0);
  const Ids prompt = llama->encode("Hi", {.add_special_tokens = true});
  const Ids completion = llama->encode(" there", {.add_special_tokens = false});
  REQUIRE(prompt.front() == bos);
  CHECK(e.ids == concat(concat(prompt, completion), {eos}));
  CHECK(e.labels == concat(masked(prompt.size()), concat(completion, {eos})));
  const std::string text = data_file("text_llama.jsonl", "{\"text\": \"Hi there\"}");
  const train::Example t = load(text, DataFormat::Auto, false, *llama).examples.at(0);
  CHECK(t.ids == concat(llama->encode("Hi there", {.add_special_tokens = true}), {eos}));
  CHECK(t.ids.front() == bos);
}

TEST_CASE("data formats: CRLF, blank lines, a BOM, no final newline, escapes and surrogate pairs", "[data_formats]") {
  const std::string path = data_file("crlf.jsonl",
                                     "\xEF\xBB\xBF{\"text\": \"caf\\u00e9 \\ud83d\\ude00\"}\r\n"
                                     "\r\n"
                                     "   \n"
                                     "{\"text\": \"tab\\there \\\"quoted\\\" \\\\ \xE2\x82\xAC\"}\r\n"
                                     "\n"
                                     "  {\"text\": \"line\\nbreak\"}  ");
  const train::LoadedExamples loaded = load(path);
  REQUIRE(loaded.examples.size() == 3);
  CHECK(loaded.examples[0].ids == concat(encode("caf\xC3\xA9 \xF0\x9F\x98\x80"), {kEos}));
  CHECK(loaded.examples[1].ids == concat(encode("tab\there \"quoted\" \\ \xE2\x82\xAC"), {kEos}));
  CHECK(loaded.examples[2].ids == concat(encode("line\nbreak"), {kEos}));
  CHECK(loaded.examples[0].line == 1);
  CHECK(loaded.examples[1].line == 4);
  CHECK(loaded.examples[2].line == 6);
}

TEST_CASE("data formats: a .json array of records, its lines counted as records", "[data_formats]") {
  const std::string path = data_file("array.json",
                                     "[\n  {\"prompt\": \"Hello\", \"completion\": \" world\"},\n"
                                     "  {\"prompt\": \"a\", \"completion\": \"b\", \"x\": [1, {\"y\": \"]\"}]}\n]\n");
  const train::DetectedFormat detected = train::detect_data_format(path);
  CHECK(detected.format == DataFormat::PromptCompletion);
  CHECK_THAT(detected.why, Catch::Contains("JSON array") && Catch::Contains("\"prompt\""));
  const train::LoadedExamples loaded = load(path);
  REQUIRE(loaded.examples.size() == 2);
  CHECK(loaded.examples[0].ids == Ids{15496, 995, kEos});
  CHECK(loaded.examples[1].line == 2);
  // A JSONL file whose records span no array is not mistaken for one, whatever its extension.
  CHECK(train::detect_data_format(data_file("lines.json", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n")).format ==
        DataFormat::Text);
  CHECK(load(data_file("lines2.json", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n")).examples.size() == 2);
  CHECK_THAT(load_error("empty_array.json", " [ ] "),
             Catch::Contains("empty_array.json") && Catch::Contains("no examples"));
  CHECK_THAT(load_error("array_bad.json", "[{\"text\": \"a\"}, 5]"),
             Catch::Contains("array_bad.json' record 2") && Catch::Contains("not an object"));
  CHECK_THAT(load_error("array_broken.json", "[{\"text\": \"a\"},\n\n {\"text\": ]"),
             Catch::Contains("array_broken.json'") && Catch::Contains("not valid JSON at line 3, column"));
  CHECK_THAT(load_error("array_field.json", "[{\"text\": \"a\"}, {\"text\": 3}]"),
             Catch::Contains("array_field.json' record 2") && Catch::Contains("\"text\" is a number"));
}

TEST_CASE("data formats: auto-detection says why: token files, each JSON format, raw text", "[data_formats]") {
  const fs::path dir = testing::scratch_dir();
  train::write_llmc_tokens((dir / "v1.bin").string(), {1, 2, 3}, train::kLlmcGpt2Magic);
  train::write_llmc_tokens((dir / "v7.bin").string(), {1, 70000}, train::kLlmcLlama3Magic);
  const train::DetectedFormat v1 = train::detect_data_format((dir / "v1.bin").string());
  CHECK(v1.format == DataFormat::Tokens);
  CHECK_THAT(v1.why, Catch::Contains("llm.c") && Catch::Contains("20240520"));
  const train::DetectedFormat v7 = train::detect_data_format((dir / "v7.bin").string());
  CHECK(v7.format == DataFormat::Tokens);
  CHECK_THAT(v7.why, Catch::Contains("20240801"));

  const std::vector<std::pair<std::string, DataFormat>> records = {
      {R"({"text": "a"})", DataFormat::Text},
      {R"({"prompt": "a", "completion": "b"})", DataFormat::PromptCompletion},
      {R"({"instruction": "a", "input": "", "output": "b"})", DataFormat::Alpaca},
      {R"({"messages": [{"role": "user", "content": "a"}], "text": "b"})", DataFormat::Messages},
      {R"({"conversations": [{"from": "human", "value": "a"}]})", DataFormat::ShareGPT},
  };
  for (const auto& [record, format] : records) {
    INFO(record);
    const std::string path = data_file("detect.jsonl", "\n\n" + record + "\n");
    const train::DetectedFormat d = train::detect_data_format(path);
    CHECK(d.format == format);
    CHECK_THAT(d.why, Catch::Contains("line 3"));
    CHECK(train::detect_data_format(data_file("detect.json", "[" + record + "]")).format == format);
  }
  const train::DetectedFormat raw = train::detect_data_format(data_file("story.txt", "Once upon a time\n{not json}\n"));
  CHECK(raw.format == DataFormat::Raw);
  CHECK_THAT(raw.why, Catch::Contains("not a JSON object"));
  CHECK(train::detect_data_format(data_file("brace.txt", "{ a C block }\n")).format == DataFormat::Raw);
  // A requested format is checked against the file.
  CHECK(train::detect_data_format(data_file("req.jsonl", records[1].first), DataFormat::PromptCompletion).format ==
        DataFormat::PromptCompletion);
  REQUIRE_THROWS_WITH(train::detect_data_format(data_file("req.jsonl", records[0].first), DataFormat::PromptCompletion),
                      Catch::Contains("req.jsonl' line 1") && Catch::Contains("needs \"prompt\""));
  REQUIRE_THROWS_WITH(train::detect_data_format((dir / "v1.bin").string(), DataFormat::Text),
                      Catch::Contains("llm.c token file"));
  REQUIRE_THROWS_WITH(train::detect_data_format(data_file("req.jsonl", records[0].first), DataFormat::Tokens),
                      Catch::Contains("magic"));
  CHECK(train::detect_data_format(data_file("req.jsonl", records[0].first), DataFormat::Raw).format == DataFormat::Raw);
  // A token file or raw text is not a file of examples.
  REQUIRE_THROWS_WITH(load((dir / "v1.bin").string()),
                      Catch::Contains("v1.bin") && Catch::Contains("llm.c token file"));
  REQUIRE_THROWS_WITH(load(dir / "story.txt"), Catch::Contains("story.txt") && Catch::Contains("raw text"));
}

TEST_CASE("data formats: malformed files refused naming the file, the line and the field", "[data_formats]") {
  const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>> cases = {
      {"malformed.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n", {"malformed.jsonl' line 2", "not valid JSON"}},
      {"duplicate.jsonl",
       "{\"text\": \"a\"}\n{\"text\": \"b\", \"text\": \"c\"}\n",
       {"duplicate.jsonl' line 2", "key 'text' appears twice"}},
      {"notobject.jsonl", "{\"text\": \"a\"}\n\n[1, 2]\n", {"notobject.jsonl' line 3", "array, not an object"}},
      {"missing.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n", {"missing.jsonl' line 2", "no \"text\""}},
      {"wrongtype.jsonl",
       "{\"text\": \"a\"}\n{\"text\": [\"b\"]}\n",
       {"wrongtype.jsonl' line 2", "\"text\" is an array"}},
      {"pc.jsonl",
       "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": null}\n",
       {"pc.jsonl' line 2", "\"completion\" is a null"}},
      {"pc2.jsonl",
       "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n",
       {"pc2.jsonl' line 2", "no \"completion\""}},
      {"utf8.jsonl", "{\"text\": \"a\"}\n{\"text\": \"caf\xE9\"}\n", {"utf8.jsonl' line 2", "not UTF-8", "0xE9"}},
      {"lone.jsonl", "{\"text\": \"\\ud83d x\"}\n", {"lone.jsonl' line 1", "not valid JSON", "surrogate"}},
      {"overflow.jsonl",
       "{\"text\": \"a\"}\n{\"text\": \"b\", \"n\": 1e999}\n",
       {"overflow.jsonl' line 2", "not valid JSON", "overflow"}},
      {"overflow.json", "[{\"text\": \"a\", \"n\": -1e999}]", {"overflow.json'", "not valid JSON", "overflow"}},
      {"empty.jsonl", "", {"empty.jsonl", "no examples"}},
      {"blank.jsonl", "\n  \r\n\n", {"blank.jsonl", "no examples"}},
      {"keys.jsonl",
       "{\"question\": \"a\", \"answer\": \"b\"}\n",
       {"keys.jsonl' line 1", "\"question\"", "--format raw"}},
      {"garbage.bin",
       std::string("\x7F"
                   "ELF\x02\x01\x01\0\0\0\0\xff\xfe",
                   13),
       {"garbage.bin", "binary data"}},
      {"garbage.jsonl",
       std::string("\x7F"
                   "ELF\x02\x01\x01\0\0\0\0\xff\xfe",
                   13),
       {"garbage.jsonl' line 1", "not UTF-8"}},
  };
  for (const auto& [name, bytes, expected] : cases) {
    INFO(name);
    const std::string error = load_error(name, bytes);
    INFO(error);
    for (const std::string& part : expected) CHECK_THAT(error, Catch::Contains(part));
  }
  // Keys with training meaning the detected format does not read are refused, by line; metadata is not.
  CHECK_THAT(load_error("kto.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\", \"id\": 7}\n"
                                     "{\"prompt\": \"p\", \"completion\": \"c\", \"label\": false}\n"),
             Catch::Contains("kto.jsonl' line 2") && Catch::Contains("\"label\" is not read by the prompt_completion"));
  CHECK_THAT(load_error("dpo.jsonl", "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"completion\": \"c\"}\n"),
             Catch::Contains("dpo.jsonl' line 1") && Catch::Contains("\"chosen\" is not read"));
  CHECK_THAT(load_error("mixed.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"completion\": \"c\"}\n", DataFormat::Text),
             Catch::Contains("mixed.jsonl' line 2") && Catch::Contains("\"completion\" is not read by the text format"));
  const std::string missing = (testing::scratch_dir() / "nowhere.jsonl").string();
  REQUIRE_THROWS_WITH(load(missing), Catch::Contains("nowhere.jsonl") && Catch::Contains("no such file"));
  REQUIRE_THROWS_WITH(load(testing::scratch_dir().string()), Catch::Contains("not a regular file"));
  // An explicit format names the line of every record that does not fit it.
  CHECK_THAT(load_error("fmt.jsonl", "{\"text\": \"a\", \"id\": 1}\n{\"prompt\": \"p\"}\n", DataFormat::Text),
             Catch::Contains("fmt.jsonl' line 2") && Catch::Contains("no \"text\""));
}

TEST_CASE("data formats: conversations without a chat template ask for --chat-template", "[data_formats]") {
  for (const char* record :
       {R"({"instruction": "a", "output": "b"})",
        R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
        R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})"}) {
    INFO(record);
    CHECK_THAT(load_error("chat.jsonl", record), Catch::Contains("chat.jsonl") && Catch::Contains("--chat-template"));
  }
}

TEST_CASE("data formats: conversation records become turns; bad ones are refused naming the field", "[data_formats]") {
  using chat::Conversation;
  const std::string place = "data file 'c.jsonl' line 7";
  const Conversation alpaca =
      train::alpaca_conversation(parse(R"({"instruction": "Sum", "input": "1 2", "output": "3", "extra": 1})"), place);
  REQUIRE(alpaca.size() == 2);
  CHECK(alpaca[0].role == "user");
  CHECK(alpaca[0].content == "Sum\n\n1 2");
  CHECK(alpaca[1].role == "assistant");
  CHECK(alpaca[1].content == "3");
  CHECK(train::alpaca_conversation(parse(R"({"instruction": "Sum", "input": "", "output": "3"})"), place)[0].content ==
        "Sum");
  CHECK(
      train::alpaca_conversation(parse(R"({"instruction": "Sum", "input": null, "output": "3"})"), place)[0].content ==
      "Sum");
  CHECK(train::alpaca_conversation(parse(R"({"instruction": "Sum", "output": "3"})"), place)[0].content == "Sum");

  const Conversation messages = train::messages_conversation(
      parse(R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                             {"role": "assistant", "content": "Bye!"}], "id": "x"})"),
      place);
  REQUIRE(messages.size() == 5);
  CHECK(messages[0].role == "system");
  CHECK(messages[4].content == "Bye!");
  const Conversation sharegpt = train::sharegpt_conversation(
      parse(R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                  {"from": "gpt", "value": "A"}]})"),
      place);
  REQUIRE(sharegpt.size() == 3);
  CHECK(sharegpt[1].role == "user");
  CHECK(sharegpt[2].role == "assistant");
  CHECK(sharegpt[2].content == "A");

  const std::vector<std::pair<std::string, std::vector<std::string>>> bad = {
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})",
       {"\"messages\"[1].\"role\" is \"tool\"", "unknown role"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]})",
       {"\"messages\"[1].\"content\" is a number"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]})",
       {"\"messages\"[1].\"content\" is an empty assistant turn"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})",
       {"ends with a user turn", "\"messages\"[2]"}},
      {R"({"messages": [{"role": "user", "content": "a"}]})", {"no assistant turn"}},
      {R"({"messages": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}]})",
       {"\"messages\"[1] is a system message after the first turn"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}]})",
       {"\"messages\"[1] is a system message"}},
      {R"({"messages": []})", {"\"messages\" is empty"}},
      {R"({"messages": "hi"})", {"\"messages\" is a string", "expected an array"}},
      {R"({"messages": [["user", "a"]]})", {"\"messages\"[0] is an array", "expected an object"}},
      {R"({"messages": [{"content": "a"}]})", {"\"messages\"[0] has no \"role\""}},
      {R"({"messages": [{"role": "user"}]})", {"\"messages\"[0] has no \"content\""}},
      {R"({"messages": [{"role": "assistant", "content": "a", "weight": 0}]})",
       {"\"messages\"[0] has \"weight\"", "not read"}},
      {R"({"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]})",
       {"\"conversations\"[1].\"from\" is \"bot\"", "\"human\""}},
      {R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}]})",
       {"\"conversations\"[1].\"value\" is an empty assistant turn"}},
      {R"({"conversations": [{"from": "human", "value": "a"}, {"role": "gpt", "value": "b"}]})",
       {"\"conversations\"[1] has \"role\""}},
      {R"({"instruction": "a", "output": ""})", {"\"output\" is empty"}},
      {R"({"instruction": "a", "input": 3, "output": "b"})", {"\"input\" is a number"}},
      {R"({"instruction": 1, "output": "b"})", {"\"instruction\" is a number"}},
      {R"({"instruction": "a"})", {"no \"output\""}},
      // A key with training meaning that the format does not read: the record would be trained without it.
      {R"({"instruction": "a", "output": "b", "system": "Be brief."})",
       {"\"system\" is not read by the alpaca format", "\"instruction\", \"input\", \"output\" alone"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": []})",
       {"\"tools\" is not read by the messages format"}},
      {R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}], "system": "S"})",
       {"\"system\" is not read by the sharegpt format"}},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "text": "c"})",
       {"\"text\" is not read by the messages format", "--format"}},
  };
  for (const auto& [record, parts] : bad) {
    INFO(record);
    const std::string error = conversation_error(record);
    INFO(error);
    CHECK_THAT(error, Catch::StartsWith(place));
    for (const std::string& part : parts) CHECK_THAT(error, Catch::Contains(part));
  }
}

TEST_CASE("data formats: many records keep their file order across threads and blocks", "[data_formats]") {
  std::string bytes;
  std::vector<std::string> texts;
  for (int i = 0; i < 3000; ++i) {
    texts.push_back(fmt::format("Record number {} says {}", i, std::string(size_t(i % 17), 'x')));
    bytes += nlohmann::json{{"text", texts.back()}}.dump() + (i % 3 ? "\n" : "\r\n\n");
  }
  const train::LoadedExamples loaded = load(data_file("many.jsonl", bytes));
  REQUIRE(loaded.examples.size() == texts.size());
  int64_t line = 1;
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO(i);
    REQUIRE(loaded.examples[i].ids == concat(encode(texts[i]), {kEos}));
    REQUIRE(loaded.examples[i].line == line);
    line += i % 3 ? 1 : 2;
  }
  // The first bad record in file order is the one named, however the work was split.
  std::string broken = bytes;
  for (int bad_line : {2900, 1500}) {
    size_t at = 0;
    for (int l = 1; l < bad_line; ++l) at = broken.find('\n', at) + 1;
    broken.insert(at, "{\"text\": 1}\n");
  }
  CHECK_THAT(load_error("many_bad.jsonl", broken), Catch::Contains("line 1500:"));
}

TEST_CASE("data formats: a 30 MB line is read; a line over the limit is refused by number", "[data_formats]") {
  const std::string big(size_t{30} << 20, 'a');
  const train::LoadedExamples loaded =
      load(data_file("big.jsonl", "{\"text\": \"one\"}\n{\"skip\": \"" + big + "\", \"text\": \"two\"}\n"));
  REQUIRE(loaded.examples.size() == 2);
  CHECK(loaded.examples[1].ids == concat(encode("two"), {kEos}));
  const std::string huge(train::kMaxJsonLineBytes + 10, ' ');
  CHECK_THAT(load_error("huge.jsonl", "{\"text\": \"one\"}\n{\"text\": \"" + huge + "\"}\n"),
             Catch::Contains("huge.jsonl' line 2") && Catch::Contains("longer than 64 MiB"));
  CHECK_THAT(load_error("huge_first.jsonl", "{\"text\": \"" + huge + "\"}\n"),
             Catch::Contains("huge_first.jsonl' line 1") && Catch::Contains("longer than 64 MiB"));
}

TEST_CASE("data formats: record splitting and placing", "[data_formats]") {
  std::vector<train::RecordText> lines;
  CHECK(train::split_lines("a\r\n\n b \nc", 5, lines) == 9);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].line == 5);
  CHECK(lines[0].text == "a");
  CHECK(lines[1].line == 7);
  CHECK(lines[1].text == "b");
  CHECK(lines[2].text == "c");
  CHECK(train::json_layout("\xEF\xBB\xBF \n [") == train::JsonLayout::Array);
  CHECK(train::json_layout("{}") == train::JsonLayout::Lines);
  CHECK(train::first_record("[ {\"a\": \"}\\\"\"}, 2]", train::JsonLayout::Array).text == "{\"a\": \"}\\\"\"}");
  CHECK(train::first_record("\n\n{\"a\": 1}\n", train::JsonLayout::Lines).line == 3);
  CHECK(train::first_record("[]", train::JsonLayout::Array).line == 0);
}

TEST_CASE("tokenize --data writes each example as training sees it, one JSON line each", "[data_formats][examples]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  const std::string path = data_file("program.jsonl",
                                     "{\"prompt\": \"Hello\", \"completion\": \" world\"}\n\n"
                                     "{\"prompt\": \"Translate: cheese\", \"completion\": \" fromage\"}\n");
  const train::LoadedExamples expected = load(path);
  const testing::RunResult r = testing::run(tokenize, "--data " + testing::quote(path) + " --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("\"prompt\""));  // why the format was chosen
  std::vector<nlohmann::json> lines;
  for (size_t start = 0, end; (end = r.out.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(nlohmann::json::parse(r.out.substr(start, end - start)));
  }
  REQUIRE(lines.size() == 2);
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i]["input_ids"].get<Ids>() == expected.examples[i].ids);
    CHECK(lines[i]["labels"].get<Ids>() == expected.examples[i].labels);
  }
  CHECK(lines[0]["labels"].get<Ids>() == Ids{kIgnoreLabel, 995, kEos});
  const testing::RunResult all = testing::run(tokenize, "--data " + testing::quote(path) + " --json --train-on-inputs");
  CHECK(testing::last_json_line(all.out)["labels"].get<Ids>() == expected.examples[1].ids);

  const testing::RunResult bad = testing::run(tokenize, "--data " + testing::quote(path) + " --format text --json");
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Catch::Contains("program.jsonl' line 1") && Catch::Contains("needs \"text\""));
  const testing::RunResult unknown = testing::run(tokenize, "--data " + testing::quote(path) + " --format csv");
  CHECK(unknown.exit_code != 0);
  CHECK_THAT(unknown.err, Catch::Contains("unknown data format 'csv'"));
  CHECK(testing::run(tokenize, "--data " + testing::quote(path) + " --decode").exit_code != 0);
  // Without --data it still reads stdin.
  CHECK(testing::run(tokenize, "", "Hello world").out == "15496 995\n");
  CHECK_THAT(testing::run(tokenize, "--help").out, Catch::Contains("--data") && Catch::Contains("--train-on-inputs"));
}

TEST_CASE("data formats: conversations in each format give transformers' ids and labels (chat fixtures)",
          "[data_formats]") {
  // tests/fixtures/chat/expected.json: real templates rendered, tokenized and masked by transformers.
  const fs::path chat_dir = fs::path(LORA_TEST_DATA_DIR) / "chat";
  std::ifstream in(chat_dir / "expected.json");
  const nlohmann::json families = nlohmann::json::parse(in).at("families");
  int compared = 0;
  for (const auto& [family, expected] : families.items()) {
    INFO(family);
    const fs::path template_path = chat_dir / expected.at("template").get<std::string>();
    const chat::ChatTemplate chat_template(read_file(template_path.string(), "template"),
                                           expected.at("bos_token").get<std::string>(),
                                           expected.at("eos_token").get<std::string>(), template_path.string());
    const auto tokenizer = tokenizer::load_tokenizer(chat_dir / expected.at("tokenizer").get<std::string>());
    std::string messages, sharegpt, alpaca;
    std::vector<const nlohmann::json*> cases, alpaca_cases;
    for (const auto& c : expected.at("cases")) {
      const nlohmann::json& turns = c.at("messages");
      if (!c.contains("labels")) {
        // A template that refuses the conversation, or one that cannot be masked: refused naming the line.
        const std::string path = data_file("refused.jsonl", "\n" + nlohmann::json{{"messages", turns}}.dump() + "\n");
        REQUIRE_THROWS_WITH(train::load_examples(path, *tokenizer, {.chat_template = &chat_template}),
                            Catch::Contains("refused.jsonl' line 2: "));
        continue;
      }
      cases.push_back(&c);
      messages += nlohmann::json{{"messages", turns}, {"name", c.at("name")}}.dump() + "\n";
      nlohmann::json conversations = nlohmann::json::array();
      for (const auto& m : turns) {
        const std::string role = m.at("role");
        conversations.push_back({{"from", role == "user"        ? "human"
                                          : role == "assistant" ? "gpt"
                                                                : role},
                                 {"value", m.at("content")}});
      }
      sharegpt += nlohmann::json{{"conversations", conversations}}.dump() + "\n";
      if (turns.size() == 2 && turns[0].at("role") == "user") {
        alpaca_cases.push_back(&c);
        alpaca +=
            nlohmann::json{{"instruction", turns[0].at("content")}, {"input", ""}, {"output", turns[1].at("content")}}
                .dump() +
            "\n";
      }
    }
    const auto check = [&](const std::string& name, const std::string& bytes, DataFormat format,
                           const std::vector<const nlohmann::json*>& wanted) {
      INFO(name);
      if (wanted.empty()) return;  // a family whose cases are all refused (above)
      const train::LoadedExamples loaded =
          train::load_examples(data_file(name, bytes), *tokenizer, {.chat_template = &chat_template});
      CHECK(loaded.format == format);
      REQUIRE(loaded.examples.size() == wanted.size());
      for (size_t i = 0; i < wanted.size(); ++i) {
        INFO(wanted[i]->at("name").get<std::string>());
        CHECK(loaded.examples[i].ids == wanted[i]->at("ids").get<Ids>());
        CHECK(loaded.examples[i].labels == wanted[i]->at("labels").get<Ids>());
        CHECK(loaded.examples[i].line == int64_t(i) + 1);
        ++compared;
      }
      const train::LoadedExamples all = train::load_examples(
          data_file(name, bytes), *tokenizer, {.train_on_inputs = true, .chat_template = &chat_template});
      for (size_t i = 0; i < wanted.size(); ++i) CHECK(all.examples[i].labels == wanted[i]->at("ids").get<Ids>());
    };
    check(family + "_messages.jsonl", messages, DataFormat::Messages, cases);
    check(family + "_sharegpt.jsonl", sharegpt, DataFormat::ShareGPT, cases);
    check(family + "_alpaca.jsonl", alpaca, DataFormat::Alpaca, alpaca_cases);
  }
  CHECK(compared > 50);
}

TEST_CASE("data formats: Alpaca's input joins the instruction; a .json array of conversations", "[data_formats]") {
  const chat::ChatTemplate chatml =
      chat::ChatTemplate::from_file((fs::path(LORA_SOURCE_DIR) / "data" / "chat_templates" / "chatml.jinja").string());
  const train::ExampleOptions options{.chat_template = &chatml};
  const train::Example alpaca =
      train::load_examples(data_file("alpaca.json", R"([{"instruction": "Add", "input": "1 2", "output": "3"}])"),
                           gpt2(), options)
          .examples.at(0);
  const train::Example messages =
      train::load_examples(
          data_file(
              "same.jsonl",
              R"({"messages": [{"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]})"),
          gpt2(), options)
          .examples.at(0);
  CHECK(alpaca.ids == messages.ids);
  CHECK(alpaca.labels == messages.labels);
  const std::string render = "<|im_start|>user\nAdd\n\n1 2<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n";
  CHECK(alpaca.ids == gpt2().encode(render, true));
  // The trained tokens are the reply and its end-of-turn marker.
  Ids trained;
  for (size_t i = 0; i < alpaca.ids.size(); ++i) {
    if (alpaca.labels[i] != kIgnoreLabel) trained.push_back(alpaca.ids[i]);
  }
  CHECK(gpt2().decode(trained) == "3<|im_end|>\n");
  // A template's own refusal comes back naming the line.
  const chat::ChatTemplate strict("{{ raise_exception('no system role here') }}", "", "", "strict.jinja");
  const std::string path = data_file("strict.jsonl", "\n\n" + std::string(R"({"instruction": "a", "output": "b"})"));
  REQUIRE_THROWS_WITH(train::load_examples(path, gpt2(), {.chat_template = &strict}),
                      Catch::Contains("strict.jsonl' line 3: ") && Catch::Contains("no system role here"));
}

TEST_CASE("not_a_file_reason says what a path is instead of a file", "[data_formats]") {
  const std::string dir = testing::scratch_dir().string();
  CHECK(not_a_file_reason(dir) == "is a folder; expected a file");
  CHECK(not_a_file_reason(dir + "/nowhere.jsonl") == "no such file");
  CHECK(not_a_file_reason(data_file("a-file.jsonl", "{\"text\": \"a\"}\n")).empty());
  CHECK(not_a_file_reason("/dev/null") == "not a regular file");
}
