// Tests of what HFTokenizer refuses: every unsupported component or value, malformed and hostile files and
// inputs. Each error must name the file and the JSON path of the field (and the value where there is one).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/tokenizer.h"

using namespace lora::tokenizer;
using json = nlohmann::json;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

constexpr const char* kName = "mutated/tokenizer.json";

// A small valid byte-level tokenizer.json: "a" "b" "c" "Ġ" (space), the merge "a b", "<s>" added.
json base() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 5, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "\u0120": 4}, "merges": ["a b"]}
  })");
}

HFTokenizer load(const json& j) {
  return HFTokenizer::from_json(j.dump(), kName);
}

struct Refusal {
  const char* what;
  std::function<void(json&)> mutate;
  std::vector<std::string> mentions;  // besides the file name
};

}  // namespace

TEST_CASE("tokenizer.json refusals: the base file loads and works", "[tokenizer]") {
  const HFTokenizer tok = load(base());
  CHECK(tok.encode("ab c", {}) == std::vector<int32_t>{2, 4, 3});
  CHECK(tok.encode("ab", {.add_special_tokens = true}) == std::vector<int32_t>{5, 2});
  CHECK(tok.decode(std::vector<int32_t>{5, 2, 4, 3}, {.skip_special_tokens = true}) == "ab c");
  CHECK(tok.vocab_size() == 6);

  // Without added tokens (a crash once: the id table was sized before the model's vocabulary was known).
  json j = base();
  j.erase("added_tokens");
  j["post_processor"] = nullptr;
  const HFTokenizer plain = load(j);
  CHECK(plain.vocab_size() == 5);
  CHECK(plain.encode("<s>ab", {}) == std::vector<int32_t>{2});  // "<", "s", ">" are not in the vocabulary
}

TEST_CASE("tokenizer.json refusals: each names the file, the field and the value", "[tokenizer]") {
  const std::vector<Refusal> cases = {
      {"another model type",
       [](json& j) { j["model"]["type"] = "WordPiece"; },
       {"model.type", "WordPiece", "not supported"}},
      {"Unigram",
       [](json& j) {
         j["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
       },
       {"model", "Unigram"}},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout", "0.1", "not supported"}},
      {"subword prefix",
       [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       {"model.continuing_subword_prefix", "##"}},
      {"word suffix", [](json& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, {"model.end_of_word_suffix", "</w>"}},
      {"unknown model field",
       [](json& j) { j["model"]["cache_capacity"] = 10; },
       {"model.cache_capacity", "unknown field"}},
      {"unknown top-level field", [](json& j) { j["extra"] = 1; }, {"extra", "unknown field"}},
      {"version", [](json& j) { j["version"] = "2.0"; }, {"version", "2.0"}},
      {"truncation",
       [](json& j) {
         j["truncation"] = {{"max_length", 512}};
       },
       {"truncation", "512"}},
      {"padding",
       [](json& j) {
         j["padding"] = {{"pad_id", 0}};
       },
       {"padding", "pad_id"}},
      {"normalizer type",
       [](json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       {"normalizer.type", "Lowercase"}},
      {"normalizer in a sequence",
       [](json& j) {
         j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "BertNormalizer"}}}}};
       },
       {"normalizer.normalizers[1].type", "BertNormalizer"}},
      {"normalizer not an object", [](json& j) { j["normalizer"] = "NFC"; }, {"normalizer", "expected a JSON object"}},
      {"pre-tokenizer type",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       {"pre_tokenizer.type", "Whitespace"}},
      {"pre-tokenizer after ByteLevel",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {j["pre_tokenizer"],
               {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Isolated"}, {"invert", false}}}}};
       },
       {"pre_tokenizer.pretokenizers[1]", "after ByteLevel"}},
      {"split behaviour",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}, {"invert", false}};
       },
       {"pre_tokenizer.behavior", "Sideways"}},
      {"regex that does not compile",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "(ab"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.Regex", "(ab", "compile"}},
      {"regex with \\w",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.Regex", "\\w", "not supported"}},
      {"giant regex",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"},
                               {"pattern", {{"Regex", std::string(20000, 'a')}}},
                               {"behavior", "Isolated"},
                               {"invert", false}};
       },
       {"pre_tokenizer.pattern.Regex", "20000 bytes"}},
      {"regex matching nothing",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "a*"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.Regex", "empty string"}},
      {"case folding",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "(?i:strasse)"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.Regex", "letter pair"}},
      {"empty string pattern",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"String", ""}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.String", "empty"}},
      {"pattern kind",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Glob", "*"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       {"pre_tokenizer.pattern.Glob", "unknown field"}},
      {"metaspace prefix contradiction",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", false}};
       },
       {"pre_tokenizer.add_prefix_space", "prepend_scheme"}},
      {"metaspace scheme",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "sometimes"}};
       },
       {"pre_tokenizer.prepend_scheme", "sometimes"}},
      {"metaspace replacement of two characters",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "__"}};
       },
       {"pre_tokenizer.replacement", "one character"}},
      {"metaspace first after a split with a normalizer",
       [](json& j) {
         j["normalizer"] = {{"type", "NFC"}};
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"String", "x"}}}, {"behavior", "Isolated"}, {"invert", false}},
               {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}}}}};
       },
       {"pre_tokenizer", "first"}},
      {"decoder type",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
       },
       {"decoder.type", "WordPiece"}},
      {"strip count",
       [](json& j) {
         j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
       },
       {"decoder.start", "-1"}},
      {"post-processor type",
       [](json& j) {
         j["post_processor"] = {{"type", "Foo"}};
       },
       {"post_processor.type", "Foo"}},
      {"template with B",
       [](json& j) { j["post_processor"]["single"][1]["Sequence"]["id"] = "B"; },
       {"post_processor.single[1].Sequence.id", "\"B\""}},
      {"template token not listed",
       [](json& j) { j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>"; },
       {"post_processor.single[0].SpecialToken.id", "<bos>", "special_tokens"}},
      {"template id out of range",
       [](json& j) { j["post_processor"]["special_tokens"]["<s>"]["ids"][0] = 999; },
       {"post_processor.special_tokens.<s>.ids[0]", "999"}},
      {"roberta id out of range",
       [](json& j) {
         j["post_processor"] = {{"type", "RobertaProcessing"},
                                {"sep", {"</s>", 2}},
                                {"cls", {"<s>", 77}},
                                {"trim_offsets", true},
                                {"add_prefix_space", true}};
       },
       {"post_processor.cls[1]", "77"}},
      {"deep sequence",
       [](json& j) {
         json d = {{"type", "Fuse"}};
         for (int i = 0; i < 40; ++i) d = {{"type", "Sequence"}, {"decoders", {d}}};
         j["decoder"] = d;
       },
       {"decoder.decoders[0]", "nested"}},
      {"duplicate vocabulary id", [](json& j) { j["model"]["vocab"]["c"] = 0; }, {"model.vocab", "\"a\"", "twice"}},
      {"vocabulary id out of range", [](json& j) { j["model"]["vocab"]["c"] = 99; }, {"model.vocab[\"c\"]", "99"}},
      {"negative vocabulary id", [](json& j) { j["model"]["vocab"]["c"] = -3; }, {"model.vocab[\"c\"]", "-3"}},
      {"fractional vocabulary id",
       [](json& j) { j["model"]["vocab"]["c"] = 3.5; },
       {"model.vocab[\"c\"]", "3.5", "integer"}},
      {"string vocabulary id", [](json& j) { j["model"]["vocab"]["c"] = "3"; }, {"model.vocab[\"c\"]", "\"3\""}},
      {"vocabulary not an object", [](json& j) { j["model"]["vocab"] = json::array({"a"}); }, {"model.vocab"}},
      {"merge of an unknown token", [](json& j) { j["model"]["merges"] = {"a z"}; }, {"model.merges[0]", "\"z\""}},
      {"merge making an unknown token",
       [](json& j) {
         j["model"]["merges"] = {"a b", "b c"};
       },
       {"model.merges[1]", "\"bc\""}},
      {"merge without a space", [](json& j) { j["model"]["merges"] = {"ab"}; }, {"model.merges[0]", "\"ab\""}},
      {"merge pair of three",
       [](json& j) {
         j["model"]["merges"] = {{"a", "b", "c"}};
       },
       {"model.merges[0]", "pair"}},
      {"merges mixed",
       [](json& j) {
         j["model"]["merges"] = {"a b", {"a", "b"}};
       },
       {"model.merges[1]", "mix"}},
      {"merge repeated",
       [](json& j) {
         j["model"]["merges"] = {"a b", "a b"};
       },
       {"model.merges[1]", "already"}},
      {"unk token unknown", [](json& j) { j["model"]["unk_token"] = "<unk>"; }, {"model.unk_token", "<unk>"}},
      {"flag of the wrong type",
       [](json& j) { j["model"]["ignore_merges"] = "yes"; },
       {"model.ignore_merges", "\"yes\""}},
      {"model missing", [](json& j) { j.erase("model"); }, {"model", "missing field"}},
      {"added token id", [](json& j) { j["added_tokens"][0]["id"] = 7; }, {"added_tokens[0].id", "7", "id 5"}},
      {"added token in the vocabulary with another id",
       [](json& j) { j["added_tokens"][0]["content"] = "c"; },
       {"added_tokens[0].id", "id 3"}},
      {"empty added token", [](json& j) { j["added_tokens"][0]["content"] = ""; }, {"added_tokens[0].content"}},
      {"added token field missing",
       [](json& j) { j["added_tokens"][0].erase("special"); },
       {"added_tokens[0].special", "missing field"}},
      {"added token twice",
       [](json& j) { j["added_tokens"].push_back(j["added_tokens"][0]); },
       {"added_tokens[1].content", "twice"}},
  };
  for (const Refusal& r : cases) {
    INFO("case: " << r.what);
    json j = base();
    r.mutate(j);
    try {
      load(j);
      FAIL_CHECK("loaded without an error");
    } catch (const lora::Error& e) {
      const std::string message = e.what();
      INFO("message: " << message);
      CHECK_THAT(message, Contains(kName));
      for (const std::string& m : r.mentions) CHECK_THAT(message, Contains(m));
    }
  }
}

TEST_CASE("tokenizer.json refusals: malformed and hostile files give errors, never crashes", "[tokenizer]") {
  auto check_error = [](const std::string& text, const std::string& mention) {
    INFO("file starts with: " << text.substr(0, 60));
    CHECK_THROWS_WITH(HFTokenizer::from_json(text, kName), Contains(kName) && Contains(mention));
  };
  check_error("", "not valid JSON");
  check_error(base().dump().substr(0, 200), "not valid JSON");
  check_error("[1, 2, 3]", "expected a JSON object");
  check_error("{\"model\": \"\xFF\"}", "not valid JSON");  // invalid UTF-8 inside a string
  // Deep nesting stops at the parser (core/json.h), wherever it is.
  check_error(std::string(100000, '[') + std::string(100000, ']'), "nested deeper than");
  json j = base();
  j["normalizer"] = "PLACEHOLDER";
  std::string text = j.dump();
  text.replace(text.find("\"PLACEHOLDER\""), 13, std::string(50000, '[') + std::string(50000, ']'));
  check_error(text, "nested deeper than");
}

TEST_CASE("tokenizer.json refusals: pathological regexes stop at the match limit", "[tokenizer]") {
  json j = base();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", "(a+)+b"}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  const HFTokenizer tok = load(j);
  CHECK(tok.encode("aab", {}) == std::vector<int32_t>{0, 2});  // one piece "aab": a, then the merge "a b"
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(tok.encode(std::string(5000, 'a') + "cb", {}),
                    Contains(kName) && Contains("pre_tokenizer.pretokenizers[0].pattern.Regex") && Contains("limit"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}

TEST_CASE("tokenizer.json refusals: bad input text and ids", "[tokenizer]") {
  const HFTokenizer tok = load(base());
  CHECK_THROWS_WITH(tok.encode("ab\xC3(", {}), Contains("invalid UTF-8") && Contains("byte offset 2"));
  CHECK_THROWS_WITH(tok.encode("\xED\xA0\x80", {}), Contains("byte offset 0"));
  CHECK_THROWS_WITH(tok.decode(std::vector<int32_t>{0, 6}, {}), Contains("6") && Contains(kName));
  CHECK_THROWS_WITH(tok.decode(std::vector<int32_t>{-1}, {}), Contains("-1"));
  CHECK(!tok.id_to_token(6));
  CHECK(!tok.id_to_token(-1));
}

TEST_CASE("load_tokenizer: says what it looked for", "[tokenizer]") {
  const fs::path dir = fs::temp_directory_path() / ("lora_tokenizer_refusals_" + std::to_string(::getpid()));
  fs::create_directories(dir / "empty");
  CHECK_THROWS_WITH(load_tokenizer(dir / "missing"), Contains("missing") && Contains("no such"));
  CHECK_THROWS_WITH(load_tokenizer(dir / "empty"), Contains("tokenizer.json") && Contains("vocab.json + merges.txt") &&
                                                       Contains("encoder.json + vocab.bpe"));
  std::ofstream(dir / "model.txt") << "hello";
  CHECK_THROWS_WITH(load_tokenizer(dir / "model.txt"), Contains("model.txt") && Contains("tokenizer.json"));

  // tokenizer_config.json beside the file supplies bos/eos; one naming an unknown token is an error.
  fs::create_directories(dir / "model");
  std::ofstream(dir / "model" / "tokenizer.json") << base().dump();
  std::ofstream(dir / "model" / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": {"content": "c"}})";
  const auto tok = load_tokenizer(dir / "model");
  CHECK(tok->bos_id() == 5);
  CHECK(tok->eos_id() == 3);
  std::ofstream(dir / "model" / "tokenizer_config.json") << R"({"eos_token": "</s>"})";
  CHECK_THROWS_WITH(load_tokenizer(dir / "model"),
                    Contains("tokenizer_config.json") && Contains("eos_token") && Contains("</s>"));
  fs::remove_all(dir);
}

TEST_CASE("tokenizer.json refusals: randomly damaged real files load or throw lora::Error", "[tokenizer]") {
  // Each trial replaces one value somewhere in a fixture (or removes a field) and loads the result: it
  // must either load and then encode and decode, or throw lora::Error; anything else fails the test
  // (and under the sanitizers, any memory error does).
  std::mt19937 rng(20240612);
  const std::vector<json> replacements = {nullptr,
                                          true,
                                          false,
                                          -1,
                                          0,
                                          7,
                                          int64_t{1} << 40,
                                          1.5,
                                          "",
                                          "x",
                                          "<s>",
                                          "(",
                                          "\\p{Han}",
                                          "a*",
                                          json::array(),
                                          json::object(),
                                          json::array({"a", "b"}),
                                          std::string(3000, 'z')};
  int loaded = 0, refused = 0;
  for (const char* family : {"gpt2", "llama3", "qwen2", "llama2", "mistral", "spm_unk", "roberta"}) {
    const fs::path path = fs::path(LORA_TEST_DATA_DIR) / "tokenizers" / family / "tokenizer.json";
    std::ifstream in(path);
    const json original = json::parse(in);
    for (int trial = 0; trial < 60; ++trial) {
      json damaged = original;
      json* node = &damaged;
      std::string where;
      // Walk down a random path, then damage the value found there.
      while ((node->is_object() || node->is_array()) && !node->empty() && rng() % 4 != 0) {
        const size_t pick = rng() % node->size();
        if (node->is_object()) {
          auto it = node->begin();
          std::advance(it, static_cast<std::ptrdiff_t>(pick));
          if (rng() % 8 == 0) {
            where.append(".").append(it.key()).append(" (removed)");
            node->erase(it);
            break;
          }
          where.append(".").append(it.key());
          node = &it.value();
        } else {
          where.append("[").append(std::to_string(pick)).append("]");
          node = &(*node)[pick];
        }
      }
      if (where.find("(removed)") == std::string::npos) *node = replacements[rng() % replacements.size()];
      INFO(family << ": damaged at " << where);
      try {
        const HFTokenizer tok = HFTokenizer::from_json(damaged.dump(), "damaged.json");
        for (const std::string text : {"Hello <s> world 123!", "", "\xE4\xB8\xAD \xF0\x9F\xA6\x99 caf\xC3\xA9"}) {
          try {
            const std::vector<int32_t> ids = tok.encode(text, {.add_special_tokens = true});
            tok.decode(ids, {.skip_special_tokens = true});
          } catch (const lora::Error&) {
            // a damaged file may still fail on some text (e.g. a regex hitting its limit)
          }
        }
        ++loaded;
      } catch (const lora::Error& e) {
        CHECK_THAT(e.what(), Contains("damaged.json"));
        ++refused;
      }
    }
  }
  CHECK(loaded > 0);
  CHECK(refused > 0);
}
