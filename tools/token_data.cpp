// Token data: loading, splitting and batch sampling.
#include "tools/token_data.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/files.h"

namespace lora::tools {

std::vector<int32_t> read_llmc_tokens(const std::string& path) {
  std::error_code ec;
  LORA_CHECK(is_regular_file(path), "token file '{}': no such file (or not a regular file)", path);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.good(), "cannot open token file '{}'", path);
  int32_t header[256] = {};
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  LORA_CHECK(in.gcount() == sizeof(header), "token file '{}': shorter than its 1024-byte header", path);
  LORA_CHECK(header[0] == 20240520, "token file '{}': bad magic {} (expected 20240520, an llm.c .bin)", path, header[0]);
  // Version 1: GPT-2 tokens as uint16; version 2: LLaMA-3 tokens as uint32.
  LORA_CHECK(header[1] == 1 || header[1] == 2, "token file '{}': unsupported version {} (expected 1 or 2)", path, header[1]);
  LORA_CHECK(header[2] >= 0, "token file '{}': negative token count {}", path, header[2]);
  const uint64_t width = header[1] == 1 ? 2 : 4, count = static_cast<uint64_t>(header[2]);
  const auto size = std::filesystem::file_size(path, ec);
  LORA_CHECK(!ec && size == sizeof(header) + count * width,
             "token file '{}': the header announces {} tokens of {} bytes ({} bytes with the header), but the file has {}",
             path, count, width, sizeof(header) + count * width, size);
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  if (width == 2) {
    std::vector<uint16_t> raw(tokens.size());
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(count * 2));
    std::copy(raw.begin(), raw.end(), tokens.begin());
  } else {
    std::vector<uint32_t> raw(tokens.size());
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(count * 4));
    for (size_t i = 0; i < raw.size(); ++i) {
      LORA_CHECK(raw[i] <= static_cast<uint32_t>(INT32_MAX), "token file '{}': token {} at position {} is too large", path,
                 raw[i], i);
      tokens[i] = static_cast<int32_t>(raw[i]);
    }
  }
  LORA_CHECK(in.good(), "token file '{}': read failed", path);
  return tokens;
}

bool is_token_file(const std::string& path) { return std::filesystem::path(path).extension() == ".bin"; }

TokenSplit load_token_split(const std::string& path, const tokenizer::Tokenizer* tokenizer, double train_fraction) {
  LORA_CHECK(path_exists(path), "--data '{}': no such file", path);
  LORA_CHECK(train_fraction > 0 && train_fraction < 1, "train fraction {} is outside (0, 1)", train_fraction);
  TokenSplit split;
  if (is_token_file(path)) {
    std::vector<int32_t> tokens = read_llmc_tokens(path);
    const size_t cut = static_cast<size_t>(static_cast<double>(tokens.size()) * train_fraction);
    split.train.assign(tokens.begin(), tokens.begin() + cut);
    split.val.assign(tokens.begin() + cut, tokens.end());
    return split;
  }
  const std::string text = read_file(path, "--data");
  // Cut at a character boundary (a UTF-8 continuation byte starts 10xxxxxx).
  size_t cut = static_cast<size_t>(static_cast<double>(text.size()) * train_fraction);
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  LORA_CHECK(tokenizer != nullptr, "--data '{}': a text file needs a tokenizer", path);
  const tokenizer::EncodeOptions as_text{.add_special_tokens = false, .parse_special_tokens = false};
  try {
    split.train = tokenizer->encode(std::string_view(text).substr(0, cut), as_text);
    split.val = tokenizer->encode(std::string_view(text).substr(cut), as_text);
  } catch (const Error& e) {
    LORA_FAIL("--data '{}': {}", path, e.what());
  }
  return split;
}

BatchSampler::BatchSampler(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq, uint64_t seed,
                           const std::string& what)
    : tokens_(tokens), batch_(batch), seq_(seq), gen_(seed) {
  LORA_CHECK(batch > 0 && seq > 0, "batch {} and sequence length {} must be positive", batch, seq);
  LORA_CHECK(static_cast<int64_t>(tokens.size()) > seq,
             "the {} data has {} tokens, too few for windows of {} + 1 tokens", what, tokens.size(), seq);
}

void BatchSampler::next_shard(Tensor& inputs, Tensor& targets, Device device, int shard, int shards) {
  LORA_CHECK(shards >= 1 && shard >= 0 && shard < shards, "batch sampler: shard {} of {}", shard, shards);
  std::vector<int32_t> x(static_cast<size_t>(batch_ * seq_)), y(x.size());
  const uint64_t starts = tokens_.size() - static_cast<size_t>(seq_);
  for (int64_t b = 0; b < batch_ * shards; ++b) {
    const size_t start = gen_.below(starts);  // every rank draws every window: the generators stay equal
    const int64_t row = b - int64_t(shard) * batch_;
    if (row < 0 || row >= batch_) continue;
    for (int64_t t = 0; t < seq_; ++t) {
      x[row * seq_ + t] = tokens_[start + t];
      y[row * seq_ + t] = tokens_[start + t + 1];
    }
  }
  inputs = Tensor::from_vector(x, {batch_, seq_}, device);
  targets = Tensor::from_vector(y, {batch_, seq_}, device);
}

}  // namespace lora::tools
