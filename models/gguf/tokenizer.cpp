// GGUF tokenizer metadata <-> Hugging Face tokenizer.json, for byte-level ("gpt2") and SentencePiece ("llama")
// BPE vocabularies.
#include "models/gguf/tokenizer.h"
#include "core/json.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string_view>
#include <unordered_map>

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

// SentencePiece-style BPE ("llama" in GGUF; Llama 1/2, Mistral 7B v0.1, TinyLlama).

constexpr const char* kMetaspace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

// Whether a token is a byte token "<0xNN>" (what byte_fallback and llama.cpp's BYTE type stand for).
bool is_byte_token(const std::string& t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// Byte offsets of the code point boundaries inside `t` (not 0, not t.size()); invalid UTF-8 lead bytes
// count as one-byte characters.
std::vector<size_t> inner_boundaries(const std::string& t) {
  std::vector<size_t> out;
  for (size_t i = 1; i < t.size(); ++i) {
    if ((static_cast<unsigned char>(t[i]) & 0xC0) != 0x80) out.push_back(i);
  }
  return out;
}

// The merges of a SentencePiece BPE vocabulary, as transformers' SentencePieceExtractor derives them:
// every split of a piece into two pieces of the vocabulary, ordered by the merged piece's score (highest
// first), then by the piece's id, then by the ids of the two halves. Only normal pieces take part:
// sentencepiece never merges into control, unknown, byte or user-defined pieces.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const std::vector<std::string>& tokens,
                                                                    const std::vector<float>& scores,
                                                                    const std::vector<int32_t>& types) {
  std::unordered_map<std::string_view, size_t> normal;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == kNormal) normal.emplace(tokens[i], i);
  }
  struct Merge {
    float score;
    size_t piece, left, right;
    size_t split;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] != kNormal) continue;
    const std::string_view t = tokens[i];
    for (size_t at : inner_boundaries(tokens[i])) {
      auto l = normal.find(t.substr(0, at)), r = normal.find(t.substr(at));
      if (l != normal.end() && r != normal.end()) merges.push_back({scores[i], i, l->second, r->second, at});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.piece != b.piece) return a.piece < b.piece;
    return std::pair(a.left, a.right) < std::pair(b.left, b.right);
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) out.emplace_back(tokens[m.piece].substr(0, m.split), tokens[m.piece].substr(m.split));
  return out;
}

// Llama's tokenizer.json normalizer: a space before the text (when add_space_prefix) and every space as
// U+2581. Prepend applies to each run of text between special tokens, as llama.cpp's "space after a
// special token" does.
json spm_normalizer(bool add_space_prefix) {
  json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}};
  if (!add_space_prefix) return replace;
  return {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kMetaspace}}, replace}}};
}

json spm_decoder(bool add_space_prefix) {
  json steps = {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                {{"type", "ByteFallback"}},
                {{"type", "Fuse"}}};
  if (add_space_prefix) steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  return {{"type", "Sequence"}, {"decoders", steps}};
}

// How a SentencePiece-style tokenizer.json turns spaces into U+2581, as llama.cpp's SPM tokenizer does:
// returns add_space_prefix, or fails naming what llama.cpp would read differently.
bool spm_space_prefix(const json& tok, const json& vocab, const std::string& source) {
  const json normalizer = tok.value("normalizer", json());
  const json pre = tok.value("pre_tokenizer", json());
  if (normalizer.is_null() && pre.is_object() && pre.value("type", "") == "Metaspace") {
    LORA_CHECK(pre.value("replacement", "") == kMetaspace,
               "GGUF export: the Metaspace pre-tokenizer of {} does not use U+2581", source);
    std::string scheme = pre.value("prepend_scheme", "");
    if (scheme.empty()) scheme = pre.value("add_prefix_space", true) ? "always" : "never";
    if (pre.value("split", true)) {
      // Splitting at every U+2581 is what llama.cpp does not do; it changes nothing unless a piece holds
      // U+2581 after its first character.
      for (const auto& [text, id] : vocab.items()) {
        LORA_CHECK(text.find(kMetaspace, 1) == std::string::npos,
                   "GGUF export: the Metaspace pre-tokenizer of {} splits at U+2581 but the piece '{}' holds one "
                   "inside: llama.cpp would not split it",
                   source, text);
      }
    }
    return scheme != "never";
  }
  LORA_CHECK(pre.is_null(), "GGUF export: the tokenizer of {} is SentencePiece-style but has a {} pre-tokenizer",
             source, pre.is_object() ? pre.value("type", "?") : "non-object");
  if (normalizer == spm_normalizer(true)) return true;
  if (normalizer == spm_normalizer(false)) return false;
  LORA_FAIL(
      "GGUF export: the normalizer of {} is not Llama's (Prepend U+2581, Replace ' ' by U+2581): llama.cpp's "
      "SentencePiece tokenizer would read text differently ({})",
      source, normalizer.dump());
}

// Scores for a SentencePiece-style vocabulary known only by its merges (a tokenizer.json), so that
// llama.cpp's SPM tokenizer, which merges the pair whose piece scores highest, merges in the merges'
// order. convert_hf_to_gguf.py writes -1000 for every token of such a vocabulary (LlamaHfVocab), which
// loses that order. Normal pieces made by a merge come first, in the order of the first merge making
// them, then the other normal pieces in id order; the k-th scores -k. That is how sentencepiece's BPE
// trainer scores its pieces, so a vocabulary it trained comes back with its own scores. Control,
// unknown, byte, user-defined and unused tokens score 0, as sentencepiece gives them.
std::vector<float> spm_scores(const std::vector<std::string>& tokens, const std::vector<int32_t>& types,
                              const std::vector<std::string>& merges) {
  std::unordered_map<std::string, size_t> id_of;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == kNormal) id_of.emplace(tokens[i], i);
  }
  std::vector<float> scores(tokens.size(), 0.0f);
  std::vector<bool> done(tokens.size(), false);
  size_t next = 0;  // the rank; a float holds it exactly up to 2^24 pieces
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    if (space == std::string::npos) continue;
    auto it = id_of.find(m.substr(0, space) + m.substr(space + 1));
    if (it == id_of.end() || done[it->second]) continue;
    done[it->second] = true;
    scores[it->second] = -static_cast<float>(next++);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == kNormal && !done[i]) scores[i] = -static_cast<float>(next++);
  }
  return scores;
}

// The shapes the conversion below reads without checking each access: a field of another type would
// otherwise surface as the JSON library's own message, which names neither the file nor the field.
void check_tokenizer_shapes(const json& tok, const json& cfg, const std::string& source) {
  LORA_CHECK(tok.is_object() && tok.contains("model") && tok["model"].is_object() &&
                 tok["model"].value("type", json()) == json("BPE"),
             "GGUF export: the tokenizer of {} is not a BPE tokenizer.json (expected \"model\": {{\"type\": \"BPE\", "
             "...}})",
             source);
  const json& model = tok["model"];
  LORA_CHECK(model.contains("vocab") && model["vocab"].is_object(),
             "GGUF export: tokenizer.json of {}: \"model.vocab\" must be an object of token -> id", source);
  for (const auto& [text, id] : model["vocab"].items()) {
    LORA_CHECK(id.is_number_integer(),
               "GGUF export: tokenizer.json of {}: model.vocab[\"{}\"] is {}, expected an integer id", source,
               text.substr(0, 60), id.type_name());
  }
  if (tok.contains("added_tokens")) {
    LORA_CHECK(tok["added_tokens"].is_array(), "GGUF export: tokenizer.json of {}: \"added_tokens\" must be an array",
               source);
    for (const json& a : tok["added_tokens"]) {
      LORA_CHECK(
          a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.value("content", json()).is_string(),
          "GGUF export: tokenizer.json of {}: every added token must be an object with an integer \"id\" and "
          "a string \"content\"",
          source);
    }
  }
  LORA_CHECK(!model.contains("merges") || model["merges"].is_array(),
             "GGUF export: tokenizer.json of {}: \"model.merges\" must be an array", source);
  LORA_CHECK(cfg.is_object(), "GGUF export: tokenizer_config.json of {} must be a JSON object", source);
}

std::vector<std::pair<std::string, Value>> tokenizer_to_gguf_checked(const json& tok, const json& cfg,
                                                                     const TokenizerFiles& files, const json& config,
                                                                     int64_t vocab_size) {
  const json& model = tok["model"];
  const json& vocab = model["vocab"];
  // byte_fallback marks a SentencePiece-style BPE (Llama 2, Mistral): GGUF's "llama" vocabulary, read by
  // llama.cpp's SPM tokenizer. Otherwise a byte-level BPE, "gpt2", with its pre-tokenizer by name.
  const bool spm = model.value("byte_fallback", false);
  const PreTokenizer* pre = nullptr;
  bool add_space_prefix = true;
  if (spm) {
    add_space_prefix = spm_space_prefix(tok, vocab, files.source);
  } else {
    const std::string sig = signature(tok.value("pre_tokenizer", json()));
    for (const PreTokenizer& p : known_pre_tokenizers()) {
      if (signature(p.pre_tokenizer) == sig) pre = &p;
    }
    LORA_CHECK(pre != nullptr,
               "GGUF export: the pre-tokenizer of {} ({}) is not one llama.cpp knows by name (gpt-2, "
               "llama-bpe, qwen2, smollm)",
               files.source, sig);
  }

  // Tokens: the vocabulary, the added tokens, unused padding up to the model's vocabulary.
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
    types[i] = spm && is_byte_token(text) ? kByte : kNormal;
    id_of[text] = i;
  }
  for (const json& a : tok.value("added_tokens", json::array())) {
    const int64_t i = a.value("id", int64_t(-1));
    LORA_CHECK(i >= 0, "GGUF export: tokenizer of {}: an added token without an id", files.source);
    tokens[i] = a.value("content", "");
    types[i] = a.value("special", false) ? kControl : kUserDefined;
    id_of[tokens[i]] = i;
  }
  if (const json unk = model.value("unk_token", json()); spm && unk.is_string()) {
    if (auto it = id_of.find(unk.get<std::string>()); it != id_of.end()) types[it->second] = kUnknown;
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
  int64_t bos = special("bos_token", "bos_token_id");
  const int64_t eos = special("eos_token", "eos_token_id");
  const int64_t pad = special("pad_token", nullptr);
  int64_t unk = special("unk_token", nullptr);
  if (unk < 0) {
    for (int64_t i = 0; i < n; ++i) {
      if (types[i] == kUnknown && unk < 0) unk = i;
    }
  }
  int64_t eot = -1;
  for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"}) {
    if (auto it = id_of.find(t); it != id_of.end() && eot < 0) eot = it->second;
  }
  // add_bos: tokenizer_config.json's flag, else whether the post-processor's template starts with a token.
  bool add_bos = false, add_eos = false;
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) add_eos = cfg["add_eos_token"].get<bool>();
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
        // The token the template puts first is the BOS when the tokenizer files name none (Mistral's
        // tokenizer.json alone).
        const json& first = p["single"][0]["SpecialToken"];
        if (auto it = id_of.find(first.value("id", "")); bos < 0 && it != id_of.end()) bos = it->second;
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
  if (spm) {
    kv.emplace_back("tokenizer.ggml.model", Value::string("llama"));
    kv.emplace_back("tokenizer.ggml.tokens", Value::strings(tokens));
    kv.emplace_back("tokenizer.ggml.scores", Value::f32s(spm_scores(tokens, types, merges)));
    kv.emplace_back("tokenizer.ggml.token_type", Value::i32s(types));
    kv.emplace_back("tokenizer.ggml.add_space_prefix", Value::boolean(add_space_prefix));
  } else {
    kv.emplace_back("tokenizer.ggml.model", Value::string("gpt2"));
    kv.emplace_back("tokenizer.ggml.pre", Value::string(pre->name));
    kv.emplace_back("tokenizer.ggml.tokens", Value::strings(tokens));
    kv.emplace_back("tokenizer.ggml.token_type", Value::i32s(types));
    kv.emplace_back("tokenizer.ggml.merges", Value::strings(merges));
  }
  auto id = [&](const char* key, int64_t v) {
    if (v >= 0 && v < n) kv.emplace_back(key, Value::u32(static_cast<uint32_t>(v)));
  };
  id("tokenizer.ggml.bos_token_id", bos);
  id("tokenizer.ggml.eos_token_id", eos);
  id("tokenizer.ggml.eot_token_id", eot);
  id("tokenizer.ggml.unknown_token_id", unk);
  id("tokenizer.ggml.padding_token_id", pad);
  kv.emplace_back("tokenizer.ggml.add_bos_token", Value::boolean(add_bos));
  kv.emplace_back("tokenizer.ggml.add_eos_token", Value::boolean(add_eos));
  if (!chat_template.empty()) kv.emplace_back("tokenizer.chat_template", Value::string(chat_template));
  return kv;
}

}  // namespace

std::vector<std::pair<std::string, Value>> tokenizer_to_gguf(const TokenizerFiles& files, const json& config,
                                                             int64_t vocab_size) {
  const json tok = parse(files.tokenizer_json, "tokenizer.json of " + files.source);
  const json cfg = files.tokenizer_config_json.empty()
                       ? json::object()
                       : parse(files.tokenizer_config_json, "tokenizer_config.json of " + files.source);
  check_tokenizer_shapes(tok, cfg, files.source);
  try {
    return tokenizer_to_gguf_checked(tok, cfg, files, config, vocab_size);
  } catch (const json::exception& e) {  // a field of an unexpected type that the checks above do not cover
    LORA_FAIL("GGUF export: the tokenizer files of {} hold a field of an unexpected type ({})", files.source, e.what());
  }
}

TokenizerFiles tokenizer_files_from_gguf(const gguf::File& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  LORA_CHECK(model == "gpt2" || model == "llama",
             "GGUF file '{}': tokenizer.ggml.model '{}' is not supported (byte-level BPE, \"gpt2\", and "
             "SentencePiece BPE, \"llama\", are)",
             f.path(), model);
  // "llama": llama.cpp's SPM tokenizer, whatever tokenizer.ggml.pre says (it does not read it).
  const bool spm = model == "llama";
  const PreTokenizer* pre = nullptr;
  if (!spm) {
    const std::string pre_name = f.get_string_or("tokenizer.ggml.pre").value_or("default");
    for (const PreTokenizer& p : known_pre_tokenizers()) {
      if (pre_name == p.name ||
          (std::string(p.name) == "llama-bpe" && (pre_name == "llama3" || pre_name == "llama-v3")))
        pre = &p;
    }
    LORA_CHECK(pre != nullptr,
               "GGUF file '{}': tokenizer.ggml.pre '{}' is not supported (gpt-2, llama-bpe, qwen2, smollm "
               "are)",
               f.path(), pre_name);
  } else {
    // A Unigram-style normalization table is what llama.cpp's SPM tokenizer ignores but the vocabulary
    // was made for: refused rather than read differently.
    LORA_CHECK(!f.contains("tokenizer.ggml.precompiled_charsmap"),
               "GGUF file '{}': tokenizer.ggml.precompiled_charsmap (a SentencePiece normalization table) is not "
               "supported",
               f.path());
  }
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
    if (types[i] == kControl || types[i] == kUserDefined || (spm && types[i] == kUnknown)) {
      added.push_back({{"id", i},
                       {"content", text},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", types[i] != kUserDefined}});
    }
  }
  json merges = json::array();
  if (spm) {
    LORA_CHECK(f.contains("tokenizer.ggml.scores"),
               "GGUF file '{}': tokenizer.ggml.model is \"llama\" but tokenizer.ggml.scores is missing (a "
               "SentencePiece vocabulary merges by its scores)",
               f.path());
    const Value& sc = f.get_array("tokenizer.ggml.scores", gguf::ValueType::F32);
    LORA_CHECK(sc.array.size() == n, "GGUF file '{}': tokenizer.ggml.scores has {} entries for {} tokens", f.path(),
               sc.array.size(), n);
    std::vector<std::string> texts(n);
    std::vector<float> scores(n);
    for (size_t i = 0; i < n; ++i) {
      texts[i] = tokens.array[i].s;
      scores[i] = static_cast<float>(sc.array[i].f);
      LORA_CHECK(std::isfinite(scores[i]), "GGUF file '{}': tokenizer.ggml.scores[{}] is not finite", f.path(), i);
    }
    for (auto& [l, r] : merges_from_scores(texts, scores, types)) merges.push_back({l, r});
  }
  const std::vector<Value> no_merges;
  for (const Value& m : spm ? no_merges : f.get_array("tokenizer.ggml.merges", gguf::ValueType::STRING).array) {
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
  // llama.cpp's default for a "llama" vocabulary is to add BOS (llama_vocab::load).
  const bool add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token").value_or(spm);
  const bool add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token").value_or(false);
  json post = nullptr;
  if (add_bos || add_eos) {
    LORA_CHECK(!add_bos || bos.has_value(),
               "GGUF file '{}': tokenizer.ggml.add_bos_token is true but there is no bos_token_id", f.path());
    LORA_CHECK(!add_eos || eos.has_value(),
               "GGUF file '{}': tokenizer.ggml.add_eos_token is true but there is no eos_token_id", f.path());
    json single = json::array(), pair = json::array(), specials = json::object();
    auto special = [&](int64_t id, int type_id, json& into) {
      const std::string& t = tokens.array[id].s;
      into.push_back({{"SpecialToken", {{"id", t}, {"type_id", type_id}}}});
      specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
    };
    for (int part = 0; part < 2; ++part) {
      if (add_bos) special(*bos, part, pair);
      pair.push_back({{"Sequence", {{"id", part == 0 ? "A" : "B"}, {"type_id", part}}}});
      if (add_eos) special(*eos, part, pair);
    }
    if (add_bos) special(*bos, 0, single);
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) special(*eos, 0, single);
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  }
  const bool add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix").value_or(true);
  std::optional<std::string> unk_token;
  if (spm) {
    if (auto u = id("tokenizer.ggml.unknown_token_id")) unk_token = tokens.array[*u].s;
    for (size_t i = 0; i < n && !unk_token; ++i) {
      if (types[i] == kUnknown) unk_token = tokens.array[i].s;
    }
  }
  const json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", spm ? spm_normalizer(add_space_prefix) : pre->normalizer},
      {"pre_tokenizer", spm ? json() : pre->pre_tokenizer},
      {"post_processor", post},
      {"decoder",
       spm ? spm_decoder(add_space_prefix)
           : json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", unk_token ? json(*unk_token) : json()},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", spm},
        {"byte_fallback", spm},
        {"ignore_merges", spm ? false : pre->ignore_merges},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}},
  };
  json config = {{"add_bos_token", add_bos}, {"add_eos_token", add_eos}};
  if (bos) config["bos_token"] = tokens.array[*bos].s;
  if (unk_token) config["unk_token"] = *unk_token;
  if (eos) config["eos_token"] = tokens.array[*eos].s;
  if (auto t = f.get_string_or("tokenizer.chat_template")) config["chat_template"] = *t;
  return {tokenizer.dump(), config.dump(), "GGUF file '" + f.path() + "'"};
}

namespace {
std::unique_ptr<tokenizer::Tokenizer> tokenizer_from(const TokenizerFiles& files, const std::string& name) {
  return std::make_unique<tokenizer::HFTokenizer>(
      tokenizer::HFTokenizer::from_json(files.tokenizer_json, name, files.tokenizer_config_json));
}
}  // namespace

std::unique_ptr<tokenizer::Tokenizer> load_gguf_tokenizer(const gguf::File& file) {
  return tokenizer_from(tokenizer_files_from_gguf(file), file.path());
}

std::unique_ptr<tokenizer::Tokenizer> load_gguf_tokenizer(const std::string& path) {
  // The file's parsed metadata (every token and merge as a gguf::Value) is freed before the tokenizer is
  // built from the text it became, so the two are never resident together.
  // Two statements: the temporary File dies at the end of the first.
  const TokenizerFiles files = tokenizer_files_from_gguf(gguf::File::open(path));
  return tokenizer_from(files, path);
}

}  // namespace lora::models::gguf_io
