// What replication_stages.cpp and replication_report.cpp share: the tokenised data and the stage functions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/memory.h"
#include "models/causal_lm.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "tools/e2e_data.h"
#include "tools/replication_stages.h"

namespace lora::replicate {

struct Data {
  std::vector<int32_t> corpus_train, corpus_val;  // pre-training text
  std::vector<int32_t> style_train, style_val;    // the held-out book
  std::vector<tools::LMExample> train, valid;     // E2E, loss on the reference
  std::vector<tools::E2EGroup> test;              // test MRs with all their references
  std::vector<std::vector<int32_t>> test_prompts; // "MR ||" tokens, one per test MR
};

Data load_data(const Options& o, const tokenizer::GPT2Tokenizer& tok, int64_t context);
nlohmann::json model_config(const Options& o);
std::shared_ptr<models::CausalLM> load_base(const Options& o);
std::shared_ptr<models::CausalLM> load_run_model(const Options& o, const RunSpec& spec);
fs::path run_dir(const Options& o, const std::string& name);
nlohmann::json memory_json(const DeviceMemoryStats& s);
bool bit_identical(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                   const std::vector<std::pair<std::string, std::vector<float>>>& b);

// Each returns 0, or 3 when --stop-after interrupted pre-training.
int stage_pretrain(const Options& o, const Data& d);
int stage_finetune(const Options& o, const Data& d, const RunSpec& spec);
int stage_evaluate(const Options& o, const Data& d, const RunSpec& spec, const tokenizer::GPT2Tokenizer& tok);
int stage_style(const Options& o, const Data& d);
int stage_switching(const Options& o, const Data& d);
int stage_merging(const Options& o, const Data& d);
// Gathers every stage's file into REPORT_DIR/results.json, results.md, loss_curves.svg, references.json;
// returns the checks' verdict (0: all passed, 2: some failed).
int write_report(const Options& o, const Data& d, double wall_seconds);

}  // namespace lora::replicate
