// What replication_stages.cpp, replication_runs.cpp and replication_report.cpp share: the tokenised data,
// the paths of each stage's files and the stage functions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/memory.h"
#include "experiments/replication/e2e_data.h"
#include "experiments/replication/replication_stages.h"
#include "models/causal_lm.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::replicate {

struct Data {
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  int32_t eot = 0;  // <|endoftext|>: separates texts, ends every E2E reference, pads
  int64_t vocab_size = 0;
  std::vector<int32_t> corpus_train, corpus_val;   // pre-training text
  std::vector<int32_t> style_train, style_val;     // the held-out book
  std::vector<tools::LMExample> train, valid;      // E2E, loss on the reference
  std::vector<tools::E2EGroup> test;               // test MRs with all their references
  std::vector<std::vector<int32_t>> test_prompts;  // "MR ||" tokens, one per test MR
};

Data load_data(const Options& o, int64_t context);
nlohmann::json model_config(const Options& o, const Data& d);
std::shared_ptr<models::CausalLM> load_base(const Options& o);
nlohmann::json memory_json(const DeviceMemoryStats& s);
bool bit_identical(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                   const std::vector<std::pair<std::string, std::vector<float>>>& b);

// OUT/runs/NAME: a configuration's folder (chosen.json, eval.json); OUT/runs/NAME/lr-X: one run of its sweep
// (train.json, and the adapter or checkpoint). "base" is the pre-trained model, not fine-tuned.
fs::path run_dir(const Options& o, const std::string& name);
fs::path sweep_dir(const Options& o, const std::string& name, double lr);
std::string lr_text(double lr);  // "1e-03": the folder name's form
// The configuration's learning rates: its grid, extended past the edge that holds the best finished run.
std::vector<double> sweep_lrs(const Options& o, const RunSpec& spec);
// Whether a stage's result file exists and was computed from `inputs` (its "inputs" field): a sweep that grew
// or another chosen run makes the stages that used the old one run again.
bool stage_current(const fs::path& done, const nlohmann::json& inputs);
// The chosen run's folder (OUT/runs/NAME/lr-X, from chosen.json), or "" before the choice.
fs::path chosen_dir(const Options& o, const std::string& name);
// The chosen model of a configuration (the base with its adapter, or the fully fine-tuned checkpoint).
std::shared_ptr<models::CausalLM> load_run_model(const Options& o, const RunSpec& spec);

// Greedy generations of `model` for the test MRs, written to REPORT_DIR/generations/NAME.txt, with their BLEU
// and ROUGE-L: the "eval" object of a run.
nlohmann::json evaluate_generations(const Options& o, const Data& d, models::CausalLM& model, const std::string& name);

// Each returns 0, or 3 when --stop-after interrupted pre-training.
int stage_pretrain(const Options& o, const Data& d);
int stage_evaluate_base(const Options& o, const Data& d);
int stage_finetune(const Options& o, const Data& d, const RunSpec& spec, double lr);
int stage_choose(const Options& o, const RunSpec& spec);
int stage_evaluate(const Options& o, const Data& d, const RunSpec& spec);
int stage_style(const Options& o, const Data& d);
int stage_switching(const Options& o, const Data& d);
int stage_merging(const Options& o, const Data& d);
int stage_subspace(const Options& o);
int stage_step_timing(const Options& o, const Data& d);
// The paper's claims 1 to 6 from the gathered results (base, chosen runs, switching, merging, the quiet step
// timing): {claim, met (true, false, or null when not measured), figure}; each criterion is in its text.
nlohmann::json evaluate_claims(const nlohmann::json& base, const nlohmann::json& runs, const nlohmann::json& switching,
                               const nlohmann::json& merging, const nlohmann::json& timing);

// Gathers every stage's file into REPORT_DIR/results.json, results.md, the SVG plots, references.json;
// returns the checks' verdict (0: all passed, 2: some failed).
int write_report(const Options& o, const Data& d, double wall_seconds);

}  // namespace lora::replicate
