// E2E NLG data for causal-LM fine-tuning: reading `MR||reference` lines, grouping references by meaning
// representation, encoding `MR ||` + ` reference` + <|endoftext|> with the loss on the reference alone, and
// right-padded batches.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::tools {

struct E2EExample {
  std::string mr, ref;  // ref without the trailing space every line carries
};

// Reads a file of `MR||reference ` lines (exactly one "||" per line); errors name the file and line.
std::vector<E2EExample> read_e2e(const std::string& path);

// One meaning representation with all its references, in the order of their first appearance.
struct E2EGroup {
  std::string mr;
  std::vector<std::string> refs;
};
std::vector<E2EGroup> group_by_mr(const std::vector<E2EExample>& examples);

// The prompt a model continues: the MR and the separator "||" ("name : X | ... ||").
std::string e2e_prompt(const std::string& mr);

// A token sequence whose loss counts only the tokens from prompt_len on (the reference and the end token).
struct LMExample {
  std::vector<int32_t> ids;
  int64_t prompt_len = 0;
};

// prompt tokens = encode(MR + " ||"), then encode(" " + ref) + end_token; cut to max_tokens. Any tokenizer:
// the replication's own BPE, or GPT-2's with --weights.
LMExample encode_e2e(const tokenizer::Tokenizer& tok, int32_t end_token, const E2EExample& example, int64_t max_tokens);

// Inputs [B, T] and targets [B, T] for the examples `rows`, T = the longest (length - 1). Row b holds
// ids[0, len - 1) then `pad`; its target at t is ids[t + 1] when t + 1 >= prompt_len and t + 1 < len, else
// -100 (cross-entropy's ignore_index): padding and the prompt cost nothing. Right padding keeps a causal
// model's outputs at the real positions unchanged.
void make_lm_batch(const std::vector<LMExample>& examples, std::span<const int64_t> rows, int32_t pad, Tensor& inputs,
                   Tensor& targets, Device device = Device::cpu());

// The number of target tokens (not -100) of those rows: what a batch's mean loss averages over.
int64_t count_targets(const std::vector<LMExample>& examples, std::span<const int64_t> rows);

}  // namespace lora::tools
