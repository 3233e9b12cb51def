// HFTokenizer: reading a tokenizer.json into its components, and the encode and decode pipelines.
#include "models/tokenizer/hf_tokenizer.h"
#include "core/json.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <unordered_set>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_added.h"
#include "models/tokenizer/hf_bpe.h"
#include "models/tokenizer/hf_decoder.h"
#include "models/tokenizer/hf_json.h"
#include "models/tokenizer/hf_normalizer.h"
#include "models/tokenizer/hf_pretokenizer.h"

namespace lora::tokenizer {

namespace fs = std::filesystem;
using hf::JsonView;

namespace {

std::string read_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  LORA_CHECK(!fs::is_directory(path, ec), "cannot read {} '{}': it is a directory", what, path.string());
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "cannot open {} '{}'", what, path.string());
  const auto size = fs::file_size(path, ec);
  LORA_CHECK(!ec && size <= HFTokenizer::kMaxFileBytes, "{} '{}': larger than {} bytes", what, path.string(),
             HFTokenizer::kMaxFileBytes);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LORA_CHECK(!in.bad(), "error while reading {} '{}'", what, path.string());
  return data;
}

nlohmann::json parse_json(std::string_view text, std::string_view what, const std::string& name) {
  return lora::parse_json(text, fmt::format("{} '{}'", what, name));
}

}  // namespace

struct HFTokenizer::Impl {
  std::string name;   // the file
  std::string label;  // the file as messages name it: tokenizer.json '<name>'
  hf::Normalizer normalizer;
  hf::PreTokenizer pre_tokenizer;
  std::unique_ptr<hf::BpeModel> model;
  std::vector<hf::AddedToken> added;  // in file order
  hf::AddedMatcher raw_matcher, normalized_matcher;
  hf::PostProcessor post_processor;
  hf::Decoder decoder;

  size_t vocab_size = 0;
  std::vector<const std::string*> token_of_id;  // (vocab_size) the string decode() uses for each id
  std::vector<bool> special;                    // (vocab_size) skipped by skip_special_tokens
  hf::StringMap added_ids;                      // added token content -> id
  std::optional<int32_t> bos, eos;

  void load(const nlohmann::json& root);
  void load_added_tokens(const JsonView& list);
  void load_config(std::string_view config_json);
  void encode_part(std::string_view text, bool at_origin, bool parse_special, std::vector<int32_t>& ids) const;
  std::string surface(int32_t id) const;
  void align(std::string_view part, size_t base, size_t first, Encoding& e) const;
};

// ---------------------------------------------------------------------------------------------------
// Loading

void HFTokenizer::Impl::load(const nlohmann::json& root) {
  const JsonView top(root, "", label);
  top.only_fields({"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor",
                   "decoder", "model"});
  if (const auto version = top.optional("version"); version && version->string() != "1.0")
    version->unsupported("tokenizer.json version (only \"1.0\")");
  if (const auto t = top.optional("truncation")) t->unsupported("truncation (encode() returns every id)");
  if (const auto p = top.optional("padding")) p->unsupported("padding (encode() returns every id)");

  if (const auto n = top.optional("normalizer")) normalizer = hf::Normalizer::from_json(*n);
  if (const auto p = top.optional("pre_tokenizer")) pre_tokenizer = hf::PreTokenizer::from_json(*p);
  model = std::make_unique<hf::BpeModel>(top.field("model"), pre_tokenizer.byte_level());
  vocab_size = model->size();
  if (const auto list = top.optional("added_tokens")) load_added_tokens(*list);

  // The ids: the model's, then the added tokens that are not in its vocabulary.
  token_of_id.resize(vocab_size);
  special.assign(vocab_size, false);
  for (size_t id = 0; id < model->size(); ++id) token_of_id[id] = &model->token(static_cast<int32_t>(id));
  std::unordered_set<std::string_view> special_contents;
  for (const hf::AddedToken& t : added)
    if (t.special) special_contents.insert(t.content);
  for (const hf::AddedToken& t : added) {
    // As tokenizers' simple_id_to_token: the normalized form of a normalized token, if it differs.
    token_of_id[static_cast<size_t>(t.id)] = t.normalized && !normalizer.empty() ? &t.pattern : &t.content;
  }
  // tokenizers skips by the token's string, so a normalized special token whose form differs is kept.
  for (size_t id = 0; id < vocab_size; ++id) special[id] = special_contents.contains(*token_of_id[id]);

  if (pre_tokenizer.metaspace_first() && !normalizer.empty()) {
    // Metaspace's "first" asks whether a piece starts at offset 0 of the original text; through a
    // normalizer that is only known here for whole normalized parts (tokenizers tracks alignments).
    bool normalized_added = false;
    for (const hf::AddedToken& t : added) normalized_added = normalized_added || t.normalized;
    if (pre_tokenizer.metaspace_first_after_split() || normalized_added)
      top.field("pre_tokenizer")
          .unsupported(
              "Metaspace with prepend_scheme \"first\" after another pre-tokenizer or with normalized "
              "added tokens, together with a normalizer");
  }

  if (const auto p = top.optional("post_processor")) {
    post_processor = hf::PostProcessor::from_json(
        *p, [this](int64_t id) { return id >= 0 && static_cast<size_t>(id) < vocab_size; });
  }
  if (const auto d = top.optional("decoder")) decoder = hf::Decoder::from_json(*d);
  bos = post_processor.leading_token();
  eos = post_processor.trailing_token();
}

void HFTokenizer::Impl::load_added_tokens(const JsonView& list) {
  // Ids as tokenizers assigns them (it ignores the ids in the file): a token in the model's vocabulary
  // keeps that id, the others take the next ids after the vocabulary, in file order. A file whose ids
  // differ is refused: tokenizers would use other ids than the file says.
  const size_t count = list.size();
  added.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const JsonView item = list[i];
    item.only_fields({"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    hf::AddedToken t;
    t.content = item.field("content").string();
    if (t.content.empty()) item.field("content").unsupported("an empty added token (tokenizers ignores it)");
    t.single_word = item.field("single_word").boolean();
    t.lstrip = item.field("lstrip").boolean();
    t.rstrip = item.field("rstrip").boolean();
    t.normalized = item.field("normalized").boolean();
    t.special = item.field("special").boolean();
    const int64_t file_id = item.field("id").integer(0, INT32_MAX);
    if (added_ids.contains(t.content)) item.field("content").fail("the same added token appears twice");
    const auto in_model = model->find(t.content);
    const auto id = in_model ? static_cast<int64_t>(*in_model) : static_cast<int64_t>(vocab_size);
    if (file_id != id)
      item.field("id").fail(fmt::format("tokenizers gives this token id {} ({})", id,
                                        in_model ? "its id in model.vocab" : "the next id after the vocabulary"));
    if (!in_model) ++vocab_size;
    t.id = static_cast<int32_t>(id);
    t.pattern = t.content;
    if (t.normalized && !normalizer.empty()) {
      normalizer.normalize(t.pattern);
      if (t.pattern.empty()) item.field("content").unsupported("an added token that normalizes to nothing");
    }
    added_ids.emplace(t.content, t.id);
    added.push_back(std::move(t));
  }
  std::vector<const hf::AddedToken*> raw, normalized;
  for (const hf::AddedToken& t : added) (t.normalized ? normalized : raw).push_back(&t);
  raw_matcher = hf::AddedMatcher(std::move(raw));
  normalized_matcher = hf::AddedMatcher(std::move(normalized));
}

void HFTokenizer::Impl::load_config(std::string_view config_json) {
  // tokenizer_config.json (transformers): only bos_token and eos_token are read, each a string, an
  // AddedToken object {"content": ...} or null.
  const std::string what = fmt::format("tokenizer_config.json beside '{}'", name);
  const nlohmann::json config = parse_json(config_json, "tokenizer_config.json beside", name);
  const JsonView top(config, "", what);
  if (!config.is_object()) top.fail("expected a JSON object");
  auto read = [&](const char* key) -> std::optional<int32_t> {
    const auto value = top.optional(key);
    if (!value) return std::nullopt;
    const std::string content = value->raw().is_object() ? value->field("content").string() : value->string();
    if (const auto it = added_ids.find(content); it != added_ids.end()) return it->second;
    if (const auto id = model->find(content)) return id;
    value->fail("names no token of tokenizer.json");
  };
  if (config.contains("bos_token")) bos = read("bos_token");
  if (config.contains("eos_token")) eos = read("eos_token");
}

HFTokenizer HFTokenizer::from_json(std::string_view json, const std::string& name, std::string_view config_json) {
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->label = fmt::format("tokenizer.json '{}'", name);
  {
    const nlohmann::json root = parse_json(json, "tokenizer.json", name);
    if (!root.is_object()) JsonView(root, "", impl->label).fail("expected a JSON object");
    impl->load(root);
  }
  if (!config_json.empty()) impl->load_config(config_json);
  return HFTokenizer(std::move(impl));
}

HFTokenizer HFTokenizer::from_file(const fs::path& tokenizer_json) {
  const std::string text = read_file(tokenizer_json, "tokenizer.json");
  const fs::path config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  std::string config;
  if (std::error_code ec; fs::is_regular_file(config_path, ec))
    config = read_file(config_path, "tokenizer_config.json");
  return from_json(text, tokenizer_json.string(), config);
}

HFTokenizer::HFTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HFTokenizer::HFTokenizer(HFTokenizer&&) noexcept = default;
HFTokenizer& HFTokenizer::operator=(HFTokenizer&&) noexcept = default;
HFTokenizer::~HFTokenizer() = default;

// ---------------------------------------------------------------------------------------------------
// Encode

// One part of the text between added tokens found on the raw text: normalize, find the normalized added
// tokens, pre-tokenize what is left and run the model on each piece.
void HFTokenizer::Impl::encode_part(std::string_view text, bool at_origin, bool parse_special,
                                    std::vector<int32_t>& ids) const {
  std::string normalized_text;
  if (!normalizer.empty()) {
    normalized_text = text;
    normalizer.normalize(normalized_text);
    text = normalized_text;
  }
  std::vector<hf::Segment> segments;
  if (normalized_matcher.empty()) {
    if (!text.empty()) segments.push_back({0, text.size(), -1});
  } else {
    normalized_matcher.split(text, parse_special, segments);
  }
  hf::PieceStore store;
  std::vector<hf::Piece> pieces;
  const hf::PieceSink to_model = [&](const hf::Piece& piece) { model->tokenize(piece.text, ids); };
  for (const hf::Segment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    pieces.assign(1, {text.substr(s.start, s.end - s.start), at_origin && s.start == 0});
    pre_tokenizer.run(pieces, store, to_model);
    store.clear();
  }
}

std::vector<int32_t> HFTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  const size_t bad = find_invalid_utf8(text);
  LORA_CHECK(bad == std::string_view::npos, "encode with '{}': invalid UTF-8 at byte offset {} (byte 0x{:02X})",
             impl_->name, bad, static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 4);
  if (impl_->raw_matcher.empty()) {
    if (!text.empty()) impl_->encode_part(text, true, options.parse_special_tokens, ids);
  } else {
    std::vector<hf::Segment> segments;
    impl_->raw_matcher.split(text, options.parse_special_tokens, segments);
    for (const hf::Segment& s : segments) {
      if (s.id >= 0)
        ids.push_back(s.id);
      else
        impl_->encode_part(text.substr(s.start, s.end - s.start), s.start == 0, options.parse_special_tokens, ids);
    }
  }
  impl_->post_processor.apply(ids, options.add_special_tokens);
  return ids;
}

// The text a token stands for, as it would appear in the input: an added token's content; a byte-level
// token's bytes; otherwise the token with Metaspace's "▁" read as a space and byte-fallback "<0xAB>" as its
// byte.
std::string HFTokenizer::Impl::surface(int32_t id) const {
  const std::string& token = *token_of_id[static_cast<size_t>(id)];
  if (const auto it = added_ids.find(token); it != added_ids.end() && it->second == id) return token;
  std::string out;
  if (pre_tokenizer.byte_level()) {
    for (size_t pos = 0; pos < token.size();) {
      const size_t start = pos;
      const int byte = unicode_to_byte(next_code_point(token, pos));
      if (byte >= 0)
        out.push_back(static_cast<char>(byte));
      else
        out.append(token, start, pos - start);
    }
    return out;
  }
  if (token.size() == 6 && token.starts_with("<0x") && token[5] == '>') {
    unsigned value = 0;
    if (std::sscanf(token.c_str() + 3, "%2X", &value) == 1) return std::string(1, static_cast<char>(value));
  }
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"
  for (size_t pos = 0; pos < token.size();) {
    if (std::string_view(token).substr(pos, kSpace.size()) == kSpace) {
      out.push_back(' ');
      pos += kSpace.size();
    } else {
      out.push_back(token[pos++]);
    }
  }
  return out;
}

// The offsets of ids[first..] (the tokens of `part`, which begins at byte `base` of the text): each token's
// surface is matched against the part from where the previous one ended. A space in the surface that the text
// does not have (Metaspace's prepended "▁") is skipped; any other mismatch (a normalizer's change) moves on
// one byte, so offsets stay in order and inside the part.
void HFTokenizer::Impl::align(std::string_view part, size_t base, size_t first, Encoding& e) const {
  size_t cursor = 0;
  for (size_t i = first; i < e.ids.size(); ++i) {
    const std::string s = surface(e.ids[i]);
    size_t k = 0;
    while (k < s.size() && s[k] == ' ' && (cursor >= part.size() || part[cursor] != ' ')) ++k;  // an added space
    e.offsets.push_back(base + std::min(cursor, part.size()));
    for (; k < s.size() && cursor < part.size(); ++k) {
      if (s[k] == part[cursor])
        ++cursor;
      else if (s[k] != ' ')
        ++cursor;
    }
  }
}

Encoding HFTokenizer::encode_with_offsets(std::string_view text, const EncodeOptions& options) const {
  const size_t bad = find_invalid_utf8(text);
  LORA_CHECK(bad == std::string_view::npos, "encode with '{}': invalid UTF-8 at byte offset {} (byte 0x{:02X})",
             impl_->name, bad, static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
  Encoding e;
  const auto part = [&](size_t start, size_t end) {
    const size_t first = e.ids.size();
    impl_->encode_part(text.substr(start, end - start), start == 0, options.parse_special_tokens, e.ids);
    impl_->align(text.substr(start, end - start), start, first, e);
  };
  if (impl_->raw_matcher.empty()) {
    if (!text.empty()) part(0, text.size());
  } else {
    std::vector<hf::Segment> segments;
    impl_->raw_matcher.split(text, options.parse_special_tokens, segments);
    for (const hf::Segment& s : segments) {
      if (s.id >= 0) {
        e.ids.push_back(s.id);
        e.offsets.push_back(s.start);
      } else {
        part(s.start, s.end);
      }
    }
  }
  // The post-processor puts its tokens around the text's: those before begin at 0, those after at the end.
  const std::vector<int32_t> inner = e.ids;
  impl_->post_processor.apply(e.ids, options.add_special_tokens);
  if (e.ids != inner) {
    size_t lead = 0;
    while (lead + inner.size() <= e.ids.size() &&
           !std::equal(inner.begin(), inner.end(), e.ids.begin() + static_cast<std::ptrdiff_t>(lead)))
      ++lead;
    LORA_CHECK(lead + inner.size() <= e.ids.size(), "encode with '{}': the post-processor changed the text's tokens",
               impl_->name);
    std::vector<size_t> offsets(lead, 0);
    offsets.insert(offsets.end(), e.offsets.begin(), e.offsets.end());
    offsets.resize(e.ids.size(), text.size());
    e.offsets = std::move(offsets);
  }
  return e;
}

// ---------------------------------------------------------------------------------------------------
// Decode and the vocabulary

std::string HFTokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    LORA_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->vocab_size,
               "decode with '{}': token id {} is outside the vocabulary (ids 0..{})", impl_->name, id,
               impl_->vocab_size - 1);
    if (options.skip_special_tokens && impl_->special[static_cast<size_t>(id)]) continue;
    tokens.push_back(*impl_->token_of_id[static_cast<size_t>(id)]);
  }
  return impl_->decoder.decode(std::move(tokens));
}

std::optional<int32_t> HFTokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  return impl_->model->find(token);
}

std::optional<std::string> HFTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->vocab_size) return std::nullopt;
  return *impl_->token_of_id[static_cast<size_t>(id)];
}

size_t HFTokenizer::vocab_size() const {
  return impl_->vocab_size;
}
std::optional<int32_t> HFTokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> HFTokenizer::eos_id() const {
  return impl_->eos;
}

bool HFTokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->vocab_size && impl_->special[static_cast<size_t>(id)];
}

std::string HFTokenizer::describe() const {
  return fmt::format("tokenizer.json '{}': BPE, {} tokens ({} added), {} merges{}", impl_->name, impl_->vocab_size,
                     impl_->added.size(), impl_->model->num_merges(),
                     impl_->pre_tokenizer.byte_level() ? ", byte-level" : "");
}

size_t HFTokenizer::model_vocab_size() const {
  return impl_->model->size();
}
size_t HFTokenizer::num_merges() const {
  return impl_->model->num_merges();
}
bool HFTokenizer::byte_level() const {
  return impl_->pre_tokenizer.byte_level();
}
size_t HFTokenizer::cache_size() const {
  return impl_->model->cache_size();
}
void HFTokenizer::clear_cache() const {
  impl_->model->clear_cache();
}

// ---------------------------------------------------------------------------------------------------
// GPT-2's files as a tokenizer.json

std::string gpt2_tokenizer_json(const fs::path& encoder_json, const fs::path& vocab_bpe) {
  const std::string encoder_text = read_file(encoder_json, "GPT-2 encoder.json");
  nlohmann::json vocab = parse_json(encoder_text, "GPT-2 encoder.json", encoder_json.string());
  LORA_CHECK(vocab.is_object(), "GPT-2 encoder.json '{}': expected a JSON object", encoder_json.string());
  const std::string merges_text = read_file(vocab_bpe, "GPT-2 vocab.bpe");
  nlohmann::json merges = nlohmann::json::array();
  std::string_view rest = merges_text;
  for (size_t line_no = 1; !rest.empty(); ++line_no) {
    const size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    merges.push_back(std::string(line));
  }
  LORA_CHECK(vocab.contains("<|endoftext|>"), "GPT-2 encoder.json '{}': no \"<|endoftext|>\" token",
             encoder_json.string());
  const nlohmann::json byte_level = {{"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {{{"id", vocab["<|endoftext|>"]},
         {"content", "<|endoftext|>"},
         {"single_word", false},
         {"lstrip", false},
         {"rstrip", false},
         {"normalized", false},
         {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}}};
  j["pre_tokenizer"].update(byte_level);
  return j.dump();
}

}  // namespace lora::tokenizer
