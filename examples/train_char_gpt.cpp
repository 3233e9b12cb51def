// train_char_gpt: rung 3 of the ladder. A small GPT-2 (the framework's own architecture, built by
// models::create_model from a config.json object) trained from scratch on Tiny Shakespeare with one token
// per character. Prints the loss with an ETA, held-out loss and samples as it learns, and saves the model
// (config.json + model.safetensors, Hugging Face's layout) with its vocabulary (char_vocab.json).
//
//   train_char_gpt                                  # the default run: see docs/ladder.md for time and loss
//   train_char_gpt --steps 40 --layers 1 --embd 32 --out runs/char_gpt_quick
//
// Read next: models/gpt2/model.cpp (the forward pass), models/registry.h (create_model), tools/char_lm.h
// (the vocabulary, held-out loss, sampling), docs/training-step.md (one step, file by file); then
// examples/lora_char_gpt.cpp (rung 4).
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>

#include "backends/backend.h"
#include "core/files.h"
#include "core/stopwatch.h"
#include "lora_source_dir.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/lr_schedule.h"
#include "tools/char_lm.h"
#include "train/train_step.h"
#include "train/window_source.h"

using namespace lora;

namespace {

struct Options {
  std::string data = std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt", out = "runs/char_gpt";
  std::string prompt = "\n";
  int64_t steps = 2500, batch = 12, seq = 64, layers = 3, embd = 96, heads = 4, warmup = 100;
  int64_t eval_every = 500, eval_batches = 16, log_every = 100, sample_chars = 200;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.0, grad_clip = 1.0, dropout = 0.0, temperature = 0.8;
  int64_t threads = 1;
  uint64_t seed = 1337;
  bool json = false;
};

void print_sample(models::CausalLM& model, const tools::CharVocab& vocab, const Options& o, int64_t chars,
                  const std::string& when) {
  models::SamplingOptions s;
  s.temperature = o.temperature;
  s.seed = o.seed;
  fmt::print("--- sample {} (temperature {:g}) ---\n{}{}\n---\n", when, o.temperature, o.prompt == "\n" ? "" : o.prompt,
             tools::sample_text(model, vocab, o.prompt, chars, s));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Train a small character-level GPT-2 from scratch on Tiny Shakespeare, with samples as it learns."};
  app.add_option("--data", o.data, "training text (ASCII; 90% trains, the last 10% is held out)")
      ->capture_default_str();
  app.add_option("--out", o.out, "folder to save the model (config.json, model.safetensors) and char_vocab.json into")
      ->capture_default_str();
  app.add_option("--steps", o.steps, "training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--seq", o.seq, "characters per sequence, and the model's context length")
      ->check(CLI::Range(int64_t{2}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--layers", o.layers, "transformer blocks")
      ->check(CLI::Range(int64_t{1}, int64_t{64}))
      ->capture_default_str();
  app.add_option("--embd", o.embd, "width of the residual stream")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--heads", o.heads, "attention heads (must divide --embd)")
      ->check(CLI::Range(int64_t{1}, int64_t{256}))
      ->capture_default_str();
  app.add_option("--dropout", o.dropout, "dropout of embeddings, residual branches and attention")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (AdamW)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "learning rate at the end of the cosine decay")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "steps of linear warm-up")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW's decoupled weight decay")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm to this (0: off)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "held-out loss and a sample every N steps (0: at the end only)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches, "held-out batches per evaluation (4x at the end)")
      ->check(CLI::Range(int64_t{1}, int64_t{10000}))
      ->capture_default_str();
  app.add_option("--log-every", o.log_every, "print the training loss every N steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--sample-chars", o.sample_chars, "characters per sample (twice as many at the end; 0: no samples)")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}))
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  app.add_option("--prompt", o.prompt, "text the samples continue (default: a newline)");
  app.add_option(
         "--threads", o.threads,
         "threads for the kernels (on a busy 2-core machine, two threads took 0.85 s a step against 0.15 s for one)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the weights, the batches and the samples")->capture_default_str();
  app.add_flag("--json", o.json, "end with one JSON line: losses, steps, seconds, where the model went");
  CLI11_PARSE(app, argc, argv);

  try {
    // Matrices 96 wide are too small to share across threads well: on two cores busy with other work, two
    // threads spent 0.85 s a step waiting on each other where one took 0.15 s.
    set_num_threads(static_cast<int>(o.threads));
    LORA_CHECK(o.embd % o.heads == 0, "--heads {} must divide --embd {}", o.heads, o.embd);
    LORA_CHECK(o.min_lr <= o.lr, "--min-lr {} is above --lr {}", o.min_lr, o.lr);
    LORA_CHECK(o.warmup < o.steps, "--warmup {} must be below --steps {}", o.warmup, o.steps);

    // ---- Data: one token per character; the first 90% trains, the rest is held out.
    const std::string text = read_file(o.data, "--data");
    const tools::CharVocab vocab = tools::CharVocab::from_text(text);
    const tools::CharSplit split = tools::split_ids(vocab.encode(text, "--data '" + o.data + "'"));
    LORA_CHECK(static_cast<int64_t>(split.val.size()) > o.seq,
               "--data '{}': {} held-out characters, too few for "
               "--seq {}",
               o.data, split.val.size(), o.seq);
    fmt::print("data: {} ({} characters, vocabulary of {}), {} for training, {} held out\n", o.data, text.size(),
               vocab.size(), split.train.size(), split.val.size());

    // ---- The model: GPT-2's architecture at a small size, described by the config.json it is saved with.
    const nlohmann::json config = {
        {"model_type", "gpt2"},    {"vocab_size", vocab.size()}, {"n_positions", o.seq},     {"n_embd", o.embd},
        {"n_layer", o.layers},     {"n_head", o.heads},          {"resid_pdrop", o.dropout}, {"embd_pdrop", o.dropout},
        {"attn_pdrop", o.dropout}, {"tie_word_embeddings", true}};
    std::shared_ptr<models::CausalLM> model = models::create_model({config, "train_char_gpt's flags"}, o.seed);
    fmt::print("model: {} -> {} parameters; threads: {}\n", config.dump(), model->num_parameters(), num_threads());

    std::vector<std::string> names;
    for (const auto& [name, p] : model->named_parameters(true)) names.push_back(name);
    optim::AdamW optimizer(model->parameters(true), {.lr = o.lr, .beta2 = 0.99, .weight_decay = o.weight_decay}, names);
    optim::LRSchedule schedule{optim::ScheduleKind::Cosine, o.lr, o.warmup, o.steps, o.min_lr};
    schedule.validate();
    train::WindowSource windows(split.train, o.batch, o.seq, o.seed, "training");
    const uint64_t eval_seed = o.seed + 999;  // the same held-out windows at every evaluation
    const double uniform = std::log(static_cast<double>(vocab.size()));
    fmt::print("held-out loss before training: {:.4f} (a uniform guess: ln {} = {:.4f})\n",
               tools::held_out_loss(*model, split.val, o.batch, o.seq, o.eval_batches, eval_seed), vocab.size(),
               uniform);

    // ---- Training: ids -> loss -> backward -> clip -> AdamW (docs/training-step.md follows one step).
    const auto t_start = std::chrono::steady_clock::now();
    double loss_sum = 0, last_loss = 0;
    int64_t loss_count = 0;
    for (int64_t step = 1; step <= o.steps; ++step) {
      const train::Batch batch = windows.next(Device::cpu());  // [batch, seq] characters and the next of each
      optimizer.set_lr(schedule.lr_at(step - 1));
      const train::StepResult result = train::train_step(*model, optimizer, {batch}, {.grad_clip = o.grad_clip});
      LORA_CHECK(result.applied, "step {}: {}; training stopped (try a lower --lr)", step, result.nonfinite);
      const double norm = result.grad_norm;
      last_loss = result.loss;
      loss_sum += last_loss, ++loss_count;
      if (step % o.log_every == 0 || step == o.steps) {
        const double elapsed = seconds_since(t_start);
        fmt::print(
            "step {:>5}/{} | loss {:.4f} | grad norm {:.2f} | lr {:.2e} | {:.0f} chars/s | {:.0f} s | ETA {:.0f} s\n",
            step, o.steps, loss_sum / static_cast<double>(loss_count), norm, optimizer.lr(),
            static_cast<double>(step * o.batch * o.seq) / elapsed, elapsed,
            elapsed / static_cast<double>(step) * static_cast<double>(o.steps - step));
        std::fflush(stdout);
        loss_sum = 0, loss_count = 0;
      }
      if (o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps) {
        fmt::print("held-out loss at step {}: {:.4f}\n", step,
                   tools::held_out_loss(*model, split.val, o.batch, o.seq, o.eval_batches, eval_seed));
        if (o.sample_chars > 0) print_sample(*model, vocab, o, o.sample_chars, fmt::format("at step {}", step));
      }
    }
    const double seconds = seconds_since(t_start);

    // ---- How good is it? Held-out loss in nats per character, next to what no learning would give.
    const double val = tools::held_out_loss(*model, split.val, o.batch, o.seq, 4 * o.eval_batches, eval_seed);
    const double unigram = tools::unigram_entropy(split.train, vocab.size());
    fmt::print("\ntrained {} steps in {:.0f} s ({:.2f} s/step)\n", o.steps, seconds,
               seconds / static_cast<double>(o.steps));
    fmt::print(
        "held-out loss {:.4f} nats/char ({:.3f} bits/char); for scale: uniform {:.4f}, character frequencies "
        "alone {:.4f}\n",
        val, val / std::log(2.0), uniform, unigram);
    if (o.sample_chars > 0) print_sample(*model, vocab, o, 2 * o.sample_chars, "at the end");

    // ---- Save: Hugging Face's layout (any lora.cpp program loads it with --weights) and the vocabulary.
    models::save_hf_checkpoint(*model, o.out);
    vocab.save((std::filesystem::path(o.out) / "char_vocab.json").string());
    fmt::print("saved the model and its vocabulary to {}/ (config.json, model.safetensors, char_vocab.json)\n", o.out);
    if (o.json) {
      fmt::print("{}\n", nlohmann::json{{"held_out_loss", val},
                                        {"last_train_loss", last_loss},
                                        {"steps", o.steps},
                                        {"seconds", seconds},
                                        {"parameters", model->num_parameters()},
                                        {"unigram_entropy", unigram},
                                        {"out", o.out}}
                             .dump());
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
