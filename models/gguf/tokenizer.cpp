// GGUF tokenizer metadata <-> Hugging Face tokenizer.json, for byte-level BPE vocabularies.
#include "models/gguf/tokenizer.h"
#include "core/json.h"

#include <map>
#include <optional>

#include "core/error.h"
#include "models/tokenizer/hf_tokenizer.h"

namespace lora::models::gguf_io {
namespace {

using gguf::Value;
using nlohmann::json;

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The pre-tokenizers llama.cpp knows by name (src/llama-vocab.cpp), as transformers' tokenizer.json
// spells them. llama.cpp's regexes are these with the case-insensitive group spelled out.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

struct PreTokenizer {
  const char* name;    // tokenizer.ggml.pre
  json pre_tokenizer;  // tokenizer.json's
  json normalizer;     // null or NFC
  bool ignore_merges;
};

json split(const char* regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

const std::vector<PreTokenizer>& known_pre_tokenizers() {
  static const std::vector<PreTokenizer> table = {
      {"gpt-2", byte_level(true), nullptr, false},
      {"llama-bpe", {{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Regex), byte_level(false)}}}, nullptr, true},
      {"qwen2",
       {{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Regex), byte_level(false)}}},
       {{"type", "NFC"}},
       false},
      {"smollm", {{"type", "Sequence"}, {"pretokenizers", {split("\\p{N}"), byte_level(true)}}}, nullptr, false},
  };
  return table;
}

// What decides how a pre-tokenizer splits: each component's type and its splitting fields, flattened.
std::string signature(const json& pre) {
  if (pre.is_null()) return "none";
  const std::string type = pre.value("type", "");
  if (type == "Sequence") {
    std::string s;
    for (const json& p : pre.value("pretokenizers", json::array())) s += signature(p) + ";";
    return s;
  }
  if (type == "ByteLevel")
    return fmt::format("ByteLevel(regex={},prefix={})", pre.value("use_regex", true),
                       pre.value("add_prefix_space", false));
  if (type == "Split") {
    const json& pattern = pre.value("pattern", json::object());
    const std::string regex =
        pattern.contains("Regex") ? pattern["Regex"].get<std::string>() : "string:" + pattern.value("String", "");
    return fmt::format("Split({},{},{})", regex, pre.value("behavior", ""), pre.value("invert", false));
  }
  if (type == "Digits" && pre.value("individual_digits", false)) return signature(split("\\p{N}"));
  return type;
}

std::optional<std::string> token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

json parse(const std::string& text, const std::string& what) {
  return parse_json(text, what);
}

}  // namespace

std::vector<std::pair<std::string, Value>> tokenizer_to_gguf(const TokenizerFiles& files, const json& config,
                                                             int64_t vocab_size) {
  const json tok = parse(files.tokenizer_json, "tokenizer.json of " + files.source);
  const json cfg = files.tokenizer_config_json.empty()
                       ? json::object()
                       : parse(files.tokenizer_config_json, "tokenizer_config.json of " + files.source);
  LORA_CHECK(tok.is_object() && tok.contains("model") && tok["model"].value("type", "") == "BPE",
             "GGUF export: the tokenizer of {} is not a BPE tokenizer.json", files.source);
  const json& model = tok["model"];
  LORA_CHECK(!model.value("byte_fallback", false),
             "GGUF export: the tokenizer of {} is a SentencePiece-style BPE "
             "(byte_fallback, as Llama 2 and Mistral have): not written to GGUF yet",
             files.source);
  // The pre-tokenizer by llama.cpp's name.
  const std::string sig = signature(tok.value("pre_tokenizer", json()));
  const PreTokenizer* pre = nullptr;
  for (const PreTokenizer& p : known_pre_tokenizers()) {
    if (signature(p.pre_tokenizer) == sig) pre = &p;
  }
  LORA_CHECK(pre != nullptr,
             "GGUF export: the pre-tokenizer of {} ({}) is not one llama.cpp knows by name (gpt-2, "
             "llama-bpe, qwen2, smollm)",
             files.source, sig);

  // Tokens: the vocabulary, the added tokens, unused padding up to the model's vocabulary.
  const json& vocab = model.value("vocab", json::object());
  int64_t n = vocab_size;
  for (const auto& [text, id] : vocab.items()) n = std::max<int64_t>(n, id.get<int64_t>() + 1);
  for (const json& a : tok.value("added_tokens", json::array()))
    n = std::max<int64_t>(n, a.value("id", int64_t(0)) + 1);
  LORA_CHECK(n == vocab_size, "GGUF export: the tokenizer of {} has ids up to {}, more than the model's {} embeddings",
             files.source, n - 1, vocab_size);
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), kUnused);
  for (int64_t i = 0; i < n; ++i) tokens[i] = fmt::format("[PAD{}]", i);
  std::map<std::string, int64_t> id_of;
  for (const auto& [text, id] : vocab.items()) {
    const int64_t i = id.get<int64_t>();
    LORA_CHECK(i >= 0, "GGUF export: tokenizer of {}: negative id {}", files.source, i);
    tokens[i] = text;
    types[i] = kNormal;
    id_of[text] = i;
  }
  for (const json& a : tok.value("added_tokens", json::array())) {
    const int64_t i = a.value("id", int64_t(-1));
    LORA_CHECK(i >= 0, "GGUF export: tokenizer of {}: an added token without an id", files.source);
    tokens[i] = a.value("content", "");
    types[i] = a.value("special", false) ? kControl : kUserDefined;
    id_of[tokens[i]] = i;
  }
  std::vector<std::string> merges;
  for (const json& m : model.value("merges", json::array())) {
    if (m.is_string())
      merges.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2)
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else
      LORA_FAIL("GGUF export: tokenizer of {}: a merge that is neither \"a b\" nor [a, b]", files.source);
  }

  // Special tokens: tokenizer_config.json's names first, then config.json's ids (gguf-py's SpecialVocab order).
  auto special = [&](const char* token_key, const char* id_key) -> int64_t {
    if (cfg.contains(token_key)) {
      if (auto content = token_content(cfg[token_key])) {
        auto it = id_of.find(*content);
        LORA_CHECK(it != id_of.end(), "GGUF export: tokenizer_config.json of {}: {} '{}' is not a token", files.source,
                   token_key, *content);
        return it->second;
      }
    }
    if (id_key && config.contains(id_key)) {
      const json& v = config[id_key];
      if (v.is_number_integer()) return v.get<int64_t>();
      if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    }
    return -1;
  };
  const int64_t bos = special("bos_token", "bos_token_id"), eos = special("eos_token", "eos_token_id");
  const int64_t pad = special("pad_token", nullptr), unk = special("unk_token", nullptr);
  int64_t eot = -1;
  for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"}) {
    if (auto it = id_of.find(t); it != id_of.end() && eot < 0) eot = it->second;
  }
  // add_bos: tokenizer_config.json's flag, else whether the post-processor's template starts with a token.
  bool add_bos = false;
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
    add_bos = cfg["add_bos_token"].get<bool>();
  } else {
    std::vector<json> processors;
    const json& post = tok.value("post_processor", json());
    if (post.is_object() && post.value("type", "") == "Sequence")
      processors = post.value("processors", std::vector<json>{});
    else if (post.is_object())
      processors.push_back(post);
    for (const json& p : processors) {
      if (p.value("type", "") == "TemplateProcessing" && p.contains("single") && !p["single"].empty() &&
          p["single"][0].contains("SpecialToken")) {
        add_bos = true;
      }
    }
  }
  LORA_CHECK(!add_bos || bos >= 0, "GGUF export: the tokenizer of {} adds a BOS token but names none", files.source);
  std::string chat_template;
  if (cfg.contains("chat_template")) {
    const json& t = cfg["chat_template"];
    if (t.is_string()) chat_template = t.get<std::string>();
    for (const json& named : t.is_array() ? t : json::array()) {
      if (named.value("name", "") == "default") chat_template = named.value("template", "");
    }
  }

  std::vector<std::pair<std::string, Value>> kv;
  kv.emplace_back("tokenizer.ggml.model", Value::string("gpt2"));
  kv.emplace_back("tokenizer.ggml.pre", Value::string(pre->name));
  kv.emplace_back("tokenizer.ggml.tokens", Value::strings(tokens));
  kv.emplace_back("tokenizer.ggml.token_type", Value::i32s(types));
  kv.emplace_back("tokenizer.ggml.merges", Value::strings(merges));
  auto id = [&](const char* key, int64_t v) {
    if (v >= 0 && v < n) kv.emplace_back(key, Value::u32(static_cast<uint32_t>(v)));
  };
  id("tokenizer.ggml.bos_token_id", bos);
  id("tokenizer.ggml.eos_token_id", eos);
  id("tokenizer.ggml.eot_token_id", eot);
  id("tokenizer.ggml.unknown_token_id", unk);
  id("tokenizer.ggml.padding_token_id", pad);
  kv.emplace_back("tokenizer.ggml.add_bos_token", Value::boolean(add_bos));
  kv.emplace_back("tokenizer.ggml.add_eos_token", Value::boolean(cfg.value("add_eos_token", false)));
  if (!chat_template.empty()) kv.emplace_back("tokenizer.chat_template", Value::string(chat_template));
  return kv;
}

TokenizerFiles tokenizer_files_from_gguf(const gguf::File& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  LORA_CHECK(model == "gpt2",
             "GGUF file '{}': tokenizer.ggml.model '{}' is not supported (byte-level BPE, \"gpt2\", "
             "is; SentencePiece vocabularies, \"llama\", are not yet)",
             f.path(), model);
  const std::string pre_name = f.get_string_or("tokenizer.ggml.pre").value_or("default");
  const PreTokenizer* pre = nullptr;
  for (const PreTokenizer& p : known_pre_tokenizers()) {
    if (pre_name == p.name || (std::string(p.name) == "llama-bpe" && (pre_name == "llama3" || pre_name == "llama-v3")))
      pre = &p;
  }
  LORA_CHECK(pre != nullptr,
             "GGUF file '{}': tokenizer.ggml.pre '{}' is not supported (gpt-2, llama-bpe, qwen2, smollm "
             "are)",
             f.path(), pre_name);
  const Value& tokens = f.get_array("tokenizer.ggml.tokens", gguf::ValueType::STRING);
  const size_t n = tokens.array.size();
  std::vector<int32_t> types(n, kNormal);
  if (f.contains("tokenizer.ggml.token_type")) {
    const Value& t = f.get_array("tokenizer.ggml.token_type", gguf::ValueType::I32);
    LORA_CHECK(t.array.size() == n, "GGUF file '{}': tokenizer.ggml.token_type has {} entries for {} tokens", f.path(),
               t.array.size(), n);
    for (size_t i = 0; i < n; ++i) types[i] = static_cast<int32_t>(t.array[i].i);
  }
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = tokens.array[i].s;
    LORA_CHECK(!vocab.contains(text), "GGUF file '{}': the token '{}' appears twice (ids {} and {})", f.path(), text,
               vocab.contains(text) ? vocab[text].get<int64_t>() : 0, i);
    vocab[text] = i;
    if (types[i] == kControl || types[i] == kUserDefined) {
      added.push_back({{"id", i},
                       {"content", text},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", types[i] == kControl}});
    }
  }
  json merges = json::array();
  for (const Value& m : f.get_array("tokenizer.ggml.merges", gguf::ValueType::STRING).array) {
    const size_t space = m.s.find(' ');
    LORA_CHECK(space != std::string::npos && space > 0 && space + 1 < m.s.size() &&
                   m.s.find(' ', space + 1) == std::string::npos,
               "GGUF file '{}': tokenizer.ggml.merges holds '{}', not two tokens separated by one space", f.path(),
               m.s);
    merges.push_back({m.s.substr(0, space), m.s.substr(space + 1)});
  }
  auto id = [&](const char* key) -> std::optional<int64_t> {
    const std::optional<uint64_t> v = f.get_uint_or(key);
    if (!v) return std::nullopt;
    LORA_CHECK(*v < n, "GGUF file '{}': {} = {} is outside the {} tokens", f.path(), key, *v, n);
    return static_cast<int64_t>(*v);
  };
  const std::optional<int64_t> bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id");
  const bool add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token").value_or(false);
  LORA_CHECK(!f.get_bool_or("tokenizer.ggml.add_eos_token").value_or(false),
             "GGUF file '{}': "
             "tokenizer.ggml.add_eos_token is true: adding EOS to every text is not supported",
             f.path());
  json post = nullptr;
  if (add_bos) {
    LORA_CHECK(bos.has_value(), "GGUF file '{}': tokenizer.ggml.add_bos_token is true but there is no bos_token_id",
               f.path());
    const std::string b = tokens.array[*bos].s;
    post = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", b}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", b}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", b}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{b, {{"id", b}, {"ids", {*bos}}, {"tokens", {b}}}}}}};
  }
  const json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", pre->normalizer},
      {"pre_tokenizer", pre->pre_tokenizer},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", pre->ignore_merges},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  json config = {{"add_bos_token", add_bos}};
  if (bos) config["bos_token"] = tokens.array[*bos].s;
  if (eos) config["eos_token"] = tokens.array[*eos].s;
  if (auto t = f.get_string_or("tokenizer.chat_template")) config["chat_template"] = *t;
  return {tokenizer.dump(), config.dump(), "GGUF file '" + f.path() + "'"};
}

std::unique_ptr<tokenizer::Tokenizer> load_gguf_tokenizer(const gguf::File& file) {
  const TokenizerFiles files = tokenizer_files_from_gguf(file);
  return std::make_unique<tokenizer::HFTokenizer>(
      tokenizer::HFTokenizer::from_json(files.tokenizer_json, file.path(), files.tokenizer_config_json));
}

}  // namespace lora::models::gguf_io
