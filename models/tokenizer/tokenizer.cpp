// load_tokenizer (which files a path holds) and IncrementalDecoder (tokenizers' DecodeStream).
#include "models/tokenizer/tokenizer.h"

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"

namespace lora::tokenizer {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------
// IncrementalDecoder

namespace {

// True when `text` may still change as more ids arrive: it ends with U+FFFD (what tokenizers' decoders
// write for an incomplete character, and what its DecodeStream waits on) or with the raw bytes of an
// incomplete character (GPT2Tokenizer).
bool ends_incomplete(std::string_view text) {
  if (text.ends_with("\xEF\xBF\xBD")) return true;
  // An incomplete character is a lead byte followed by fewer continuation bytes than it needs.
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back;
  }
  return false;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, DecodeOptions options)
    : tokenizer_(tokenizer), options_(options) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (prefix_.empty() && !ids_.empty()) {
    std::string new_prefix = tokenizer_.decode(ids_, options_);
    if (!ends_incomplete(new_prefix)) {
      prefix_ = std::move(new_prefix);
      prefix_index_ = ids_.size();
    }
  }
  ids_.push_back(id);
  std::string text = tokenizer_.decode(ids_, options_);
  if (text.size() <= prefix_.size() || ends_incomplete(text)) return {};
  LORA_CHECK(text.starts_with(prefix_),
             "incremental decode: decoding id {} changed text already emitted (\"{}\" is no longer a prefix)", id,
             prefix_);
  std::string fresh = text.substr(prefix_.size());
  // Keep the ids after the old prefix: they give the decoder its left context for the next ids.
  const size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
  prefix_ = tokenizer_.decode(ids_, options_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

std::string IncrementalDecoder::finish() {
  std::string rest;
  if (!ids_.empty()) {
    const std::string text = tokenizer_.decode(ids_, options_);
    if (text.size() > prefix_.size() && text.starts_with(prefix_)) rest = text.substr(prefix_.size());
  }
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return rest;
}

// ---------------------------------------------------------------------------------------------------
// load_tokenizer

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  LORA_CHECK(fs::exists(status), "tokenizer '{}': no such file or folder", path.string());
  if (fs::is_regular_file(status)) {
    LORA_CHECK(path.extension() == ".json",
               "tokenizer '{}': expected a tokenizer.json file or a model folder (holding tokenizer.json, "
               "vocab.json + merges.txt, or encoder.json + vocab.bpe)",
               path.string());
    return std::make_unique<HFTokenizer>(HFTokenizer::from_file(path));
  }
  LORA_CHECK(fs::is_directory(status), "tokenizer '{}': not a file or folder", path.string());
  if (fs::exists(path / "tokenizer.json"))
    return std::make_unique<HFTokenizer>(HFTokenizer::from_file(path / "tokenizer.json"));
  if (fs::exists(path / "vocab.json") && fs::exists(path / "merges.txt"))
    return std::make_unique<GPT2Tokenizer>(GPT2Tokenizer::from_files(path / "vocab.json", path / "merges.txt"));
  if (fs::exists(path / "encoder.json") && fs::exists(path / "vocab.bpe"))
    return std::make_unique<GPT2Tokenizer>(GPT2Tokenizer::from_files(path / "encoder.json", path / "vocab.bpe"));
  LORA_FAIL(
      "tokenizer folder '{}': found none of tokenizer.json, vocab.json + merges.txt, encoder.json + "
      "vocab.bpe",
      path.string());
}

}  // namespace lora::tokenizer
