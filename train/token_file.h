// llm.c token files, as llm.c's dev/data/data_common.py writes them: a header of 256 little-endian int32
// (magic, version, token count, the rest 0), then the tokens:
//   magic 20240520, version 1: GPT-2 ids as uint16
//   magic 20240801, version 7: Llama 3 ids as uint32
// Any other magic or version is refused, naming the file and what was found.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lora::train {

inline constexpr int32_t kLlmcGpt2Magic = 20240520;    // version 1, uint16 tokens
inline constexpr int32_t kLlmcLlama3Magic = 20240801;  // version 7, uint32 tokens

// Whether the file starts with one of llm.c's magic numbers (it may still be malformed: read it to know).
bool has_llmc_magic(const std::string& path);

// Reads every token. Errors name the file: missing, shorter than its header, an unknown magic or version,
// a token count that disagrees with the file's size, an id beyond int32.
std::vector<int32_t> read_llmc_tokens(const std::string& path);

// Writes `tokens` in the format of `magic` (version 1 with uint16 ids, or version 7 with uint32 ids),
// atomically; refuses ids that do not fit the format.
void write_llmc_tokens(const std::string& path, const std::vector<int32_t>& tokens, int32_t magic = kLlmcGpt2Magic);

}  // namespace lora::train
