// training_step_tour: prints what docs/training-step.md walks through, one training step of a small GPT-2:
// the tape the forward pass records (each node: op, output shape, what it saved for backward and in which
// memory category), then the MemoryTracker by category after each phase (model built, forward, backward,
// gradient clipping, AdamW step, zero_grad); then the same step with LoRA on q and v, and both side by side.
// No timings: the output is the same on every run, so the docs hold it and scripts/check-docs.sh compares.
//
//   training_step_tour                        # GPT-2 with 1 block, 32 wide, batch 2 x 8 tokens
//   training_step_tour --layers 2 --no-tape
//
// Read next: docs/training-step.md (this output, explained file by file), autograd/tape.h, core/memory.h.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/clip.h"

using namespace lora;

namespace {

constexpr MemoryCategory kCategories[] = {MemoryCategory::TrainableParameter, MemoryCategory::FrozenParameter,
                                          MemoryCategory::Gradient,           MemoryCategory::OptimizerState,
                                          MemoryCategory::Activation,         MemoryCategory::Workspace};

// The tape as a table. Saved tensors are summed by the category of their storage: an op output saved for
// backward is charged to 'activations'; a weight saved by reference keeps its own category (no new bytes).
void print_tape() {
  const auto& nodes = autograd::Tape::current().nodes();
  fmt::print("The tape after the forward pass: {} nodes\n", nodes.size());
  fmt::print("  {:>3}  {:<20} {:<14} {}\n", "#", "op", "output", "saved for backward");
  std::set<const Storage*> activations;  // distinct storages: what the tracker counts
  int64_t activation_bytes = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::map<std::string, std::pair<int, size_t>> by_category;  // category -> (tensors, bytes)
    for (const Tensor& t : nodes[i].saved) {
      auto& [count, bytes] = by_category[std::string(category_name(t.storage()->category()))];
      ++count, bytes += t.nbytes();
      if (t.storage()->category() == MemoryCategory::Activation && activations.insert(t.storage().get()).second) {
        activation_bytes += static_cast<int64_t>(t.storage()->nbytes());
      }
    }
    std::string saved;
    for (const auto& [category, figures] : by_category) {
      saved += fmt::format("{}{} in {} ({})", saved.empty() ? "" : ", ", format_bytes(int64_t(figures.second)),
                           figures.first == 1 ? "1 tensor" : fmt::format("{} tensors", figures.first), category);
    }
    fmt::print("  {:>3}  {:<20} {:<14} {}\n", i, nodes[i].op->name(), nodes[i].output_shape.str(),
               saved.empty() ? "-" : saved);
  }
  fmt::print("  distinct storages charged to activations: {}\n\n", format_bytes(activation_bytes));
}

using Snapshot = std::pair<std::string, MemoryFigures>;

void print_memory(const std::vector<Snapshot>& rows) {
  fmt::print("MemoryTracker, live bytes by category after each phase\n  {:<22}", "phase");
  for (MemoryCategory c : kCategories) fmt::print(" {:>17}", category_name(c));
  fmt::print(" {:>11}\n", "total");
  for (const auto& [phase, f] : rows) {
    fmt::print("  {:<22}", phase);
    for (MemoryCategory c : kCategories) fmt::print(" {:>17}", format_bytes(f[c]));
    fmt::print(" {:>11}\n", format_bytes(f.total()));
  }
}

struct StepResult {
  std::vector<Snapshot> rows;
  DeviceMemoryStats peak;  // peaks over the step
  int64_t trainable = 0;
};

// One training step, exactly as train_char_gpt and finetune take it, with a snapshot after each phase.
StepResult one_step(const nlohmann::json& config, bool use_lora, int64_t batch, int64_t seq, bool show_tape) {
  StepResult r;
  auto snapshot = [&](const std::string& phase) { r.rows.emplace_back(phase, MemoryTracker::instance().stats().live); };
  std::shared_ptr<models::CausalLM> model = models::create_model({config, "training_step_tour"}, 1);
  if (use_lora) {
    nn::LoRAConfig lora;  // r = 4 on the q and v slices of every c_attn (the LoRA paper's targets)
    lora.options.rank = 4;
    lora.targets = {"q", "v"};
    models::apply_lora(*model, lora);  // freezes the base (recharged to frozen_params), adds A and B
  }
  r.trainable = model->num_parameters(true);
  snapshot(use_lora ? "model + LoRA built" : "model built");

  Generator gen(7);  // token ids [batch, seq]: random, the same for both runs
  std::vector<int32_t> ids(static_cast<size_t>(batch * (seq + 1)));
  for (int32_t& id : ids) id = static_cast<int32_t>(gen.below(uint64_t(config["vocab_size"].get<int64_t>())));
  std::vector<int32_t> x(static_cast<size_t>(batch * seq)), y(x.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t)
      x[b * seq + t] = ids[b * (seq + 1) + t], y[b * seq + t] = ids[b * (seq + 1) + t + 1];
  }
  const Tensor inputs = Tensor::from_vector(x, {batch, seq}), targets = Tensor::from_vector(y, {batch, seq});
  std::vector<std::string> names;
  for (const auto& [name, p] : model->named_parameters(true)) names.push_back(name);
  optim::AdamW optimizer(model->parameters(true), {.lr = 1e-3}, names);
  snapshot("token ids made");
  MemoryTracker::instance().reset_peaks();

  Tensor loss = model->loss(inputs, targets);  // embedding -> blocks -> ln_f -> head + cross-entropy
  if (show_tape) print_tape();
  fmt::print("loss = {:.2f} (ln {} = {:.2f}: a random model guesses uniformly)\n", loss.item(),
             config["vocab_size"].get<int64_t>(), std::log(config["vocab_size"].get<double>()));
  snapshot("after forward");
  backward(loss);  // reverse over the tape: .grad on every trainable leaf, the tape emptied
  snapshot("after backward");
  const double norm = optim::clip_grad_norm(optimizer.params(), 0.5);  // scale every gradient by 0.5 / norm
  fmt::print("gradient norm {:.2f}, clipped to 0.5\n", norm);
  snapshot("after clipping");
  optimizer.step();  // first step: allocates exp_avg and exp_avg_sq beside each trainable parameter
  snapshot("after AdamW step");
  optimizer.zero_grad();  // releases the gradients
  snapshot("after zero_grad");
  r.peak = MemoryTracker::instance().stats();
  print_memory(r.rows);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "One training step of a small GPT-2, full and with LoRA: the tape and the memory by category, phase "
      "by phase (docs/training-step.md)."};
  int64_t layers = 1, embd = 32, heads = 2, vocab = 65, batch = 2, seq = 8;
  bool no_tape = false;
  app.add_option("--layers", layers, "transformer blocks")->check(CLI::Range(1, 48))->capture_default_str();
  app.add_option("--embd", embd, "width of the residual stream")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--heads", heads, "attention heads (must divide --embd)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--vocab", vocab, "vocabulary size")->check(CLI::Range(2, 100000))->capture_default_str();
  app.add_option("--batch", batch, "sequences")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--seq", seq, "tokens per sequence")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_flag("--no-tape", no_tape, "leave out the tapes (the memory tables only)");
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(1);  // the same arithmetic, so the same figures, on every machine
    LORA_CHECK(embd % heads == 0, "--heads {} must divide --embd {}", heads, embd);
    const nlohmann::json config = {{"model_type", "gpt2"}, {"vocab_size", vocab}, {"n_positions", seq},
                                   {"n_embd", embd},       {"n_layer", layers},   {"n_head", heads}};
    fmt::print("GPT-2 {}, batch {} x {} tokens\n\n== Full fine-tuning: every weight trains\n\n", config.dump(), batch,
               seq);
    const StepResult full = one_step(config, false, batch, seq, !no_tape);
    fmt::print("\n== LoRA, r = 4 on q and v: the base frozen\n\n");
    const StepResult lora = one_step(config, true, batch, seq, !no_tape);

    fmt::print("\n== Side by side: peak bytes per category over the step (forward to zero_grad)\n");
    fmt::print("  {:<20} {:>12} {:>12}\n", "", "full", "LoRA");
    fmt::print("  {:<20} {:>12} {:>12}\n", "trainable params", full.trainable, lora.trainable);
    for (MemoryCategory c : kCategories) {
      fmt::print("  {:<20} {:>12} {:>12}\n", category_name(c), format_bytes(full.peak.peak[c]),
                 format_bytes(lora.peak.peak[c]));
    }
    fmt::print("  {:<20} {:>12} {:>12}\n", "total at the peak", format_bytes(full.peak.global_peak),
               format_bytes(lora.peak.global_peak));
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
