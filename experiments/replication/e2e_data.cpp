// E2E NLG data: reading, grouping by meaning representation, encoding with a loss mask, padded batches.
#include "experiments/replication/e2e_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"

namespace lora::tools {

std::vector<E2EExample> read_e2e(const std::string& path) {
  std::error_code ec;
  LORA_CHECK(std::filesystem::is_regular_file(path, ec), "E2E file '{}': no such file", path);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.good(), "E2E file '{}': cannot open", path);
  std::vector<E2EExample> out;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t sep = line.find("||");
    LORA_CHECK(sep != std::string::npos && line.find("||", sep + 2) == std::string::npos,
               "E2E file '{}', line {}: expected 'MR||reference' with exactly one '||'", path, number);
    E2EExample e{line.substr(0, sep), line.substr(sep + 2)};
    while (!e.ref.empty() && e.ref.back() == ' ') e.ref.pop_back();
    LORA_CHECK(!e.mr.empty() && !e.ref.empty(), "E2E file '{}', line {}: empty meaning representation or reference",
               path, number);
    out.push_back(std::move(e));
  }
  LORA_CHECK(!out.empty(), "E2E file '{}': no examples", path);
  return out;
}

std::vector<E2EGroup> group_by_mr(const std::vector<E2EExample>& examples) {
  std::vector<E2EGroup> groups;
  std::map<std::string, size_t> where;
  for (const auto& e : examples) {
    auto [it, fresh] = where.emplace(e.mr, groups.size());
    if (fresh) groups.push_back({e.mr, {}});
    groups[it->second].refs.push_back(e.ref);
  }
  return groups;
}

std::string e2e_prompt(const std::string& mr) {
  return mr + " ||";
}

LMExample encode_e2e(const tokenizer::Tokenizer& tok, int32_t end_token, const E2EExample& example,
                     int64_t max_tokens) {
  // Special-token text inside the data stays text: an E2E line cannot inject an end token.
  const tokenizer::EncodeOptions plain{.add_special_tokens = false, .parse_special_tokens = false};
  LMExample out;
  out.ids = tok.encode(e2e_prompt(example.mr), plain);
  out.prompt_len = static_cast<int64_t>(out.ids.size());
  const std::vector<int32_t> ref = tok.encode(" " + example.ref, plain);
  out.ids.insert(out.ids.end(), ref.begin(), ref.end());
  out.ids.push_back(end_token);
  if (static_cast<int64_t>(out.ids.size()) > max_tokens) out.ids.resize(static_cast<size_t>(max_tokens));
  LORA_CHECK(out.prompt_len + 1 < static_cast<int64_t>(out.ids.size()),
             "E2E example '{}': its prompt alone fills the {} tokens allowed", example.mr, max_tokens);
  return out;
}

void make_lm_batch(const std::vector<LMExample>& examples, std::span<const int64_t> rows, int32_t pad, Tensor& inputs,
                   Tensor& targets, Device device) {
  LORA_CHECK(!rows.empty(), "make_lm_batch: no rows");
  int64_t T = 1;
  for (int64_t r : rows) T = std::max(T, static_cast<int64_t>(examples.at(static_cast<size_t>(r)).ids.size()) - 1);
  const int64_t B = static_cast<int64_t>(rows.size());
  std::vector<int32_t> x(static_cast<size_t>(B * T), pad), y(static_cast<size_t>(B * T), -100);
  for (int64_t b = 0; b < B; ++b) {
    const LMExample& e = examples[static_cast<size_t>(rows[static_cast<size_t>(b)])];
    const int64_t len = static_cast<int64_t>(e.ids.size());
    for (int64_t t = 0; t + 1 < len; ++t) {
      x[static_cast<size_t>(b * T + t)] = e.ids[static_cast<size_t>(t)];
      if (t + 1 >= e.prompt_len) y[static_cast<size_t>(b * T + t)] = e.ids[static_cast<size_t>(t + 1)];
    }
  }
  inputs = Tensor::from_vector(x, {B, T}, device);
  targets = Tensor::from_vector(y, {B, T}, device);
}

int64_t count_targets(const std::vector<LMExample>& examples, std::span<const int64_t> rows) {
  int64_t n = 0;
  for (int64_t r : rows) {
    const LMExample& e = examples.at(static_cast<size_t>(r));
    n += static_cast<int64_t>(e.ids.size()) - std::max<int64_t>(e.prompt_len, 1);
  }
  return n;
}

}  // namespace lora::tools
