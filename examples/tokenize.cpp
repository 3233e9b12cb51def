// tokenize: text on stdin -> token ids on stdout, or with --decode, token ids -> text, with any tokenizer
// (a Hugging Face tokenizer.json, a model folder, or GPT-2's files, the default).
//
//   echo "Hello world" | tokenize                               -> 15496 995 198
//   echo "15496, 995" | tokenize --decode                       -> Hello world
//   tokenize --json < file.txt                                  -> {"ids": [...]}
//   tokenize --json < f.txt | tokenize --decode                 -> the text of f.txt
//   tokenize --tokenizer path/to/Llama-3 --add-special-tokens   -> 128000 ... (BOS first)
//   tokenize --data train.jsonl --json                          -> {"input_ids": [...], "labels": [...]} per
//                                                                  example, as fine-tuning sees it
//
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/tokenizer.h"
#include "train/data/load_examples.h"

namespace {

constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();

// One id of the JSON input: an integer in 0..2^31-1 (no fraction, no sign, nothing wider).
int32_t json_id(const nlohmann::json& value, size_t index) {
  const std::string shown = value.dump();
  LORA_CHECK(value.is_number(), "id {} of the input is not a number: {}", index, shown);
  LORA_CHECK(value.is_number_integer(), "id {} of the input is not an integer: {}", index, shown);
  LORA_CHECK(!value.is_number_unsigned() || value.get<uint64_t>() <= static_cast<uint64_t>(kMaxId),
             "id {} of the input is out of range: {} (token ids are 0..{})", index, shown, kMaxId);
  const auto id = value.get<int64_t>();
  LORA_CHECK(id >= 0, "id {} of the input is negative: {}", index, shown);
  return static_cast<int32_t>(id);
}

// One id of the text input, e.g. "42": digits only.
int32_t text_id(std::string_view token, size_t offset) {
  LORA_CHECK(!token.starts_with('-'), "token id '{}' (at byte {} of the input) is negative", token, offset);
  int64_t id = 0;
  const auto [stop, ec] = std::from_chars(token.data(), token.data() + token.size(), id);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && stop == token.data() + token.size() && id > kMaxId))
    LORA_FAIL("token id '{}' (at byte {} of the input) is out of range (token ids are 0..{})", token, offset, kMaxId);
  LORA_CHECK(ec == std::errc() && stop == token.data() + token.size(),
             "not a token id: '{}' (at byte {} of the input; token ids are whole numbers 0..{})", token, offset,
             kMaxId);
  return static_cast<int32_t>(id);
}

// Token ids separated by spaces, commas or newlines (so both "1 2 3" and "1, 2, 3" work), or the JSON
// that --json writes ({"ids": [...]}, or a bare [...]), so that encode and decode can be piped.
std::vector<int32_t> parse_ids(const std::string& input) {
  const size_t first = input.find_first_not_of(" \t\r\n");
  std::vector<int32_t> ids;
  if (first != std::string::npos && (input[first] == '{' || input[first] == '[')) {
    nlohmann::json json = lora::parse_json(input, "the input (it looks like JSON)");
    if (json.is_object()) {
      LORA_CHECK(json.contains("ids"), "the input is a JSON object without \"ids\"");
      json = json["ids"];
    }
    LORA_CHECK(json.is_array(), "the input is not {{\"ids\": [...]}} or a list of ids");
    for (size_t i = 0; i < json.size(); ++i) ids.push_back(json_id(json[i], i));
    return ids;
  }
  size_t pos = 0;
  while (pos < input.size()) {
    const size_t start = input.find_first_not_of(" \t\r\n,", pos);
    if (start == std::string::npos) break;
    size_t end = input.find_first_of(" \t\r\n,", start);
    if (end == std::string::npos) end = input.size();
    ids.push_back(text_id(std::string_view(input).substr(start, end - start), start));
    pos = end;
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Tokenize stdin into token ids, or decode ids (--decode) into text, with a Hugging Face "
      "tokenizer.json, a model folder or GPT-2's files."};
  std::string tokenizer_path = lora::tokenizer::GPT2Tokenizer::default_dir().string();
  bool decode = false, json = false, allow_special = false, add_special = false, skip_special = false;
  app.add_option("--tokenizer,-t", tokenizer_path,
                 "tokenizer.json, or a folder holding tokenizer.json, vocab.json + merges.txt or encoder.json + "
                 "vocab.bpe (default: GPT-2's files; $LORA_TOKENIZER_DIR overrides)")
      ->capture_default_str();
  app.add_flag("--decode,-d", decode,
               "Read token ids (space or comma separated, or the --json output) and write the text");
  app.add_flag("--json", json, R"(Write one JSON object: {"ids": [...]} or, with --decode, {"text": "..."})");
  app.add_flag("--allow-special", allow_special,
               "Encode special tokens written in the text (\"<|endoftext|>\", \"<s>\") as their ids (default: "
               "as plain text, so that input cannot inject them)");
  app.add_flag("--add-special-tokens", add_special,
               "Add the tokenizer's special tokens around the text, e.g. Llama's BOS (GPT-2 adds none)");
  app.add_flag("--skip-special-tokens", skip_special, "With --decode: leave special tokens out of the text");
  std::string data_path, format_name = "auto", template_path;
  bool train_on_inputs = false;
  app.add_option("--data", data_path,
                 "Read a fine-tuning data file (JSONL or a .json array of text, prompt/completion, Alpaca, messages "
                 "or ShareGPT records) instead of stdin and write each example as training sees it, one JSON line "
                 "each: {\"input_ids\": [...], \"labels\": [...]} (labels -100 where not trained)");
  app.add_option("--format", format_name, "With --data: auto, text, prompt_completion, alpaca, messages or sharegpt")
      ->capture_default_str();
  app.add_flag("--train-on-inputs", train_on_inputs, "With --data: train on every token (prompts and user turns too)");
  app.add_option("--chat-template", template_path,
                 "With --data of conversations (alpaca, messages, sharegpt): the Jinja chat template, e.g. "
                 "data/chat_templates/chatml.jinja (default: the --tokenizer folder's own, when it has one)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!decode && skip_special) LORA_FAIL("--skip-special-tokens applies to --decode only");
    if (decode && (allow_special || add_special))
      LORA_FAIL("--allow-special and --add-special-tokens apply to encoding only");
    if (data_path.empty() && (format_name != "auto" || train_on_inputs || !template_path.empty()))
      LORA_FAIL("--format, --train-on-inputs and --chat-template apply to --data only");
    if (!data_path.empty() && (decode || allow_special || add_special))
      LORA_FAIL("--data tokenizes as fine-tuning does: it takes no --decode, --allow-special or --add-special-tokens");
    const lora::train::DataFormat format = lora::train::parse_data_format(format_name);
    const auto tokenizer = lora::tokenizer::load_tokenizer(tokenizer_path);
    std::ios::sync_with_stdio(false);

    if (!data_path.empty()) {
      // --json is implied: one object a line.
      const lora::train::DetectedFormat detected = lora::train::detect_data_format(data_path, format);
      std::cerr << "data '" << data_path << "': " << detected.why << '\n';
      // The template: --chat-template, else the tokenizer folder's own (only conversations need one).
      const std::filesystem::path folder = std::filesystem::is_directory(tokenizer_path)
                                               ? std::filesystem::path(tokenizer_path)
                                               : std::filesystem::path(tokenizer_path).parent_path();
      std::optional<lora::chat::ChatTemplate> chat_template;
      if (!template_path.empty()) {
        chat_template.emplace(lora::chat::ChatTemplate::from_file(template_path, folder.string()));
      } else if (lora::train::is_conversation_format(detected.format)) {
        chat_template = lora::chat::ChatTemplate::from_model_folder(folder.string());
      }
      const lora::train::LoadedExamples loaded =
          lora::train::load_examples(data_path, *tokenizer,
                                     {.format = detected.format,
                                      .train_on_inputs = train_on_inputs,
                                      .chat_template = chat_template ? &*chat_template : nullptr});
      for (const lora::train::Example& example : loaded.examples) {
        std::cout << nlohmann::json{{"input_ids", example.ids}, {"labels", example.labels}}.dump() << '\n';
      }
      return 0;
    }
    const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());

    if (decode) {
      const std::string text = tokenizer->decode(parse_ids(input), {.skip_special_tokens = skip_special});
      if (json) {
        // Ids that end inside a multi-byte character can leave invalid UTF-8 (GPT-2's raw bytes), which
        // JSON cannot hold: those bytes are written as U+FFFD. Without --json the text is written as is.
        std::cout << nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << '\n';
      } else {
        std::cout << text;
      }
      return 0;
    }

    const std::vector<int32_t> ids =
        tokenizer->encode(input, {.add_special_tokens = add_special, .parse_special_tokens = allow_special});
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
