// Tests of the GPT-2 tokenizer: reference vectors, round trips, special tokens, errors, thread safety.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "lora_source_dir.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/gpt2_tokenizer.h"

using lora::tokenizer::GPT2Tokenizer;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

namespace {

const GPT2Tokenizer& gpt2() {
  static const GPT2Tokenizer tokenizer = GPT2Tokenizer::load_default();
  return tokenizer;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.is_open());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Sets an environment variable for one scope and puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The project's own copies (data/ and tests/fixtures/), so the tests need nothing outside the repository.
const fs::path kSharedGpt2 = fs::path(LORA_SOURCE_DIR) / "data" / "gpt2";
const fs::path kVectors = fs::path(LORA_TEST_DATA_DIR) / "tokenizer_vectors.jsonl";
const fs::path kShakespeare = fs::path(LORA_SOURCE_DIR) / "data" / "tinyshakespeare.txt";

}  // namespace

TEST_CASE("tokenizer: bytes_to_unicode table", "[tokenizer]") {
  using namespace lora::tokenizer;
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = byte_to_unicode(static_cast<uint8_t>(b));
    CHECK(cp >= 0x21);
    CHECK(cp <= 0x143);
    CHECK(unicode_to_byte(cp) == b);
    seen.insert(cp);
  }
  CHECK(seen.size() == 256);
  CHECK(byte_to_unicode(' ') == U'Ġ');
  CHECK(byte_to_unicode('\n') == U'Ċ');
  CHECK(byte_to_unicode('A') == U'A');
  CHECK(unicode_to_byte(U' ') == -1);
  CHECK(unicode_to_byte(0x144) == -1);
}

TEST_CASE("tokenizer: UTF-8 helpers agree on every scalar value", "[tokenizer]") {
  using namespace lora::tokenizer;
  int failures = 0;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    append_utf8(s, cp);
    size_t pos = 0;
    const bool ok = find_invalid_utf8(s) == std::string_view::npos && next_code_point(s, pos) == cp && pos == s.size();
    failures += ok ? 0 : 1;
  }
  CHECK(failures == 0);
  // Invalid forms (more in the encode test below): a surrogate, overlong, too large, truncated.
  for (const std::string bad : {"\xED\xBF\xBF", "\xE0\x9F\xBF", "\xF4\x90\x80\x80", "\xF0\x9F\x98"})
    CHECK(find_invalid_utf8(bad) == 0);
}

TEST_CASE("tokenizer: vocabulary", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.num_merges() == 50000);
  CHECK(tok.eot_token() == 50256);
  CHECK(tok.token_bytes(220) == " ");
  CHECK(tok.token_bytes(198) == "\n");
}

TEST_CASE("tokenizer: reproduces every reference vector", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  std::ifstream in(kVectors);
  REQUIRE(in.is_open());
  int cases = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto vector = nlohmann::json::parse(line);
    const auto text = vector.at("text").get<std::string>();
    const auto ids = vector.at("ids").get<Ids>();
    INFO("vector " << cases << ": " << line);
    CHECK(tok.encode(text) == ids);
    CHECK(tok.decode(ids) == text);
    ++cases;
  }
  CHECK(cases == 44);
}

TEST_CASE("tokenizer: published reference values", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  CHECK(tok.encode("Hello world") == Ids{15496, 995});
  CHECK(tok.encode("hello world") == Ids{31373, 995});
  CHECK(tok.encode(" Hello world") == Ids{18435, 995});
  CHECK(tok.encode("").empty());
}

TEST_CASE("tokenizer: Tiny Shakespeare token counts and round trip", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  const std::string text = read_text(kShakespeare);
  REQUIRE(text.size() == 1115394);
  const Ids ids = tok.encode(text);
  CHECK(ids.size() == 338025);  // figures from shared/data/README.md (nanoGPT's prepare.py)
  CHECK(tok.decode(ids) == text);
  const size_t split = 1003854;  // 90% of the characters (the file is ASCII)
  CHECK(tok.encode(std::string_view(text).substr(0, split)).size() == 301966);
  CHECK(tok.encode(std::string_view(text).substr(split)).size() == 36059);
}

TEST_CASE("tokenizer: random valid UTF-8 round-trips", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  std::mt19937 rng(20240601);
  // Code point pools: ASCII, whitespace of every kind (and U+180E/U+FEFF, which are not White_Space),
  // Latin, combining marks, Cyrillic, Arabic digits, CJK, Hangul, emoji, and anything at all.
  const std::vector<std::pair<char32_t, char32_t>> pools = {
      {0x20, 0x7E},     {0x00, 0x1F},     {0x80, 0x24F},      {0x300, 0x36F},   {0x400, 0x4FF},
      {0x660, 0x669},   {0x3040, 0x30FF}, {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3}, {0x1F300, 0x1F6FF},
      {0x2000, 0x206F}, {0xE000, 0xF8FF}, {0x10000, 0x10FFFF}};
  const std::vector<char32_t> specials = {' ',    '\n',   '\t',   '\r',   '\'',   0x85,   0xA0,  0x1680,
                                          0x180E, 0x2028, 0x2029, 0x202F, 0x3000, 0xFEFF, 0x200B};
  std::uniform_int_distribution<int> length(0, 48), choice(0, 9);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s;
    const int n = length(rng);
    for (int i = 0; i < n; ++i) {
      char32_t cp;
      if (choice(rng) < 3) {
        cp = specials[std::uniform_int_distribution<size_t>(0, specials.size() - 1)(rng)];
      } else {
        const auto [lo, hi] = pools[std::uniform_int_distribution<size_t>(0, pools.size() - 1)(rng)];
        cp = std::uniform_int_distribution<char32_t>(lo, hi)(rng);
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';  // surrogates are not scalar values
      }
      lora::tokenizer::append_utf8(s, cp);
    }
    const Ids ids = tok.encode(s);
    INFO("trial " << trial);
    const bool ids_ok = std::all_of(ids.begin(), ids.end(), [](int32_t id) { return id >= 0 && id < 50256; });
    REQUIRE(ids_ok);  // in the vocabulary, and never eot from plain text
    REQUIRE(tok.decode(ids) == s);
  }
}

TEST_CASE("tokenizer: long runs stay fast and round-trip", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  for (const std::string& s : {std::string(100000, 'a'), std::string(100000, ' '), std::string(100000, '7'),
                               std::string(100000, '!'), std::string(99999, '\n') + "x"}) {
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  CHECK(tok.encode(std::string(3000, ' ')) == Ids(3000, 220));  // GPT-2 has no multi-space tokens
}

TEST_CASE("tokenizer: <|endoftext|> is text unless allow_special", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  const Ids as_text = {27, 91, 437, 1659, 5239, 91, 29};
  CHECK(tok.encode("<|endoftext|>") == as_text);
  CHECK(tok.encode("<|endoftext|>", /*allow_special=*/true) == Ids{50256});
  CHECK(tok.decode(Ids{50256}) == "<|endoftext|>");
  CHECK(tok.decode(as_text) == "<|endoftext|>");

  // Between special tokens, each segment is encoded on its own.
  const Ids a = tok.encode("Hello world"), b = tok.encode(" Bye\n");
  Ids expected = a;
  expected.push_back(50256);
  expected.insert(expected.end(), b.begin(), b.end());
  expected.push_back(50256);
  CHECK(tok.encode("Hello world<|endoftext|> Bye\n<|endoftext|>", true) == expected);
  CHECK(tok.encode("<|endoftext|><|endoftext|>", true) == Ids{50256, 50256});
  CHECK(tok.encode("<|endoftext|", true) == tok.encode("<|endoftext|"));  // incomplete: plain text
  CHECK(tok.decode(expected) == "Hello world<|endoftext|> Bye\n<|endoftext|>");
}

TEST_CASE("tokenizer: invalid UTF-8 throws and names the byte offset", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  using Catch::Matchers::Contains;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xFF", "byte offset 0"},                 // never valid
      {"abc\x80", "byte offset 3"},              // stray continuation byte
      {"ok \xE2\x82", "byte offset 3"},          // truncated 3-byte sequence
      {"\xC0\xAF", "byte offset 0"},             // overlong '/'
      {"ab\xE0\x80\xAF", "byte offset 2"},       // overlong, 3 bytes
      {"x\xED\xA0\x80", "byte offset 1"},        // surrogate U+D800
      {"\xF4\x90\x80\x80", "byte offset 0"},     // above U+10FFFF
      {"h\xC3\xA9llo \xC3(", "byte offset 7"}};  // bad continuation after valid 'é'
  for (const auto& [text, where] : cases) {
    INFO("case with " << where);
    CHECK_THROWS_AS(tok.encode(text), lora::Error);
    CHECK_THROWS_WITH(tok.encode(text), Contains(where) && Contains("UTF-8"));
    CHECK_THROWS_AS(tok.encode(text, true), lora::Error);
  }
}

TEST_CASE("tokenizer: decode errors and partial characters", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(tok.decode(Ids{15496, 50257}), Contains("50257"));
  CHECK_THROWS_WITH(tok.decode(Ids{-1}), Contains("-1"));
  CHECK_THROWS_AS(tok.token_bytes(1 << 30), lora::Error);

  // An emoji takes several tokens; a prefix of them decodes to its raw, incomplete bytes.
  const std::string emoji = "\xF0\x9F\xA6\x99";  // U+1F999
  const Ids ids = tok.encode(emoji);
  REQUIRE(ids.size() > 1);
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string part = tok.decode(std::span<const int32_t>(ids).subspan(i, 1));
    CHECK(lora::tokenizer::find_invalid_utf8(part) != std::string_view::npos);
    joined += part;
  }
  CHECK(joined == emoji);
}

TEST_CASE("tokenizer: load_default honours LORA_TOKENIZER_DIR", "[tokenizer]") {
  using Catch::Matchers::Contains;
  {
    ScopedEnv env("LORA_TOKENIZER_DIR", kSharedGpt2.string());
    CHECK(GPT2Tokenizer::default_dir() == kSharedGpt2);
    CHECK(GPT2Tokenizer::load_default().encode("Hello world") == Ids{15496, 995});
  }
  {
    ScopedEnv env("LORA_TOKENIZER_DIR", "/nonexistent/tokenizer-dir");
    CHECK_THROWS_WITH(GPT2Tokenizer::load_default(), Contains("/nonexistent/tokenizer-dir/encoder.json"));
  }
}

TEST_CASE("tokenizer: missing or malformed files name the path", "[tokenizer]") {
  using Catch::Matchers::Contains;
  const fs::path encoder = kSharedGpt2 / "encoder.json", merges = kSharedGpt2 / "vocab.bpe";
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files("/no/such/encoder.json", merges), Contains("/no/such/encoder.json"));
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(encoder, "/no/such/vocab.bpe"), Contains("/no/such/vocab.bpe"));
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(kSharedGpt2, merges), Contains("directory"));

  const fs::path dir = fs::temp_directory_path() / ("lora_tokenizer_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
    return dir / name;
  };
  const fs::path bad_json = write("bad.json", "{\"a\": 0, ");
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(bad_json, merges), Contains(bad_json.string()) && Contains("JSON"));
  const fs::path bad_line = write("bad_line.bpe", "#version: 0.2\n\xC4\xA0 t\n\xC4\xA0t\n");
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(encoder, bad_line), Contains(bad_line.string()) && Contains("line 3"));
  const fs::path unknown = write("unknown.bpe", "#version: 0.2\nzqzqzqzqzq q\n");
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(encoder, unknown), Contains("line 2") && Contains("zqzqzqzqzq"));
  const fs::path repeated = write("repeated.bpe", "#version: 0.2\n\xC4\xA0 t\n\xC4\xA0 t\n");
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(encoder, repeated), Contains("line 3"));
  const fs::path out_of_order = write("order.bpe", "#version: 0.2\n\xC4\xA0t h\n\xC4\xA0 t\n");
  CHECK_THROWS_WITH(GPT2Tokenizer::from_files(encoder, out_of_order), Contains("line 3") && Contains("earlier merge"));
  fs::remove_all(dir);
}

TEST_CASE("tokenizer: cache is bounded and concurrent encodes agree", "[tokenizer]") {
  const GPT2Tokenizer& tok = gpt2();
  const std::string text = read_text(kShakespeare).substr(0, 400000);
  const Ids serial = tok.encode(text);
  CHECK(tok.cache_size() > 0);
  CHECK(tok.cache_size() <= GPT2Tokenizer::kMaxCacheEntries);

  const size_t before = tok.cache_size();
  tok.encode(" " + std::string(GPT2Tokenizer::kMaxCachedPieceBytes + 1, 'q'));
  CHECK(tok.cache_size() == before);  // long pieces are not cached

  // Four threads encode the same text from a cold cache, reading and filling it concurrently.
  tok.clear_cache();
  CHECK(tok.cache_size() == 0);
  std::vector<Ids> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) threads.emplace_back([&, t] { results[t] = tok.encode(text); });
  for (auto& thread : threads) thread.join();
  for (const Ids& ids : results) CHECK(ids == serial);
}
