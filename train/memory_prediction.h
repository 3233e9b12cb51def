// Predicting a training step's memory from what the tape saves, without allocating it: the step runs on
// the meta device, where every tensor has its shape and is charged to the MemoryTracker by category but
// holds no memory and no kernel runs. The model is built there from its config, LoRA applied with the same
// settings, and two steps taken by train_step (forward, backward, clipping, AdamW: the second step sees the
// optimizer state); the meta device's peaks are the prediction. Each op saves on meta exactly what it saves on the
// CPU (OpRecord::save), so the prediction follows the model, the targets and the ops, with no per-model
// arithmetic; tests hold it against the measured step for every model.
#pragma once

#include <cstdint>
#include <string>

#include "core/memory.h"
#include "core/quantized.h"
#include "models/registry.h"
#include "nn/lora/apply_lora.h"

namespace lora::train {

struct StepMemoryPrediction {
  MemoryFigures peak;          // per category: the most it holds during a step
  MemoryFigures live_at_peak;  // per category, at the moment of the largest total
  int64_t total_peak = 0;      // the largest total
};

// `lora` null: full fine-tuning. The prediction covers the step alone (the model and optimizer state it
// keeps, and what the step allocates), as the finetune report measures it.
// `base`: the frozen base's format under LoRA (models/quantize_base.h); `checkpoint`: activation
// checkpointing of every block (autograd/checkpoint.h).
// `tables`: a GGUF file's token embedding and output head held compact (models/base_dtype.h).
StepMemoryPrediction predict_training_step(const models::ModelConfig& config, const nn::LoRAConfig* lora, int64_t batch,
                                           int64_t seq, QuantFormat base = QuantFormat::F32, bool checkpoint = false,
                                           const models::CompactTables& tables = {});

// Memory this process can still use: MemAvailable, bounded by the cgroup's memory.max (containers).
int64_t available_host_memory();

// The pre-flight check: throws lora::Error with the prediction by category and what to change when
// predicted + `overhead` (code, libraries, data, allocator slack) exceeds `available`.
void check_fits(const StepMemoryPrediction& prediction, int64_t available, int64_t overhead, const std::string& what,
                const std::string& advice);

}  // namespace lora::train
