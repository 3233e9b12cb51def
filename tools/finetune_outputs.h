// What finetune writes beside what it trains: training_settings.json (the resolved settings and the data's
// SHA-256) in every saved folder, the tokenizer files and the chat template beside an adapter or model so
// that the folder is ready to use, and the loss curve (SVG) of a --log file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "models/causal_lm.h"
#include "tools/finetune_data.h"
#include "tools/finetune_options.h"

namespace lora::tools {

// The settings a run resolved (computed steps, learning rate, detected format, --max-seq, ...) and the data's
// identity with its SHA-256.
nlohmann::json resolved_settings(const FinetuneOptions& o, const std::string& mode, int64_t steps, double lr,
                                 const FinetuneData& data, const std::string& base_model);

// Writes DIR/training_settings.json atomically.
void write_training_settings(const std::string& dir, const nlohmann::json& settings);

// Copies the tokenizer's files (tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json,
// merges.txt, tokenizer.model, when present) from where the tokenizer came from (--tokenizer, the model
// folder, GPT-2's own files for a GPT-2 model), and the chat template as chat_template.jinja (the one the data
// was rendered with, else the model folder's file), each atomically. Returns the names copied.
std::vector<std::string> copy_tokenizer_files(const std::string& dir, const FinetuneOptions& o,
                                              const models::CausalLM& model, const FinetuneData& data);

// Reads a --log file and writes its loss curve (training loss per step, held-out loss per evaluation) as an
// SVG beside it (the same name, .svg). Returns the SVG's path.
std::string write_loss_curve(const std::string& log_path);

}  // namespace lora::tools
