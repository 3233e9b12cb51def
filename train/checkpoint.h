// Resumable training checkpoints. A run killed at any moment and resumed from its newest checkpoint ends
// with exactly the weights of an uninterrupted run (on the CPU, with the same thread count), because a
// checkpoint holds everything the next steps depend on:
//
//   DIR/checkpoint-<step>/
//     trainable.safetensors   the trainable parameters by name (the whole model, or LoRA's A and B)
//     optimizer.safetensors   the optimizer's moments and step counts, by parameter name
//     best.safetensors        with early stopping: the trainable weights of the best evaluation so far
//     state.json              format version, steps done, the run's settings, the model's config, a
//                             fingerprint of the frozen weights, the data's position (its BatchSource's
//                             state: a generator, or an epoch and a row), every random stream's counter
//                             (dropout), the losses and evaluations so far
//
// Each checkpoint folder is written as one commit (staging folder + rename): it exists complete or not at
// all, and the previous checkpoint stays until the new one is in place.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "optim/optimizer.h"

namespace lora::train {

// What identifies a run: a checkpoint resumes only the run it was written by.
struct RunIdentity {
  nlohmann::json settings;         // the flags that shape the run (mode, LoRA rank and targets, batch, lr, ...)
  nlohmann::json model;            // the model's config.json
  std::string frozen_fingerprint;  // of the frozen weights' names, shapes and values
  nlohmann::json data;             // the data file and its token counts

  // Fingerprints `model`'s frozen parameters (names, shapes, every value): 16 hex digits.
  static std::string fingerprint(const models::CausalLM& model);
};

// What changes from step to step besides the weights and the optimizer.
struct TrainingProgress {
  int64_t step = 0;           // optimizer steps done (skipped non-finite steps included)
  int64_t skipped_steps = 0;  // steps skipped for a non-finite loss or gradient
  nlohmann::json data;        // the training BatchSource's state
  std::vector<double> losses;
  std::vector<std::pair<int64_t, double>> evals;  // (step, held-out loss)
  // Early stopping: the best held-out loss so far, its step (0: none yet), the evaluations since, and the
  // trainable weights of that step (host copies, by name; written as best.safetensors).
  int64_t best_step = 0, evals_since_best = 0;
  double best_eval = 0;
  std::vector<std::pair<std::string, Tensor>> best_weights;
};

// Writes DIR/checkpoint-<progress.step> as one commit and removes all but the newest `keep` checkpoints.
// Returns the checkpoint's path. Refuses to write inf or nan.
std::string save_training_checkpoint(const std::string& dir, const models::CausalLM& model,
                                     const optim::Optimizer& optimizer, const RunIdentity& identity,
                                     const TrainingProgress& progress, int keep = 2);

// The newest complete checkpoint in DIR (the highest step), or "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// Checks that the checkpoint at `path` belongs to this run (format version, model, frozen weights,
// trainable parameters, settings) and refuses, naming what differs, before changing anything; then
// restores the trainable weights, the optimizer and the random streams and returns the progress.
TrainingProgress load_training_checkpoint(const std::string& path, models::CausalLM& model, optim::Optimizer& optimizer,
                                          const RunIdentity& identity);

}  // namespace lora::train
