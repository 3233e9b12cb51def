// llm.c token files: reading (checked against the header) and writing.
#include "train/token_file.h"

#include <filesystem>
#include <fstream>
#include <limits>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"

namespace lora::train {
namespace {

constexpr size_t kHeaderInts = 256;
constexpr size_t kHeaderBytes = kHeaderInts * sizeof(int32_t);

// The token width of a (magic, version) pair llm.c writes, or 0.
int token_bytes(int32_t magic, int32_t version) {
  if (magic == kLlmcGpt2Magic && version == 1) return 2;
  if (magic == kLlmcLlama3Magic && version == 7) return 4;
  return 0;
}

}  // namespace

bool has_llmc_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), sizeof(magic));
  return in.gcount() == sizeof(magic) && (magic == kLlmcGpt2Magic || magic == kLlmcLlama3Magic);
}

std::vector<int32_t> read_llmc_tokens(const std::string& path) {
  LORA_CHECK(is_regular_file(path), "token file '{}': no such file (or not a regular file)", path);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.good(), "token file '{}': cannot open it", path);
  int32_t header[kHeaderInts] = {};
  in.read(reinterpret_cast<char*>(header), kHeaderBytes);
  const std::streamsize got = in.gcount();
  const int32_t magic = header[0], version = header[1], count = header[2];
  LORA_CHECK(got < 4 || magic == kLlmcGpt2Magic || magic == kLlmcLlama3Magic,
             "token file '{}': magic {} is not llm.c's ({} for GPT-2 tokens, {} for Llama 3 tokens)", path, magic,
             kLlmcGpt2Magic, kLlmcLlama3Magic);
  LORA_CHECK(got == std::streamsize(kHeaderBytes), "token file '{}': shorter than llm.c's {}-byte header", path,
             kHeaderBytes);
  const int width = token_bytes(magic, version);
  LORA_CHECK(width > 0, "token file '{}': version {} under magic {}; llm.c writes version {} there", path, version,
             magic, magic == kLlmcGpt2Magic ? "1 (uint16 ids)" : "7 (uint32 ids)");
  LORA_CHECK(count >= 0, "token file '{}': a negative token count ({}) in its header", path, count);
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  const uint64_t expected = kHeaderBytes + uint64_t(count) * uint64_t(width);
  LORA_CHECK(!ec && size == expected,
             "token file '{}': its header announces {} tokens of {} bytes ({} bytes with the header), but the file "
             "has {} bytes",
             path, count, width, expected, ec ? 0 : size);
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  if (width == 2) {
    std::vector<uint16_t> raw(tokens.size());
    in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size() * 2));
    std::copy(raw.begin(), raw.end(), tokens.begin());
  } else {
    std::vector<uint32_t> raw(tokens.size());
    in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size() * 4));
    for (size_t i = 0; i < raw.size(); ++i) {
      LORA_CHECK(raw[i] <= uint32_t(std::numeric_limits<int32_t>::max()),
                 "token file '{}': token {} (at position {}) is beyond any vocabulary", path, raw[i], i);
      tokens[i] = int32_t(raw[i]);
    }
  }
  LORA_CHECK(in.good() || count == 0, "token file '{}': reading its tokens failed", path);
  return tokens;
}

void write_llmc_tokens(const std::string& path, const std::vector<int32_t>& tokens, int32_t magic) {
  const int width = token_bytes(magic, magic == kLlmcGpt2Magic ? 1 : 7);
  LORA_CHECK(width > 0, "token file '{}': magic {} is not llm.c's ({} or {})", path, magic, kLlmcGpt2Magic,
             kLlmcLlama3Magic);
  LORA_CHECK(tokens.size() < (size_t(1) << 31), "token file '{}': {} tokens, llm.c's header holds fewer than 2^31",
             path, tokens.size());
  const int64_t limit = width == 2 ? 65535 : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < tokens.size(); ++i) {
    LORA_CHECK(tokens[i] >= 0 && tokens[i] <= limit, "token file '{}': token {} at position {} does not fit {}", path,
               tokens[i], i, width == 2 ? "uint16 (GPT-2's format)" : "uint32");
  }
  int32_t header[kHeaderInts] = {};
  header[0] = magic;
  header[1] = magic == kLlmcGpt2Magic ? 1 : 7;
  header[2] = int32_t(tokens.size());
  write_file_atomically(path, [&](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(header), kHeaderBytes);
    if (width == 2) {
      const std::vector<uint16_t> raw(tokens.begin(), tokens.end());
      out.write(reinterpret_cast<const char*>(raw.data()), std::streamsize(raw.size() * 2));
    } else {
      out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 4));
    }
  });
}

}  // namespace lora::train
