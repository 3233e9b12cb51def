// SentencePiece-style ("llama") GGUF vocabularies both ways: a vocabulary trained and encoded by the
// `sentencepiece` package and written by llama.cpp's gguf-py (tests/fixtures/gguf_spm/make_spm_fixture.py)
// must tokenize here as sentencepiece does; GGUF -> tokenizer.json -> GGUF keeps tokens, scores and types;
// Llama 2 / Mistral style tokenizer.json files export to GGUF and come back tokenizing the same.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/gguf.h"
#include "models/gguf/tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"

using namespace lora;
namespace gio = lora::models::gguf_io;

namespace {

const std::string kFixtures = std::string(LORA_TEST_DATA_DIR);
const std::string kSpm = kFixtures + "/gguf_spm";

gguf::File reparse(const std::vector<std::pair<std::string, gguf::Value>>& kv, const std::string& name,
                   std::string& bytes) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  for (const auto& [key, value] : kv) w.set(key, value);
  bytes = w.to_bytes();
  return gguf::File::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
}

// The file's metadata with `key` replaced (or removed when `value` is null).
std::vector<std::pair<std::string, gguf::Value>> with(const gguf::File& f, const std::string& key,
                                                      const std::optional<gguf::Value>& value) {
  std::vector<std::pair<std::string, gguf::Value>> kv;
  for (const auto& [k, v] : f.metadata()) {
    if (k != key) kv.emplace_back(k, v);
  }
  if (value) kv.emplace_back(key, *value);
  return kv;
}

}  // namespace

TEST_CASE("GGUF SentencePiece vocabulary tokenizes as sentencepiece does", "[gguf][spm]") {
  const gguf::File f = gguf::File::open(kSpm + "/spm_bpe.gguf");
  const auto tok = gio::load_gguf_tokenizer(f);
  const nlohmann::json expected = nlohmann::json::parse(read_file(kSpm + "/expected.json", "expected"));
  REQUIRE(tok->vocab_size() == expected["vocab_size"].get<size_t>());
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  size_t disagreements = 0;
  for (const nlohmann::json& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    INFO("text: '" << text << "'");
    const std::vector<int32_t> got = tok->encode(text, {});
    if (got != ids) ++disagreements;
    CHECK(got == ids);
    // add_bos_token: BOS first, as llama.cpp adds it.
    std::vector<int32_t> with_bos = {1};
    with_bos.insert(with_bos.end(), ids.begin(), ids.end());
    CHECK(tok->encode(text, {.add_special_tokens = true}) == with_bos);
    // Decoding gives sentencepiece's decoding; that is the text itself unless it holds a literal U+2581,
    // which both read back as a space.
    CHECK(tok->decode(ids, {}) == c["decoded"].get<std::string>());
    if (text.find("\xe2\x96\x81") == std::string::npos) CHECK(tok->decode(got, {}) == text);
    CHECK(tok->decode(with_bos, {.skip_special_tokens = true}) == c["decoded"].get<std::string>());
  }
  CHECK(disagreements == 0);
  // 600 texts of running prose (Alice past the training text, Moby Dick): merges ordered by score, as
  // transformers derives them, against sentencepiece's BPE (highest-scoring adjacent pair first, as
  // llama.cpp's llm_tokenizer_spm also merges). They could disagree where two splits of one piece compete.
  size_t corpus_disagreements = 0, corpus_texts = 0;
  for (const nlohmann::json& c : expected["corpus"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> got = tok->encode(text, {});
    ++corpus_texts;
    if (got != c["ids"].get<std::vector<int32_t>>()) {
      ++corpus_disagreements;
      UNSCOPED_INFO("disagrees with sentencepiece: '" << text << "'");
    }
    if (tok->decode(got, {}) != text) UNSCOPED_INFO("does not decode back: '" << text << "'");
    CHECK(tok->decode(got, {}) == text);
  }
  CHECK(corpus_texts == 600);
  CHECK(corpus_disagreements == 0);
}

TEST_CASE("GGUF SentencePiece vocabulary: GGUF -> tokenizer.json -> GGUF keeps tokens, scores, types", "[gguf][spm]") {
  const gguf::File f = gguf::File::open(kSpm + "/spm_bpe.gguf");
  const gio::TokenizerFiles files = gio::tokenizer_files_from_gguf(f);
  const size_t n = f.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING).array.size();
  std::string bytes;
  const gguf::File back =
      reparse(gio::tokenizer_to_gguf(files, nlohmann::json::object(), static_cast<int64_t>(n)), "round trip", bytes);
  CHECK(back.get_string("tokenizer.ggml.model") == "llama");
  for (const auto& [key, type] :
       std::vector<std::pair<std::string, gguf::ValueType>>{{"tokenizer.ggml.tokens", gguf::ValueType::STRING},
                                                            {"tokenizer.ggml.scores", gguf::ValueType::F32},
                                                            {"tokenizer.ggml.token_type", gguf::ValueType::I32}}) {
    INFO(key);
    const auto& a = f.get_array(key, type).array;
    const auto& b = back.get_array(key, type).array;
    REQUIRE(a.size() == b.size());
    size_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += !(a[i].s == b[i].s && a[i].f == b[i].f && a[i].i == b[i].i);
    CHECK(differ == 0);
  }
  for (const char* key :
       {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"}) {
    INFO(key);
    CHECK(back.get_uint(key) == f.get_uint(key));
  }
  CHECK(back.get_bool_or("tokenizer.ggml.add_bos_token") == true);
  CHECK(back.get_bool_or("tokenizer.ggml.add_eos_token") == false);
  CHECK(back.get_bool_or("tokenizer.ggml.add_space_prefix") == true);
  // And the written file tokenizes as the original.
  const auto a = gio::load_gguf_tokenizer(f), b = gio::load_gguf_tokenizer(back);
  for (const char* text : {"Alice was beginning", "  spaces  ", "東京 😀 café\n"})
    CHECK(a->encode(text, {.add_special_tokens = true}) == b->encode(text, {.add_special_tokens = true}));
}

TEST_CASE("Llama 2 and Mistral tokenizer.json -> GGUF \"llama\" -> tokenizer encodes and decodes as the original",
          "[gguf][spm]") {
  const nlohmann::json strings = nlohmann::json::parse(read_file(kFixtures + "/tokenizers/strings.json", "strings"));
  for (const char* name : {"llama2", "mistral"}) {
    INFO(name);
    const std::string dir = kFixtures + "/tokenizers/" + name;
    const std::string config = std::string(name) == "llama2" ? read_file(dir + "/tokenizer_config.json", "t") : "";
    const gio::TokenizerFiles files{read_file(dir + "/tokenizer.json", "t"), config, name};
    const auto original = tokenizer::HFTokenizer::from_json(files.tokenizer_json, name, files.tokenizer_config_json);
    std::string bytes;
    const gguf::File f =
        reparse(gio::tokenizer_to_gguf(files, nlohmann::json::object(), static_cast<int64_t>(original.vocab_size())),
                name, bytes);
    CHECK(f.get_string("tokenizer.ggml.model") == "llama");
    CHECK(f.get_bool_or("tokenizer.ggml.add_space_prefix") == true);
    const auto& types = f.get_array("tokenizer.ggml.token_type", gguf::ValueType::I32).array;
    CHECK(types[0].i == 2);  // <unk>: unknown
    CHECK(types[1].i == 3);  // <s>: control
    CHECK(types[3].i == 6);  // <0x00>: byte
    const auto back = gio::load_gguf_tokenizer(f);
    CHECK(back->bos_id() == original.bos_id());
    CHECK(back->eos_id() == original.eos_id());
    size_t checked = 0;
    for (const nlohmann::json& s : strings) {
      if (!s.is_string()) continue;
      const std::string text = s.get<std::string>();
      INFO("text: '" << text << "'");
      // Llama 2's fixture has a user-defined token, "<extra>", that transformers matches in the normalized
      // text (normalized: true, and so as "\u2581<extra>"); llama.cpp matches user-defined tokens in the raw
      // text and puts the space prefix after them, as after any special token. Checked on its own below.
      if (text.find("<extra>") != std::string::npos) continue;
      // Mistral's Metaspace prepends no U+2581 to a text that starts with one (a space, say): transformers
      // reads " Hello" as "\u2581Hello", sentencepiece and llama.cpp as "\u2581\u2581Hello" (the
      // sentencepiece fixture above checks that side). Llama 2's Prepend normalizer agrees with them.
      if (std::string(name) == "mistral" && (text.rfind(" ", 0) == 0 || text.rfind("\u2581", 0) == 0)) continue;
      // Mistral's Metaspace (prepend_scheme "first") puts no U+2581 after a special token written in the
      // text ("<s>Hello"); llama.cpp's SPM tokenizer, and so the GGUF import, does, as Llama 2's Prepend
      // normalizer does. So Mistral's special tokens are compared as plain text.
      const bool parse = std::string(name) != "mistral";
      for (bool add : {false, true}) {
        const auto ids = original.encode(text, {.add_special_tokens = add, .parse_special_tokens = parse});
        CHECK(back->encode(text, {.add_special_tokens = add, .parse_special_tokens = parse}) == ids);
        CHECK(back->decode(ids, {}) == original.decode(ids, {}));
      }
      ++checked;
    }
    CHECK(checked > 150);
    if (std::string(name) == "llama2") {
      // llama.cpp: "a " -> "\u2581a\u2581", then <extra>, then " b" with the prefix -> "\u2581\u2581b".
      auto id = [&](const char* t) { return back->token_to_id(t).value(); };
      CHECK(back->encode("a <extra> b", {}) ==
            std::vector<int32_t>{id("\u2581a"), id("\u2581"), id("<extra>"), id("\u2581"), id("\u2581b")});
      const auto& t = f.get_array("tokenizer.ggml.token_type", gguf::ValueType::I32).array;
      CHECK(t[1000].i == 4);  // user-defined
    }
  }
}

TEST_CASE("GGUF SentencePiece vocabulary: add_space_prefix, add_eos and what is refused", "[gguf][spm]") {
  const gguf::File f = gguf::File::open(kSpm + "/spm_bpe.gguf");
  std::string b1, b2, b3, b4;
  // Without add_space_prefix no U+2581 goes before the text.
  const gguf::File bare = reparse(with(f, "tokenizer.ggml.add_space_prefix", gguf::Value::boolean(false)), "bare", b1);
  const auto tok = gio::load_gguf_tokenizer(bare);
  const auto ids = tok->encode("Alice was", {});
  REQUIRE(!ids.empty());
  CHECK(tok->id_to_token(ids[0]).value().rfind("\xe2\x96\x81", 0) != 0);
  CHECK(tok->decode(ids, {}) == "Alice was");
  CHECK(tok->decode(tok->encode(" x", {}), {}) == " x");
  // add_eos_token puts EOS last.
  const gguf::File eos = reparse(with(f, "tokenizer.ggml.add_eos_token", gguf::Value::boolean(true)), "eos", b2);
  const auto with_eos = gio::load_gguf_tokenizer(eos)->encode("Alice", {.add_special_tokens = true});
  REQUIRE(with_eos.size() >= 3);
  CHECK(with_eos.front() == 1);
  CHECK(with_eos.back() == 2);
  // Scores are how a SentencePiece vocabulary merges: without them it is refused, naming the key.
  const gguf::File no_scores = reparse(with(f, "tokenizer.ggml.scores", std::nullopt), "no scores", b3);
  CHECK_THROWS_WITH(gio::load_gguf_tokenizer(no_scores), Catch::Contains("tokenizer.ggml.scores is missing"));
  const gguf::File charsmap =
      reparse(with(f, "tokenizer.ggml.precompiled_charsmap", gguf::Value::string("x")), "charsmap", b4);
  CHECK_THROWS_WITH(gio::load_gguf_tokenizer(charsmap), Catch::Contains("tokenizer.ggml.precompiled_charsmap"));
  std::string b5;
  const gguf::File short_scores =
      reparse(with(f, "tokenizer.ggml.scores", gguf::Value::f32s({0.0f, 1.0f})), "short", b5);
  CHECK_THROWS_WITH(gio::load_gguf_tokenizer(short_scores), Catch::Contains("2 entries"));
}

TEST_CASE("GGUF export refuses a SentencePiece-style tokenizer.json llama.cpp would read differently", "[gguf][spm]") {
  nlohmann::json tok = nlohmann::json::parse(read_file(kFixtures + "/tokenizers/llama2/tokenizer.json", "t"));
  tok["normalizer"] = {{"type", "NFKC"}};
  const gio::TokenizerFiles files{tok.dump(), "", "nfkc"};
  CHECK_THROWS_WITH(gio::tokenizer_to_gguf(files, nlohmann::json::object(), 1000), Catch::Contains("is not Llama's"));
}
