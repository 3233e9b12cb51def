// replicate_lora: the LoRA paper's claims (Hu et al., 2021) at a scale this machine runs: pre-train a small
// GPT-2 (with a vocabulary sized for it) on public-domain text, fine-tune it on the whole E2E NLG training set
// fully and with LoRA at several ranks and targets, each at the learning rate a sweep chooses on the
// validation set; measure quality (validation loss, BLEU, ROUGE-L), cost (trainable parameters, memory, step
// time, file size), adapter switching on one resident base, merged-inference latency and the adapters'
// subspace similarity; write results.json, a Markdown report with each claim met or missed, and SVG plots.
// Every stage writes its result atomically and a rerun skips finished stages.
//
//   replicate_lora --quick                            # tiny model, a minute or two: checks the invariants (CI)
//   replicate_lora --out runs/replicate --report-dir docs/replication      # the full experiment
//   replicate_lora --out runs/replicate --step-timing  # claim 3's step times, alone (on a quiet machine)
//   replicate_lora --device cuda --out runs/replicate-cuda   # a bigger base where a GPU is
//   replicate_lora --weights path/to/gpt2 --out runs/gpt2                   # real GPT-2: no pre-training
//
// Read next: docs/replication.md (the results), replication_stages.h (the stages), replication.h (their pieces).
#include <CLI/CLI.hpp>

#include <cstdlib>

#include "experiments/replication/replication_stages.h"

using namespace lora;
using namespace lora::replicate;

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Reproduce the LoRA paper's claims on a GPT-2-architecture model: pre-train (or --weights), "
      "fine-tune on E2E NLG fully and with LoRA, evaluate, switch adapters, merge; resumable."};
  app.add_flag("--quick", o.quick, "a tiny model and a few steps (a minute or two): checks the invariants, for CI");
  app.add_option("--device", o.device, "cpu, or cuda[:N] (a bigger preset: 8 layers x 512, more pre-training)")
      ->capture_default_str();
  app.add_option(
      "--tokenizer", o.tokenizer,
      "the BPE's tokenizer.json (default: DATA_DIR/replication/tokenizer.json; with --weights, the model's own)");
  app.add_flag("--report-only", o.report_only, "write the report from the stages finished so far, and stop");
  app.add_flag("--step-timing", o.step_timing,
               "measure full vs LoRA step time alone (run it on a quiet machine), then the report");
  app.add_option("--out", o.out, "folder for the cache and every stage's result (rerun to resume)")
      ->capture_default_str();
  app.add_option("--report-dir", o.report_dir,
                 "where results.json, results.md, the plot, generations and references go (default: OUT/report)");
  app.add_option("--weights", o.weights, "a Hugging Face GPT-2 folder (e.g. real GPT-2 small): skips pre-training");
  app.add_option("--data-dir", o.data_dir,
                 "folder with corpus/, e2e/ and replication/ (default: the repository's data/)");
  app.add_option(
      "--corpus", o.corpus,
      "pre-training text files, comma-separated, relative to DATA_DIR (default: the list in docs/replication.md)");
  app.add_option("--style-text", o.style_text,
                 "the second task's book (held out of pre-training), relative to DATA_DIR")
      ->capture_default_str();
  app.add_option("--n-embd", o.n_embd, "pre-trained model width")->check(CLI::Range(8, 4096));
  app.add_option("--n-layer", o.n_layer, "pre-trained model depth")->check(CLI::Range(1, 96));
  app.add_option("--n-head", o.n_head, "attention heads")->check(CLI::Range(1, 64));
  app.add_option("--seq", o.pre.seq, "pre-training window and context length")->check(CLI::Range(16, 4096));
  app.add_option("--pretrain-steps", o.pre.steps, "pre-training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--pretrain-batch", o.pre.batch, "pre-training windows per step")->check(CLI::Range(1, 4096));
  app.add_option("--pretrain-lr", o.pre.lr,
                 "pre-training peak learning rate (default 2e-3; 10% warm-up, then cosine to a tenth)")
      ->check(CLI::PositiveNumber);
  app.add_option("--checkpoint-minutes", o.pre.checkpoint_minutes, "pre-training checkpoint interval")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--pretrain-only", o.pretrain_only, "stop after pre-training (tests determinism)");
  app.add_option("--stop-after", o.pre.stop_after,
                 "stop pre-training after N steps of this process (exit 3; tests resuming)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ft-steps", o.ft_steps, "fine-tuning steps, the same for every run")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--ft-batch", o.ft_batch, "E2E examples per fine-tuning step")->check(CLI::Range(1, 4096));
  app.add_option("--full-lrs", o.full_lrs,
                 "full fine-tuning's learning-rate sweep, comma-separated (default 2.5e-4,5e-4,1e-3)")
      ->delimiter(',');
  app.add_option("--lora-lrs", o.lora_lrs, "LoRA's learning-rate sweep, comma-separated (default 5e-4,1e-3,2e-3)")
      ->delimiter(',');
  app.add_option("--sweep-extensions", o.sweep_extensions,
                 "learning rates a sweep may add, doubling past its top or halving past its bottom, while its "
                 "lowest validation loss is at that edge (default 3; --quick: 1)")
      ->check(CLI::Range(0, 16));
  app.add_option("--lora-alpha", o.lora_alpha,
                 "LoRA's alpha, the same at every rank (scale alpha / r; default 32, the paper's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--train-examples", o.train_examples,
                 "E2E training examples (evenly spaced; 0: all 42,061; --quick: 400)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--timing-rounds", o.timing_rounds, "rounds of the --step-timing measurement")
      ->check(CLI::Range(1, 10000));
  app.add_option("--eval-every", o.eval_every, "held-out loss every N fine-tuning steps (the plot's points)")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--valid-examples", o.valid_examples,
                 "E2E validation examples for the validation loss and the sweeps' choice (evenly spaced)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--test-mrs", o.test_mrs,
                 "test meaning representations to generate for (evenly spaced, with all their references)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-new-tokens", o.max_new_tokens, "greedy generation limit")->check(CLI::Range(1, 4096));
  app.add_option("--runs", o.runs, "comma-separated subset of: " + all_run_names());
  app.add_option("--latency-rounds", o.latency_rounds, "alternating rounds of the merge latency measurement")
      ->check(CLI::Range(1, 10000));
  app.add_option("--seed", o.seed, "seed of initialisation, data order and LoRA's A")->capture_default_str();
  app.footer(R"(Stages, each skipped when its result file exists (rerun the same command to resume):
  OUT/pretrain.json        pre-training (checkpoints OUT/pretrain/ckpt-N every --checkpoint-minutes; the model and
                           its tokenizer in OUT/pretrain/model); skipped with --weights
  OUT/runs/base/eval.json  the base before fine-tuning: validation and corpus loss, generations
  OUT/runs/NAME/lr-X/train.json  one run of a sweep (NAME: full, lora_qv_r1 .. lora_qv_r64, lora_all_r8; X its
                           learning rate), its adapter or checkpoint beside it
  OUT/runs/NAME/chosen.json the sweep's choice (lowest validation loss); OUT/runs/NAME/eval.json its generations,
                           BLEU and ROUGE-L
  OUT/runs/style_r8/       the second task's adapter (LoRA on --style-text)
  OUT/switching.json       two adapters on one resident base: switch time, outputs before and after
  OUT/merging.json         merged vs unmerged generations; base, unmerged and merged latency
  OUT/subspace.json        subspace similarity of the r = 8 and r = 64 adapters
  OUT/step_timing.json     --step-timing: full vs LoRA step time, measured apart
Report (REPORT_DIR): results.json, results.md, loss_curves.svg, rank_sweep.svg, subspace_similarity.svg,
generations/NAME.txt (one line per test MR, in the order of test_mrs.txt), references.json (per test MR, its
references).
Exit status: 0 all checks passed; 1 error; 2 a check failed (see results.md); 3 stopped by --stop-after.
Threads: LORA_NUM_THREADS (default: all cores); set GOMP_SPINCOUNT=10000 on a shared machine.)");
  CLI11_PARSE(app, argc, argv);

  try {
    o.finalize(std::vector<std::string>(argv, argv + argc));
    return run_all(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
