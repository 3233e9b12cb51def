// Tests of HFTokenizer against Hugging Face tokenizers: the trained fixtures of each family, exactly, and
// GPT-2's real files through load_tokenizer.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "lora_source_dir.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/hf_json.h"
#include "models/tokenizer/hf_normalizer.h"
#include "models/tokenizer/hf_pretokenizer.h"
#include "models/tokenizer/hf_regex.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/tokenizer.h"

using namespace lora::tokenizer;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(LORA_TEST_DATA_DIR) / "tokenizers";
const fs::path kGpt2Files = fs::path(LORA_SOURCE_DIR) / "data" / "gpt2";
const std::vector<std::string> kFamilies = {"gpt2", "roberta", "llama3", "qwen2", "llama2", "mistral", "spm_unk"};

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.is_open());
  return nlohmann::json::parse(in);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.is_open());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

const std::vector<std::string>& strings() {
  static const std::vector<std::string> s = read_json(kFixtures / "strings.json").get<std::vector<std::string>>();
  return s;
}

Ids concat(const Ids& a, const Ids& b, const Ids& c) {
  Ids out = a;
  out.insert(out.end(), b.begin(), b.end());
  out.insert(out.end(), c.begin(), c.end());
  return out;
}

std::string show(const Ids& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

// Compares everything expected.json holds for one tokenizer; returns the number of strings that matched
// in every respect, and reports the first mismatches.
size_t check_family(const std::string& name) {
  const auto tokenizer = load_tokenizer(kFixtures / name);
  const nlohmann::json expected = read_json(kFixtures / name / "expected.json");
  const Tokenizer& tok = *tokenizer;
  CHECK(tok.vocab_size() == expected["vocab_size"].get<size_t>());

  // Every id on its own, and the added tokens' strings.
  const auto token_decodes = expected["token_decodes"].get<std::vector<std::string>>();
  size_t bad_ids = 0;
  for (size_t id = 0; id < token_decodes.size(); ++id) {
    const Ids one = {static_cast<int32_t>(id)};
    if (tok.decode(one, {}) != token_decodes[id] && ++bad_ids <= 5)
      FAIL_CHECK(name << ": decode([" << id << "]) = \"" << tok.decode(one, {}) << "\", tokenizers: \""
                      << token_decodes[id] << "\"");
  }
  CHECK(bad_ids == 0);
  // (A normalized added token's string is its normalized form, which token_to_id does not know.)
  for (const auto& [id, token] : expected["added_tokens"].items())
    CHECK(tok.id_to_token(std::stoi(id)) == token.get<std::string>());

  // A 4000-character excerpt: one long piece where there is no pre-tokenizer.
  const std::string excerpt = read_text(fs::path(LORA_SOURCE_DIR) / "data" / "tinyshakespeare.txt").substr(0, 4000);
  CHECK(tok.encode(excerpt, {}) == expected["excerpt_ids"].get<Ids>());

  const Ids prefix = expected["special_prefix"].get<Ids>(), suffix = expected["special_suffix"].get<Ids>();
  size_t matched = 0, reported = 0;
  for (const auto& c : expected["cases"]) {
    const std::string& text = strings().at(c["i"].get<size_t>());
    const Ids ids = c["ids"].get<Ids>();
    const Ids ids_special = concat(prefix, ids, suffix);
    const Ids ids_no_parse = c.contains("ids_no_parse") ? c["ids_no_parse"].get<Ids>() : ids;
    const std::string decoded = c.contains("decoded") ? c["decoded"].get<std::string>() : text;
    const std::string decoded_skip = c.contains("decoded_skip") ? c["decoded_skip"].get<std::string>() : decoded;
    const Ids half(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(ids.size() / 2));

    std::vector<std::string> problems;
    const Ids got = tok.encode(text, {.add_special_tokens = false});
    if (got != ids) problems.push_back("encode: " + show(got) + " expected " + show(ids));
    const Ids got_special = tok.encode(text, {.add_special_tokens = true});
    if (got_special != ids_special)
      problems.push_back("encode with special tokens: " + show(got_special) + " expected " + show(ids_special));
    const Ids got_no_parse = tok.encode(text, {.parse_special_tokens = false});
    if (got_no_parse != ids_no_parse)
      problems.push_back("encode without parsing special tokens: " + show(got_no_parse) + " expected " +
                         show(ids_no_parse));
    if (const std::string d = tok.decode(ids_special, {}); d != decoded)
      problems.push_back("decode: \"" + d + "\" expected \"" + decoded + "\"");
    if (const std::string d = tok.decode(ids_special, {.skip_special_tokens = true}); d != decoded_skip)
      problems.push_back("decode skipping special tokens: \"" + d + "\" expected \"" + decoded_skip + "\"");
    if (const std::string d = tok.decode(half, {}); d != c["decoded_half"].get<std::string>())
      problems.push_back("decode of the first half: \"" + d + "\" expected \"" + c["decoded_half"].get<std::string>() +
                         "\"");
    if (c.contains("stream")) {
      IncrementalDecoder stream(tok);
      for (size_t k = 0; k < ids_special.size(); ++k) {
        const std::string got_text = stream.push(ids_special[k]);
        const auto& want = c["stream"][k];
        const std::string want_text = want.is_null() ? "" : want.get<std::string>();
        if (got_text != want_text) {
          problems.push_back("stream step " + std::to_string(k) + ": \"" + got_text + "\" expected \"" + want_text +
                             "\"");
          break;
        }
      }
    }
    if (problems.empty()) {
      ++matched;
    } else if (++reported <= 5) {
      std::string all;
      for (const auto& p : problems) all += "\n  " + p;
      FAIL_CHECK(name << ": text " << nlohmann::json(text).dump() << all);
    }
  }
  return matched;
}

}  // namespace

TEST_CASE("tokenizer.json: every fixture string matches tokenizers exactly", "[tokenizer]") {
  size_t total = 0, matched = 0;
  for (const std::string& name : kFamilies) {
    INFO("tokenizer " << name);
    const size_t m = check_family(name);
    CHECK(m == strings().size());
    matched += m;
    total += strings().size();
  }
  WARN("tokenizer.json parity: " << matched << " of " << total << " (strings x tokenizers) match exactly");
  CHECK(matched == total);
}

TEST_CASE("tokenizer.json: the fixtures load with the expected shape", "[tokenizer]") {
  const auto llama3 = HFTokenizer::from_file(kFixtures / "llama3" / "tokenizer.json");
  CHECK(llama3.byte_level());
  CHECK(llama3.bos_id() == llama3.token_to_id("<|begin_of_text|>"));
  CHECK(llama3.eos_id() == llama3.token_to_id("<|eot_id|>"));  // from tokenizer_config.json
  CHECK(llama3.is_special(*llama3.token_to_id("<|eot_id|>")));
  CHECK(!llama3.is_special(0));

  const auto qwen2 = HFTokenizer::from_file(kFixtures / "qwen2" / "tokenizer.json");
  CHECK(!qwen2.bos_id());  // bos_token: null
  CHECK(qwen2.eos_id() == qwen2.token_to_id("<|im_end|>"));

  const auto mistral = HFTokenizer::from_file(kFixtures / "mistral" / "tokenizer.json");
  CHECK(!mistral.byte_level());
  CHECK(mistral.bos_id() == 1);  // no tokenizer_config.json: the template's leading token
  CHECK(!mistral.eos_id());
  const auto spm = HFTokenizer::from_file(kFixtures / "spm_unk" / "tokenizer.json");
  CHECK(spm.bos_id() == 1);
  CHECK(spm.eos_id() == 2);  // "<s> $A </s>"
  CHECK_THAT(spm.describe(), Catch::Contains("spm_unk") && Catch::Contains("BPE"));
}

TEST_CASE("tokenizer.json: GPT-2's real files match the GPT-2 reference vectors", "[tokenizer]") {
  // The 50257-token vocabulary as transformers' conversion writes it, and as vocab.json + merges.txt.
  const auto hf = HFTokenizer::from_json(gpt2_tokenizer_json(kGpt2Files / "encoder.json", kGpt2Files / "vocab.bpe"),
                                         "gpt2 tokenizer.json");
  CHECK(hf.vocab_size() == 50257);
  CHECK(hf.num_merges() == 50000);
  const fs::path dir = fs::temp_directory_path() / ("lora_tokenizer_hf_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kGpt2Files / "encoder.json", dir / "vocab.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kGpt2Files / "vocab.bpe", dir / "merges.txt", fs::copy_options::overwrite_existing);
  const auto layout = load_tokenizer(dir);
  CHECK_THAT(layout->describe(), Catch::Contains("vocab.json") && Catch::Contains("merges.txt"));
  CHECK(layout->eos_id() == 50256);

  std::ifstream in(fs::path(LORA_TEST_DATA_DIR) / "tokenizer_vectors.jsonl");
  REQUIRE(in.is_open());
  int cases = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto vector = nlohmann::json::parse(line);
    const auto text = vector.at("text").get<std::string>();
    const auto ids = vector.at("ids").get<Ids>();
    INFO("vector " << cases << ": " << line);
    CHECK(hf.encode(text, {}) == ids);
    CHECK(hf.decode(ids, {}) == text);
    CHECK(layout->encode(text, {}) == ids);
    CHECK(layout->decode(ids, {}) == text);
    ++cases;
  }
  CHECK(cases == 44);

  // Tiny Shakespeare through both: the same ids as GPT2Tokenizer.
  const std::string shakespeare = read_text(fs::path(LORA_SOURCE_DIR) / "data" / "tinyshakespeare.txt");
  const Ids ids = hf.encode(shakespeare, {});
  CHECK(ids.size() == 338025);
  CHECK(ids == GPT2Tokenizer::load_default().encode(shakespeare));
  CHECK(hf.decode(ids, {}) == shakespeare);
  fs::remove_all(dir);
}

TEST_CASE("tokenizer.json: special tokens parse unless asked not to", "[tokenizer]") {
  const auto tok = load_tokenizer(kFixtures / "llama3");
  const int32_t eot = *tok->token_to_id("<|eot_id|>");
  const Ids with = tok->encode("a<|eot_id|>b", {});
  CHECK(std::count(with.begin(), with.end(), eot) == 1);
  const Ids without = tok->encode("a<|eot_id|>b", {.parse_special_tokens = false});
  CHECK(std::count(without.begin(), without.end(), eot) == 0);
  CHECK(tok->decode(without, {}) == "a<|eot_id|>b");
  CHECK(tok->decode(with, {.skip_special_tokens = true}) == "ab");

  // GPT2Tokenizer through the interface parses by default too, like tokenizers' GPT-2.
  const GPT2Tokenizer gpt2 = GPT2Tokenizer::load_default();
  const Tokenizer& as_interface = gpt2;
  CHECK(as_interface.encode("<|endoftext|>", {}) == Ids{50256});
  CHECK(as_interface.encode("<|endoftext|>", {.parse_special_tokens = false}).size() == 7);
  CHECK(gpt2.encode("<|endoftext|>").size() == 7);  // its own encode() keeps encoder.py's default
  CHECK(as_interface.decode(Ids{15496, 50256}, {.skip_special_tokens = true}) == "Hello");
  CHECK(as_interface.id_to_token(220) == "\xC4\xA0");  // "Ġ"
  CHECK(as_interface.token_to_id("\xC4\xA0the") == 262);
}

TEST_CASE("tokenizer.json: incremental decoding waits for whole characters", "[tokenizer]") {
  for (const std::string& name : {std::string("gpt2"), std::string("llama2"), std::string("mistral")}) {
    INFO(name);
    const auto tok = load_tokenizer(kFixtures / name);
    const std::string text = "Caf\xC3\xA9 \xF0\x9F\xA6\x99 \xE4\xB8\xAD\xE6\x96\x87 end";
    const Ids ids = tok->encode(text, {});
    IncrementalDecoder stream(*tok);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string part = stream.push(id);
      CHECK(find_invalid_utf8(part) == std::string_view::npos);
      CHECK(part.find("\xEF\xBF\xBD") == std::string::npos);
      streamed += part;
    }
    streamed += stream.finish();
    CHECK(streamed == tok->decode(ids, {}));
  }
  // GPT2Tokenizer's decode returns raw bytes; the stream still emits whole characters only.
  const GPT2Tokenizer gpt2 = GPT2Tokenizer::load_default();
  const std::string emoji = "\xF0\x9F\xA6\x99!";
  IncrementalDecoder stream(gpt2);
  std::string streamed;
  for (const int32_t id : gpt2.encode(emoji)) {
    const std::string part = stream.push(id);
    CHECK(find_invalid_utf8(part) == std::string_view::npos);
    streamed += part;
  }
  CHECK(streamed + stream.finish() == emoji);
  // An unfinished character is flushed by finish().
  IncrementalDecoder partial(gpt2);
  const Ids ids = gpt2.encode(emoji);
  for (size_t i = 0; i + 2 < ids.size(); ++i) CHECK(partial.push(ids[i]).empty());
  CHECK(!partial.finish().empty());
}

TEST_CASE("tokenizer.json: the regex translation matches Oniguruma on the recorded cases", "[tokenizer]") {
  const nlohmann::json fixture = read_json(kFixtures / "regex_cases.json");
  const auto texts = fixture["texts"].get<std::vector<std::string>>();
  int compared = 0, refused = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string pattern = c["pattern"].get<std::string>();
    INFO("pattern " << pattern);
    if (c.contains("error")) {
      CHECK_THROWS_AS(hf::Pattern::regex(pattern, "test"), lora::Error);
      continue;
    }
    std::optional<hf::Pattern> compiled;
    try {
      compiled.emplace(hf::Pattern::regex(pattern, "test"));
    } catch (const lora::Error& e) {
      ++refused;  // refusing is allowed; matching differently is not
      WARN("refused: " << e.what());
      continue;
    }
    for (size_t t = 0; t < texts.size(); ++t) {
      INFO("text " << nlohmann::json(texts[t]).dump());
      std::vector<std::pair<size_t, size_t>> matches;
      compiled->find_all(texts[t], matches);
      std::vector<hf::Piece> pieces;
      hf::split_pieces(texts[t], true, matches, false, hf::SplitBehavior::kIsolated, pieces);
      std::vector<std::string> got;
      for (const auto& p : pieces) got.emplace_back(p.text);
      CHECK(got == c["splits"][t].get<std::vector<std::string>>());
    }
    ++compared;
  }
  CHECK(compared >= 20);
  CHECK(refused <= 3);

  // Every split behaviour, inverted or not.
  const std::vector<std::pair<std::string, hf::SplitBehavior>> behaviors = {
      {"removed", hf::SplitBehavior::kRemoved},
      {"isolated", hf::SplitBehavior::kIsolated},
      {"merged_with_previous", hf::SplitBehavior::kMergedWithPrevious},
      {"merged_with_next", hf::SplitBehavior::kMergedWithNext},
      {"contiguous", hf::SplitBehavior::kContiguous}};
  for (const auto& c : fixture["behaviors"]) {
    const std::string pattern = c["pattern"].get<std::string>();
    const hf::Pattern compiled =
        c["kind"] == "Regex" ? hf::Pattern::regex(pattern, "test") : hf::Pattern::literal(pattern, "test");
    const auto behavior = std::find_if(behaviors.begin(), behaviors.end(),
                                       [&](const auto& b) { return b.first == c["behavior"].get<std::string>(); });
    REQUIRE(behavior != behaviors.end());
    for (size_t t = 0; t < texts.size(); ++t) {
      INFO("pattern " << pattern << ", " << behavior->first << (c["invert"].get<bool>() ? ", inverted" : "")
                      << ", text " << nlohmann::json(texts[t]).dump());
      std::vector<std::pair<size_t, size_t>> matches;
      compiled.find_all(texts[t], matches);
      std::vector<hf::Piece> pieces;
      hf::split_pieces(texts[t], true, matches, c["invert"].get<bool>(), behavior->second, pieces);
      std::vector<std::string> got;
      for (const auto& p : pieces) got.emplace_back(p.text);
      CHECK(got == c["splits"][t].get<std::vector<std::string>>());
    }
  }

  // The Replace normalizer.
  for (const auto& c : fixture["replaces"]) {
    const nlohmann::json json = {
        {"type", "Replace"}, {"pattern", {{c["kind"].get<std::string>(), c["pattern"]}}}, {"content", c["content"]}};
    const std::string label = "test";
    const hf::Normalizer normalizer = hf::Normalizer::from_json(hf::JsonView(json, "normalizer", label));
    for (size_t t = 0; t < texts.size(); ++t) {
      INFO("Replace " << c["pattern"] << " with " << c["content"] << " in " << nlohmann::json(texts[t]).dump());
      std::string text = texts[t];
      normalizer.normalize(text);
      CHECK(text == c["outputs"][t].get<std::string>());
    }
  }
}

TEST_CASE("tokenizer.json: Unicode classes match Oniguruma on every code point", "[tokenizer]") {
  // unicode_classes.json: the code points tokenizers' Oniguruma puts in each general category, \\d, \\s.
  const nlohmann::json fixture = read_json(kFixtures / "unicode_classes.json");
  std::string all;  // every scalar value once, in order
  for (char32_t c = 0; c <= 0x10FFFF; ++c)
    if (c < 0xD800 || c > 0xDFFF) append_utf8(all, c);
  for (const auto& [name, ranges_json] : fixture.items()) {
    if (name == "tokenizers_version") continue;
    INFO("class " << name);
    const std::string pattern = name == "d" || name == "s" ? "\\" + name : "\\p{" + name + "}";
    const hf::Pattern compiled = hf::Pattern::regex(pattern, "test");
    std::vector<std::pair<size_t, size_t>> matches;
    compiled.find_all(all, matches);
    std::vector<char32_t> got;  // as ranges [first, last, ...], like the fixture
    size_t longer = 0;          // matches of more than one character (none expected)
    for (const auto& [start, end] : matches) {
      size_t pos = start;
      const char32_t c = next_code_point(all, pos);
      longer += pos != end;
      if (!got.empty() && got.back() == c - 1)
        got.back() = c;
      else
        got.insert(got.end(), {c, c});
    }
    CHECK(longer == 0);
    const auto want = ranges_json.get<std::vector<char32_t>>();
    if (got != want) {
      // Print what Oniguruma has and this does not, in the form hf_regex_tables.cpp takes.
      std::vector<bool> in_got(0x110000, false);
      for (size_t i = 0; i + 1 < got.size(); i += 2)
        for (char32_t c = got[i]; c <= got[i + 1]; ++c) in_got[c] = true;
      std::string missing;
      for (size_t i = 0; i + 1 < want.size(); i += 2)
        for (char32_t c = want[i]; c <= want[i + 1]; ++c)
          if (!in_got[c]) missing += fmt::format("\\x{{{:X}}}", static_cast<uint32_t>(c));
      FAIL_CHECK("\\p{" << name << "} differs from Oniguruma; characters it lacks: " << missing.substr(0, 2000));
    }
  }
}

TEST_CASE("tokenizer.json: Unicode normalization matches tokenizers' tables", "[tokenizer]") {
  // normalization.json: FNV-1a hashes of tokenizers' outputs on every code point, every mark (category M)
  // between "a" and a probe mark, and every two-character canonical decomposition.
  const nlohmann::json fixture = read_json(kFixtures / "normalization.json");
  const nlohmann::json classes = read_json(kFixtures / "unicode_classes.json");
  auto to_utf8 = [](std::initializer_list<char32_t> cs) {
    std::string s;
    for (const char32_t c : cs) append_utf8(s, c);
    return s;
  };
  std::vector<std::string> singles, probes, pairs;
  for (char32_t c = 0; c <= 0x10FFFF; ++c)
    if (c < 0xD800 || c > 0xDFFF) singles.push_back(to_utf8({c}));
  const auto marks = classes["M"].get<std::vector<char32_t>>();
  for (size_t i = 0; i + 1 < marks.size(); i += 2)
    for (char32_t c = marks[i]; c <= marks[i + 1]; ++c)
      for (const char32_t m : fixture["probe_marks"].get<std::vector<char32_t>>()) {
        probes.push_back(to_utf8({U'a', c, m}));
        probes.push_back(to_utf8({U'a', m, c}));
      }
  const auto pair_points = fixture["pairs"].get<std::vector<char32_t>>();
  for (size_t i = 0; i + 1 < pair_points.size(); i += 2) pairs.push_back(to_utf8({pair_points[i], pair_points[i + 1]}));

  auto hash = [](const std::vector<std::string>& texts, hf::Normalizer::Kind form) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (const std::string& t : texts) {
      for (const char byte : hf::unicode_normalize(t, form) + std::string(1, '\0'))
        h = (h ^ static_cast<unsigned char>(byte)) * 0x100000001B3ull;
    }
    return fmt::format("{:016x}", h);
  };
  const std::vector<std::pair<std::string, hf::Normalizer::Kind>> forms = {{"NFC", hf::Normalizer::Kind::kNFC},
                                                                           {"NFD", hf::Normalizer::Kind::kNFD},
                                                                           {"NFKC", hf::Normalizer::Kind::kNFKC},
                                                                           {"NFKD", hf::Normalizer::Kind::kNFKD}};
  for (const auto& [name, form] : forms) {
    INFO(name << " (a mismatch: rerun the comparison that made kUnknownToTokenizers in hf_normalizer.cpp)");
    CHECK(hash(singles, form) == fixture[name]["code_points"].get<std::string>());
    CHECK(hash(probes, form) == fixture[name]["marks"].get<std::string>());
    CHECK(hash(pairs, form) == fixture[name]["pairs"].get<std::string>());
  }
}

TEST_CASE("tokenizer.json: concurrent encodes agree", "[tokenizer]") {
  const auto tok = load_tokenizer(kFixtures / "qwen2");
  const std::string text = read_text(fs::path(LORA_SOURCE_DIR) / "data" / "tinyshakespeare.txt").substr(0, 200000);
  const Ids serial = tok->encode(text, {});
  std::vector<Ids> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) threads.emplace_back([&, t] { results[t] = tok->encode(text, {}); });
  for (auto& thread : threads) thread.join();
  for (const Ids& ids : results) CHECK(ids == serial);
  CHECK(tok->decode(serial, {}) == text);
}
