// tokenize_gpt2: text on stdin -> GPT-2 token ids on stdout, or with --decode, token ids -> text.
//
//   echo "Hello world" | tokenize_gpt2            -> 15496 995 198
//   echo "15496, 995" | tokenize_gpt2 --decode    -> Hello world
//   tokenize_gpt2 --json < file.txt               -> {"ids": [...]}
//   tokenize_gpt2 --json < f.txt | tokenize_gpt2 --decode   -> the text of f.txt
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/tokenizer/gpt2_tokenizer.h"

namespace {

// Token ids separated by spaces, commas or newlines (so both "1 2 3" and "1, 2, 3" work), or the JSON
// that --json writes ({"ids": [...]}, or a bare [...]), so that encode and decode can be piped.
std::vector<int32_t> parse_ids(const std::string& input) {
  const size_t first = input.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (input[first] == '{' || input[first] == '[')) {
    try {
      const auto json = nlohmann::json::parse(input);
      return (json.is_object() ? json.at("ids") : json).get<std::vector<int32_t>>();
    } catch (const nlohmann::json::exception& e) {
      LORA_FAIL("the input looks like JSON but is not {{\"ids\": [...]}} or a list of ids: {}", e.what());
    }
  }
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < input.size()) {
    const size_t start = input.find_first_not_of(" \t\r\n,", pos);
    if (start == std::string::npos) break;
    size_t end = input.find_first_of(" \t\r\n,", start);
    if (end == std::string::npos) end = input.size();
    int32_t id = 0;
    const auto [stop, ec] = std::from_chars(input.data() + start, input.data() + end, id);
    LORA_CHECK(ec == std::errc() && stop == input.data() + end, "not a token id: '{}' (at byte {} of the input)",
               input.substr(start, end - start), start);
    ids.push_back(id);
    pos = end;
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GPT-2 byte-level BPE tokenizer: encode stdin to token ids, or decode ids to text."};
  bool decode = false, json = false, allow_special = false;
  app.add_flag("--decode,-d", decode,
               "Read token ids (space or comma separated, or the --json output) and write the text");
  app.add_flag("--json", json, R"(Write one JSON object: {"ids": [...]} or, with --decode, {"text": "..."})");
  app.add_flag("--allow-special", allow_special,
               "Encode each \"<|endoftext|>\" in the text as the special token 50256 (default: as plain text)");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto tokenizer = lora::tokenizer::GPT2Tokenizer::load_default();
    std::ios::sync_with_stdio(false);
    const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());

    if (decode) {
      const std::string text = tokenizer.decode(parse_ids(input));
      if (json) {
        // Ids that end inside a multi-byte character give invalid UTF-8, which JSON cannot hold:
        // those bytes are written as U+FFFD. Without --json the raw bytes are written as they are.
        std::cout << nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << '\n';
      } else {
        std::cout << text;
      }
      return 0;
    }

    const std::vector<int32_t> ids = tokenizer.encode(input, allow_special);
    if (json) {
      std::cout << nlohmann::json{{"ids", ids}}.dump() << '\n';
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << '\n';
    }
    return 0;
  } catch (const lora::Error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
