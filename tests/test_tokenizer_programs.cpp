// End-to-end runs of tokenize: encode and decode with each kind of tokenizer,
// the special-token flags, and the refusal of ids that are negative, fractional or wider than 32 bits.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "models/tokenizer/tokenizer.h"
#include "tests/program_runner.h"

using namespace lora::testing;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(LORA_TEST_DATA_DIR) / "tokenizers";

Ids ids_of(const RunResult& r) {
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return last_json_line(r.out)["ids"].get<Ids>();
}

}  // namespace

TEST_CASE("tokenize: GPT-2 by default", "[examples][tokenizer]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  CHECK(ids_of(run(tokenize, "--json", "Hello world")) == Ids{15496, 995});
  CHECK(ids_of(run(tokenize, "--json --allow-special", "<|endoftext|>")) == Ids{50256});
  CHECK(ids_of(run(tokenize, "--json", "<|endoftext|>")).size() == 7);  // plain text unless --allow-special

  const RunResult plain = run(tokenize, "", "Hello world");
  CHECK(plain.out == "15496 995\n");
  const RunResult back = run(tokenize, "--decode", "15496, 995");
  CHECK(back.exit_code == 0);
  CHECK(back.out == "Hello world");
  const RunResult json_back = run(tokenize, "--decode --json", "{\"ids\": [15496, 995, 50256]}");
  CHECK(last_json_line(json_back.out)["text"] == "Hello world<|endoftext|>");
  CHECK(run(tokenize, "--decode --skip-special-tokens", "15496 50256").out == "Hello");
}

TEST_CASE("tokenize: a tokenizer.json folder, with and without special tokens", "[examples][tokenizer]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  for (const char* name : {"llama3", "llama2", "qwen2"}) {
    INFO(name);
    const auto library = lora::tokenizer::load_tokenizer(kFixtures / name);
    const std::string text = "Hello <s> world, <|im_start|> 123456\n";
    const std::string where = " --tokenizer " + quote(kFixtures / name);
    CHECK(ids_of(run(tokenize, "--json" + where, text)) == library->encode(text, {.parse_special_tokens = false}));
    CHECK(ids_of(run(tokenize, "--json --allow-special" + where, text)) == library->encode(text, {}));
    const Ids with_bos = ids_of(run(tokenize, "--json --add-special-tokens" + where, text));
    CHECK(with_bos == library->encode(text, {.add_special_tokens = true, .parse_special_tokens = false}));
    // The JSON output pipes back into --decode.
    const RunResult back =
        run(tokenize, "--decode --skip-special-tokens" + where, nlohmann::json{{"ids", with_bos}}.dump());
    CHECK(back.exit_code == 0);
    CHECK(back.out == library->decode(with_bos, {.skip_special_tokens = true}));
  }
  // A tokenizer.json file given directly.
  CHECK(ids_of(run(tokenize, "--json --tokenizer " + quote(kFixtures / "mistral" / "tokenizer.json"), "Hi")) ==
        lora::tokenizer::load_tokenizer(kFixtures / "mistral")->encode("Hi", {}));
}

TEST_CASE("tokenize --decode refuses ids that are negative, fractional or too wide", "[examples][tokenizer]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"-1", "negative"},
      {"15496 -7", "'-7'"},
      {"4294967296", "out of range"},
      {"4294967297", "4294967297"},
      {"2147483648", "out of range"},
      {"99999999999999999999999", "out of range"},
      {"1.5", "'1.5'"},
      {"1e3", "'1e3'"},
      {"abc", "'abc'"},
      {"[1.5]", "not an integer"},
      {"[1.0]", "not an integer"},
      {"[-1]", "negative"},
      {"[4294967296]", "out of range"},
      {"[4294967301]", "4294967301"},
      {"{\"ids\": [2147483648]}", "out of range"},
      {"{\"ids\": [\"12\"]}", "not a number"},
      {"{\"ids\": [true]}", "not a number"},
      {"{\"text\": \"x\"}", "ids"},
      {"[1, 2", "JSON"},
      {"99999", "99999"},  // outside the vocabulary
  };
  // The small GPT-2-style fixture loads in a millisecond, where GPT-2's own files take a third of a second.
  const std::string small = " --tokenizer " + quote(kFixtures / "gpt2");
  for (const auto& [input, message] : bad) {
    INFO("input: " << input);
    const RunResult r = run(tokenize, "--decode" + small, input);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains(message));
    CHECK(r.out.empty());
  }
}

TEST_CASE("tokenize: help, bad flags and bad tokenizer paths", "[examples][tokenizer]") {
  REQUIRE_PROGRAM(tokenize, "tokenize");
  const RunResult help = run(tokenize, "--help");
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Catch::Contains("--tokenizer") && Catch::Contains("--add-special-tokens") &&
                           Catch::Contains("--skip-special-tokens"));
  CHECK(run(tokenize, "--bogus").exit_code != 0);
  const RunResult missing = run(tokenize, "--tokenizer /nonexistent/model", "x");
  CHECK(missing.exit_code != 0);
  CHECK_THAT(missing.err, Catch::Contains("/nonexistent/model"));
  const RunResult empty = run(tokenize, "--tokenizer " + quote(scratch_dir()), "x");
  CHECK(empty.exit_code != 0);
  CHECK_THAT(empty.err, Catch::Contains("tokenizer.json") && Catch::Contains("vocab.json + merges.txt"));
  const RunResult invalid = run(tokenize, "", "ab\xFF");
  CHECK(invalid.exit_code != 0);
  CHECK_THAT(invalid.err, Catch::Contains("byte offset 2"));
  CHECK(run(tokenize, "--skip-special-tokens", "x").exit_code != 0);
}
