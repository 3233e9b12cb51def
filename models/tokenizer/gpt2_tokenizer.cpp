// GPT2Tokenizer: loading encoder.json and vocab.bpe, the piece cache, encode and decode.
#include "models/tokenizer/gpt2_tokenizer.h"
#include "core/json.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "core/error.h"
#include "lora_source_dir.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/pretokenizer.h"

namespace lora::tokenizer {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kEndOfText = "<|endoftext|>";

std::string read_file(const fs::path& path, std::string_view what) {
  LORA_CHECK(!fs::is_directory(path), "cannot read {} '{}': it is a directory", what, path.string());
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "cannot open {} '{}'", what, path.string());
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LORA_CHECK(!in.bad(), "error while reading {} '{}'", what, path.string());
  return data;
}

// A vocabulary string (one code point per byte) back to the raw bytes it stands for; false on failure.
bool unicode_to_bytes(std::string_view token, std::string& bytes) {
  bytes.clear();
  for (size_t pos = 0; pos < token.size();) {
    const int b = unicode_to_byte(next_code_point(token, pos));
    if (b < 0) return false;
    bytes += static_cast<char>(b);
  }
  return true;
}

// Lets the cache be searched with a string_view (no std::string built per lookup).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

struct GPT2Tokenizer::Impl {
  std::vector<std::string> token_bytes;  // (vocab_size) raw bytes of each token id
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> id_of;  // vocabulary string -> id
  std::string files;  // where it was read from, for describe()
  BpeMerges merges;
  PreTokenizer pretokenizer;
  int32_t eot = -1;

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;

  explicit Impl(const std::array<int32_t, 256>& byte_ids) : merges(byte_ids) {}

  void encode_ordinary(std::string_view text, std::vector<int32_t>& ids) const;
};

// ---------------------------------------------------------------------------------------------------
// Loading

GPT2Tokenizer GPT2Tokenizer::from_files(const fs::path& encoder_json_path, const fs::path& vocab_bpe_path) {
  // encoder.json: {"token string": id, ...}; the strings use the bytes_to_unicode alphabet.
  const std::string encoder_text = read_file(encoder_json_path, "GPT-2 encoder.json");
  const std::string where_json = encoder_json_path.string();
  const nlohmann::json encoder = parse_json(encoder_text, fmt::format("GPT-2 encoder.json '{}'", where_json));
  LORA_CHECK(encoder.is_object() && !encoder.empty(), "GPT-2 encoder.json '{}': expected a non-empty JSON object",
             where_json);

  const size_t vocab = encoder.size();
  std::vector<std::string> token_bytes(vocab);
  std::vector<bool> seen(vocab, false);
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> id_of;  // vocabulary string -> id
  id_of.reserve(vocab);
  for (const auto& [token, value] : encoder.items()) {
    LORA_CHECK(value.is_number_integer(), "GPT-2 encoder.json '{}': the id of token \"{}\" is not an integer",
               where_json, token);
    const auto id = value.get<int64_t>();
    LORA_CHECK(id >= 0 && static_cast<size_t>(id) < vocab && !seen[id],
               "GPT-2 encoder.json '{}': token \"{}\" has id {}, but ids must be 0..{} with each used once", where_json,
               token, id, vocab - 1);
    seen[id] = true;
    LORA_CHECK(unicode_to_bytes(token, token_bytes[id]),
               "GPT-2 encoder.json '{}': token \"{}\" (id {}) has a character outside GPT-2's byte alphabet",
               where_json, token, id);
    id_of.emplace(token, static_cast<int32_t>(id));
  }

  std::array<int32_t, 256> byte_ids{};
  for (int b = 0; b < 256; ++b) {
    std::string one;
    append_utf8(one, byte_to_unicode(static_cast<uint8_t>(b)));
    auto it = id_of.find(one);
    LORA_CHECK(it != id_of.end(), "GPT-2 encoder.json '{}': no token for byte 0x{:02X} (\"{}\")", where_json, b, one);
    byte_ids[b] = it->second;
  }
  auto impl = std::make_unique<Impl>(byte_ids);
  impl->token_bytes = std::move(token_bytes);
  impl->files = fmt::format("'{}' + '{}'", encoder_json_path.string(), vocab_bpe_path.string());
  auto eot = id_of.find(std::string(kEndOfText));
  LORA_CHECK(eot != id_of.end(), "GPT-2 encoder.json '{}': no \"{}\" token", where_json, kEndOfText);
  impl->eot = eot->second;

  // vocab.bpe: "#version: 0.2", then one merge "left right" per line, rank 0 first.
  const std::string merges_text = read_file(vocab_bpe_path, "GPT-2 vocab.bpe");
  const std::string where_bpe = vocab_bpe_path.string();
  std::string_view rest = merges_text;
  int32_t rank = 0;
  for (size_t line_no = 1; !rest.empty(); ++line_no) {
    const size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;

    const size_t space = line.find(' ');
    LORA_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string_view::npos,
               "GPT-2 vocab.bpe '{}' line {}: expected two tokens separated by one space, got \"{}\"", where_bpe,
               line_no, line);
    const std::string left(line.substr(0, space)), right(line.substr(space + 1));
    auto id = [&](const std::string& token) {
      auto it = id_of.find(token);
      LORA_CHECK(it != id_of.end(), "GPT-2 vocab.bpe '{}' line {}: token \"{}\" is not in encoder.json '{}'", where_bpe,
                 line_no, token, where_json);
      return it->second;
    };
    impl->merges.add(rank++, id(left), id(right), id(left + right),
                     fmt::format("GPT-2 vocab.bpe '{}' line {}", where_bpe, line_no));
  }
  LORA_CHECK(rank > 0, "GPT-2 vocab.bpe '{}': no merges", where_bpe);
  impl->id_of = std::move(id_of);
  return GPT2Tokenizer(std::move(impl));
}

fs::path GPT2Tokenizer::default_dir() {
  if (const char* dir = std::getenv("LORA_TOKENIZER_DIR"); dir != nullptr && *dir != '\0') return dir;
  // The source tree's copy while it exists (the programs and tests run from it), else the installed one.
  const fs::path source_copy = fs::path(LORA_SOURCE_DIR) / "data" / "gpt2";
  std::error_code ec;
  if (fs::exists(source_copy / "encoder.json", ec)) return source_copy;
  return fs::path(LORA_INSTALL_DATA_DIR) / "gpt2";
}

GPT2Tokenizer GPT2Tokenizer::load_default() {
  const fs::path dir = default_dir();
  try {
    return from_files(dir / "encoder.json", dir / "vocab.bpe");
  } catch (const Error& e) {
    LORA_FAIL(
        "{} (the tokenizer files are looked for in $LORA_TOKENIZER_DIR, else <source dir>/data/gpt2, else the "
        "installed <prefix>/share/lora/data/gpt2)",
        e.what());
  }
}

GPT2Tokenizer::GPT2Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GPT2Tokenizer::GPT2Tokenizer(GPT2Tokenizer&&) noexcept = default;
GPT2Tokenizer& GPT2Tokenizer::operator=(GPT2Tokenizer&&) noexcept = default;
GPT2Tokenizer::~GPT2Tokenizer() = default;

// ---------------------------------------------------------------------------------------------------
// Encode and decode

void GPT2Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<std::string_view> pieces;
  pretokenizer.split(text, pieces);
  for (const std::string_view piece : pieces) {
    // One byte is one token, and long pieces are rare and would bloat the cache: no cache for them.
    if (piece.size() == 1 || piece.size() > kMaxCachedPieceBytes) {
      merges.encode_piece(piece, ids);
      continue;
    }
    {
      std::shared_lock lock(cache_mutex);
      if (auto it = cache.find(piece); it != cache.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    const size_t first = ids.size();
    merges.encode_piece(piece, ids);
    std::unique_lock lock(cache_mutex);
    if (cache.size() >= kMaxCacheEntries) cache.clear();  // crude but bounded; refills with what is used
    cache.try_emplace(std::string(piece), ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end());
  }
}

std::vector<int32_t> GPT2Tokenizer::encode(std::string_view text, bool allow_special) const {
  const size_t bad = find_invalid_utf8(text);
  LORA_CHECK(bad == std::string_view::npos, "GPT-2 encode: invalid UTF-8 at byte offset {} (byte 0x{:02X})", bad,
             static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);  // English averages about 4 bytes per token
  if (allow_special) {
    // Each "<|endoftext|>" becomes eot; the text between occurrences is encoded on its own, as tiktoken does.
    size_t pos = 0;
    for (size_t hit; (hit = text.find(kEndOfText, pos)) != std::string_view::npos; pos = hit + kEndOfText.size()) {
      impl_->encode_ordinary(text.substr(pos, hit - pos), ids);
      ids.push_back(impl_->eot);
    }
    text = text.substr(pos);
  }
  impl_->encode_ordinary(text, ids);
  return ids;
}

const std::string& GPT2Tokenizer::token_bytes(int32_t id) const {
  LORA_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->token_bytes.size(),
             "GPT-2 decode: token id {} is outside the vocabulary (ids 0..{})", id, impl_->token_bytes.size() - 1);
  return impl_->token_bytes[static_cast<size_t>(id)];
}

std::string GPT2Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size() * 4);
  for (const int32_t id : ids) text += token_bytes(id);
  return text;
}

int32_t GPT2Tokenizer::eot_token() const {
  return impl_->eot;
}
size_t GPT2Tokenizer::vocab_size() const {
  return impl_->token_bytes.size();
}
size_t GPT2Tokenizer::num_merges() const {
  return impl_->merges.size();
}

size_t GPT2Tokenizer::cache_size() const {
  std::shared_lock lock(impl_->cache_mutex);
  return impl_->cache.size();
}

void GPT2Tokenizer::clear_cache() const {
  std::unique_lock lock(impl_->cache_mutex);
  impl_->cache.clear();
}

// ---------------------------------------------------------------------------------------------------
// The Tokenizer interface

std::vector<int32_t> GPT2Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  return encode(text, options.parse_special_tokens);  // GPT-2 adds no special tokens around the text
}

Encoding GPT2Tokenizer::encode_with_offsets(std::string_view text, const EncodeOptions& options) const {
  // Byte-level without a normalizer: the tokens' bytes, end to end, are the text.
  Encoding e{encode(text, options), {}};
  e.offsets.reserve(e.ids.size());
  size_t offset = 0;
  for (const int32_t id : e.ids) {
    e.offsets.push_back(offset);
    offset += token_bytes(id).size();
  }
  return e;
}

std::string GPT2Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  if (!options.skip_special_tokens) return decode(ids);
  std::string text;
  text.reserve(ids.size() * 4);
  for (const int32_t id : ids)
    if (id != impl_->eot) text += token_bytes(id);
  return text;
}

std::optional<int32_t> GPT2Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->id_of.find(token);
  if (it == impl_->id_of.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> GPT2Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->token_bytes.size()) return std::nullopt;
  std::string token;
  for (const char b : impl_->token_bytes[static_cast<size_t>(id)])
    append_utf8(token, byte_to_unicode(static_cast<uint8_t>(b)));
  return token;
}

std::string GPT2Tokenizer::describe() const {
  return fmt::format("GPT-2 BPE ({}): {} tokens, {} merges", impl_->files, vocab_size(), num_merges());
}

}  // namespace lora::tokenizer
