// finetune: fine-tune a causal LM (GPT-2, Llama, Qwen2, Mistral) fully or with LoRA on raw text, llm.c
// tokens or the datasets people fine-tune on (JSONL/.json: text, prompt/completion, Alpaca, chat messages,
// ShareGPT; tools/finetune_data.h), and report what LoRA saves, measured by the allocator: trainable
// parameters, gradient and optimizer memory, activations, step time, and the size of what each mode saves.
// --mode compare runs both modes, each in a fresh process (peak RSS belongs to a process), and prints them
// side by side. Without flags: GPT-2 small, the main job.
//
//   finetune                                        # GPT-2 small (random init), Tiny Shakespeare, compare
//   finetune --weights gpt2/ --mode lora --steps 200 --save out/
//   finetune --weights SmolLM2-135M/ --mode lora --targets q_proj,v_proj --steps 200 --save out/
//   finetune --weights Qwen2.5-0.5B-Instruct/ --mode lora --data chats.jsonl --epochs 3 --packing --seq 1024
//            --grad-accum 4 --eval-fraction 0.05 --eval-every 50 --early-stop-patience 3 --log run.jsonl --save out/
//
// Read next: models/causal_lm.h (what a model offers), nn/lora/lora_linear.h (LoRA), docs/memory.md (the
// report).
#include <unistd.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/checkpoint.h"
#include "backends/cpu/blas_kernels.h"
#include "backends/backend.h"
#include "core/allocator.h"
#include "core/files.h"
#include "core/json.h"
#include "dist/communicator.h"
#include "lora_source_dir.h"
#include "models/generate.h"
#include "models/gguf/model_io.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "tools/finetune_data.h"
#include "tools/finetune_options.h"
#include "tools/finetune_outputs.h"
#include "tools/model_tokenizer.h"
#include "tools/subprocess.h"
#include "tools/train_report.h"
#include "train/evaluate.h"
#include "train/example_source.h"
#include "train/memory_prediction.h"
#include "train/trainer.h"

#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#endif

using namespace lora;
namespace fs = std::filesystem;

namespace {

int gpu_count() {
#if defined(LORA_HAVE_CUDA)
  return cuda_device_count();
#else
  return 0;
#endif
}

std::string default_data() {
  for (const std::string& p :
       {std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt", std::string("data/tinyshakespeare.txt")}) {
    if (is_regular_file(p)) return p;
  }
  LORA_FAIL("no --data given and data/tinyshakespeare.txt was not found");
}

// Fixed held-out batches (the same ones before, during and after training).
// Windows: --eval-batches random windows of the held-out tokens. Examples: every held-out example, in order.
std::vector<train::HostBatch> held_out_batches(const tools::FinetuneData& data, const tools::FinetuneOptions& o) {
  if (!data.has_eval()) return {};
  if (data.examples) return train::batch_in_order(data.eval_examples, o.batch);
  train::WindowSource windows(data.tokens.val, o.batch, o.seq, o.seed + 999, "held-out");
  std::vector<train::HostBatch> batches;
  for (int64_t i = 0; i < o.eval_batches; ++i) batches.push_back(windows.next_host());
  return batches;
}

int64_t directory_bytes(const fs::path& dir) {
  int64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += static_cast<int64_t>(entry.file_size());
  }
  return total;
}

// The identity of a data-parallel job's inputs: every rank must see the same model, trainable set, data
// and flags. A short text per rank, gathered and compared at start-up.
std::string rank_description(const models::CausalLM& model, const tools::FinetuneData& data,
                             const tools::FinetuneOptions& o, const std::string& mode) {
  nlohmann::json data_identity = data.identity();  // the contents, wherever each machine keeps the files
  data_identity.erase("path");
  if (data_identity.contains("eval_data")) data_identity["eval_data"].erase("path");
  nlohmann::json trainable = nlohmann::json::array();
  for (const auto& [name, p] : model.named_parameters(true)) trainable.push_back(name + p.shape().str());
  return nlohmann::json{{"model", model.hf_config()},
                        {"trainable", std::to_string(trainable.size()) + " tensors, " +
                                          std::to_string(model.num_parameters(true)) + " parameters"},
                        {"trainable_names", std::hash<std::string>{}(trainable.dump())},
                        {"data", data_identity},
                        {"flags",
                         {{"mode", mode},
                          {"batch", o.batch},
                          {"seq", o.seq},
                          {"steps", o.steps},
                          {"lr", o.lr},
                          {"warmup", o.warmup},
                          {"seed", o.seed},
                          {"rank", o.rank},
                          {"alpha", o.alpha},
                          {"targets", o.targets},
                          {"grad_clip", o.grad_clip},
                          {"grad_accum", o.grad_accum},
                          {"epochs", o.epochs},
                          {"packing", o.packing},
                          {"max_seq", o.max_seq},
                          {"train_on_inputs", o.train_on_inputs}}}}
      .dump();
}

// Refuses, on every rank with the same message, a job whose ranks differ in model, data or flags.
void check_ranks_agree(dist::Communicator& comm, const std::string& description) {
  const std::vector<std::string> all = comm.all_gather(description);
  std::string differences;
  const auto first = parse_json(all[0], "rank 0's description");
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    const auto other = parse_json(all[r], fmt::format("rank {}'s description", r));
    for (const auto& [key, value] : first.items()) {
      if (other[key] != value)
        differences += fmt::format("\n  rank {} differs from rank 0 in {}: {} vs {}", r, key,
                                   other[key].dump().substr(0, 200), value.dump().substr(0, 200));
    }
  }
  if (!differences.empty()) throw train::AllRanksError{"the ranks of this job disagree:" + differences};
}

// The LoRA settings of the flags (--rank, --alpha, --lora-dropout, --targets).
nn::LoRAConfig lora_config_of(const tools::FinetuneOptions& o) {
  nn::LoRAConfig lora_config;
  lora_config.options.rank = o.rank;
  lora_config.options.alpha = o.alpha;
  lora_config.options.dropout = o.lora_dropout;
  lora_config.options.seed = o.seed;
  lora_config.targets = nn::LoRAConfig::parse_targets(o.targets);
  return lora_config;
}

// The step's memory, predicted on the meta device before anything is allocated, and the pre-flight check
// against what the host (or the GPU) has free.
train::StepMemoryPrediction predict_and_check_fit(const tools::FinetuneOptions& o, const models::ModelConfig& config,
                                                  const nn::LoRAConfig* lora_config, QuantFormat base_format,
                                                  const models::CompactTables& tables, Device device) {
  // The longest row a batch can hold: --seq (windows, packed rows) or --max-seq (padded examples).
  const int64_t longest_row = std::max(o.seq, o.packing ? o.seq : o.max_seq);
  {
    DefaultDeviceGuard shapes_only(Device::meta());
    const int64_t context = models::create_model(config)->dims().context_length;
    LORA_CHECK(o.seq <= context, "--seq {} exceeds the model's context of {}", o.seq, context);
    LORA_CHECK(o.max_seq <= context, "--max-seq {} exceeds the model's context of {}", o.max_seq, context);
  }
  const train::StepMemoryPrediction prediction = train::predict_training_step(
      config, lora_config, o.batch, longest_row, base_format, o.checkpoint_activations, tables);
  fmt::print("predicted peak of a step: {}\n", tools::human_bytes(prediction.total_peak));
  const bool lora_mode = lora_config != nullptr;
  if (device.is_cpu() && !o.no_preflight) {
    train::check_fits(
        prediction, train::available_host_memory(), int64_t(512) << 20,
        fmt::format("{} fine-tuning of this model at batch {} x {}", lora_mode ? "LoRA" : "full", o.batch, o.seq),
        lora_mode ? "Lower --batch or --seq, or train fewer or smaller adapters (--targets, --rank)."
                  : "Use --mode lora (no gradients or optimizer state for the frozen weights), or lower "
                    "--batch or --seq.");
  }
#if defined(LORA_HAVE_CUDA)
  if (device.is_cuda() && !o.no_preflight) {
    const CudaMemoryInfo info = cuda_memory_info(device.index);
    train::check_fits(prediction, int64_t(info.free_bytes + info.cached_bytes), int64_t(256) << 20,
                      fmt::format("training on {}", device.str()), "Lower --batch or --seq, or use --mode lora.");
  }
#endif
  return prediction;
}

// What identifies this run in its checkpoints: a checkpoint resumes only the run that wrote it.
train::RunIdentity run_identity(const tools::FinetuneOptions& o, const std::string& mode, double lr, Device device,
                                int ranks, const models::CausalLM& model, const tools::FinetuneData& data) {
  train::RunIdentity identity;
  identity.settings = {{"mode", mode},
                       {"batch", o.batch},
                       {"seq", o.seq},
                       {"steps", o.steps},
                       {"lr", lr},
                       {"warmup", o.warmup},
                       {"grad_clip", o.grad_clip},
                       {"weight_decay", o.weight_decay},
                       {"seed", o.seed},
                       {"device", device.str()},
                       {"skip_nonfinite", o.skip_nonfinite},
                       {"ranks", ranks},
                       {"grad_accum", o.grad_accum},
                       {"format", train::data_format_name(data.detected.format)},
                       {"packing", o.packing},
                       {"max_seq", o.max_seq},
                       {"drop_long", o.drop_long},
                       {"train_on_inputs", o.train_on_inputs},
                       {"eval_fraction", o.eval_fraction},
                       {"eval_every", o.eval_every},
                       {"early_stop_patience", o.early_stop_patience}};
  if (mode == "lora") {
    identity.settings["lora"] = {{"rank", o.rank},
                                 {"alpha", o.alpha},
                                 {"dropout", o.lora_dropout},
                                 {"targets", nn::LoRAConfig::parse_targets(o.targets)}};
    if (parse_quant_format(o.base_dtype) != QuantFormat::F32) identity.settings["base_dtype"] = o.base_dtype;
  }
  identity.model = model.hf_config();
  identity.frozen_fingerprint = train::RunIdentity::fingerprint(model);
  identity.data = data.identity();
  return identity;
}

train::TrainerOptions trainer_options_of(const tools::FinetuneOptions& o, double lr) {
  train::TrainerOptions t;
  t.steps = o.steps;
  t.grad_accum = o.grad_accum;
  t.early_stop_patience = o.early_stop_patience;
  t.sample_every = o.sample_every;
  t.log_path = o.log;
  t.schedule = {optim::ScheduleKind::Cosine, lr, o.warmup, o.steps};
  t.step.grad_clip = o.grad_clip;
  t.skip_nonfinite = o.skip_nonfinite;
  t.eval_every = o.eval_every;
  t.checkpoint_dir = !o.save.empty() ? o.save : o.resume;
  t.save_every = o.save_every;
  t.keep_checkpoints = int(o.keep_checkpoints);
  t.resume_dir = o.resume;
  return t;
}

// --sample-every: a greedy continuation of --sample-prompt (as a user turn through the chat template for chat
// data), quoted so that newlines and spaces show in the log.
std::function<std::string()> make_sampler(const tools::FinetuneOptions& o, models::CausalLM& model,
                                          const tools::FinetuneData& data,
                                          std::function<const tokenizer::Tokenizer&()> get_tokenizer) {
  return [&o, &model, &data, get_tokenizer]() -> std::string {
    const models::ModelDims dims = model.dims();
    const bool chat = data.chat_template.has_value();
    const std::string prompt = chat ? data.chat_template->render({{"user", o.sample_prompt}}, true) : o.sample_prompt;
    std::vector<int32_t> ids =
        get_tokenizer().encode(prompt, {.add_special_tokens = false, .parse_special_tokens = chat});
    LORA_CHECK(!ids.empty(), "--sample-prompt: the prompt encodes to no token");
    for (int32_t id : ids) {
      LORA_CHECK(id >= 0 && id < dims.vocab_size,
                 "--sample-prompt: token {} is outside the model's vocabulary of {} (is --tokenizer the model's?)", id,
                 dims.vocab_size);
    }
    const int64_t room = std::max<int64_t>(1, dims.context_length - o.sample_tokens);
    if (int64_t(ids.size()) > room) ids.erase(ids.begin(), ids.end() - room);  // the prompt's end
    const bool was_training = model.is_training();
    model.eval();
    models::SamplingOptions greedy;
    greedy.max_new_tokens = o.sample_tokens;
    greedy.temperature = 0;
    const std::vector<int32_t> out = models::generate(model, ids, greedy);
    model.train(was_training);
    return nlohmann::json(get_tokenizer().decode(out, {})).dump();
  };
}

// The training record's figures into the report, and its summary line.
void report_training(const train::TrainingRecord& record, const tools::FinetuneOptions& o,
                     const tools::FinetuneData& data, tools::ModeReport& report) {
  report.losses = record.losses;
  report.step_times_s = record.step_times_s;
  report.skipped_steps = record.skipped_steps;
  report.ranks = record.ranks;
  report.comm_engine = record.comm_engine;
  report.allreduce_bytes_per_step = record.allreduce_bytes_per_step;
  report.comm_buckets = record.comm_buckets;
  report.comm_seconds_per_step = record.comm_seconds_per_step;
  report.comm_hidden_share = record.comm_hidden_share;
  report.batch *= o.grad_accum;  // sequences per optimizer step
  fmt::print(
      "trained: {} steps, epoch {:.2f}, {} sequences, {} trained tokens; padding {} of {} positions ({:.1f}%){}\n",
      record.steps_done, record.epochs, record.sequences, record.trained_tokens, record.padding, record.positions,
      100.0 * record.padding_share(),
      data.examples
          ? fmt::format(", truncated {} of {} examples", data.train_counts.truncated, data.train_counts.examples)
          : "");
}

// The memory figures of this rank (and, in a job of several ranks, every rank's peaks).
void report_memory(dist::Communicator& comm, Device device, tools::ModeReport& report) {
  report.memory = MemoryTracker::instance().stats(device);
  report.peak_rss_bytes = tools::process_peak_rss_bytes();
  if (comm.size() <= 1) return;
  for (const std::string& figures :
       comm.all_gather(fmt::format("{} {}", report.memory.global_peak, report.peak_rss_bytes))) {
    int64_t peak = 0, rss = 0;
    std::sscanf(figures.c_str(), "%ld %ld", &peak, &rss);
    report.rank_peak_bytes.push_back(peak);
    report.rank_peak_rss_bytes.push_back(rss);
  }
}

// Saves what the mode produces (the whole model, or the adapter alone; with --save-gguf-adapter a GGUF adapter
// too), measures its size, and with --save puts the tokenizer, the chat template and training_settings.json
// beside it; without --save the folder is measured and removed.
void save_result(const tools::FinetuneOptions& o, const std::string& mode, double lr, models::CausalLM& model,
                 const tools::FinetuneData& data, const train::TrainingRecord& record, tools::ModeReport& report) {
  const bool lora_mode = mode == "lora", keep = !o.save.empty();
  const fs::path dir =
      keep ? fs::path(o.save) / mode : fs::temp_directory_path() / fmt::format("finetune_{}_{}", mode, getpid());
  const std::string base_name = !o.weights.empty() ? o.weights : o.config.empty() ? "gpt2" : o.config;
  if (lora_mode)
    models::save_adapter(model, dir.string(), base_name);
  else
    models::save_hf_checkpoint(model, dir.string());
  if (lora_mode && o.save_gguf_adapter) {  // llama-cli -m BASE.gguf --lora DIR/adapter.gguf
    const auto gguf = models::gguf_io::export_gguf_adapter(model, (dir / "adapter.gguf").string());
    fmt::print("saved the adapter as GGUF too: {} ({})\n", (dir / "adapter.gguf").string(), gguf.str());
  }
  report.saved_bytes = directory_bytes(dir);  // the weights alone
  report.saved_path = keep ? dir.string() : "";
  fmt::print("saved {} ({}){}\n", lora_mode ? "the adapter" : "the model", tools::human_bytes(report.saved_bytes),
             keep ? " to " + dir.string() : " (measured, then removed: pass --save DIR to keep it)");
  if (!keep) {
    fs::remove_all(dir);
    return;
  }
  // Ready to use: the tokenizer and chat template beside the weights, and how they were trained.
  const std::vector<std::string> copied = tools::copy_tokenizer_files(dir.string(), o, model, data);
  nlohmann::json settings = tools::resolved_settings(o, mode, o.steps, lr, data, base_name);
  const double final_loss = record.losses.empty() ? std::nan("") : record.losses.back();
  settings["result"] = {{"steps_done", record.steps_done},
                        {"epochs", record.epochs},
                        {"stopped_early", record.stopped_early},
                        {"best_step", record.best_step},
                        {"final_loss", std::isfinite(final_loss) ? nlohmann::json(final_loss) : nlohmann::json()}};
  if (record.best_step > 0) settings["result"]["best_eval_loss"] = record.best_eval;
  tools::write_training_settings(dir.string(), settings);
  fmt::print("beside it: training_settings.json{}{}\n", copied.empty() ? "" : ", ", fmt::join(copied, ", "));
}

// One mode's run: predict and check the memory, load the model and the data, apply LoRA (and quantize the
// base), train, evaluate, save. Returns the figures of the report.
tools::ModeReport run_mode(tools::FinetuneOptions o, const std::string& mode, dist::Communicator& comm, Device device) {
  const bool lora_mode = mode == "lora";
  // The frozen base's format: auto keeps a GGUF file's blocks under LoRA; a full fine-tune trains every weight
  // in float32.
  const models::BaseDtype base = lora_mode ? models::BaseDtype::parse(o.base_dtype) : models::BaseDtype{};
  const QuantFormat base_format = models::resolved_base_format(base, o.weights, o.config);
  if (base.automatic) o.base_dtype = quant_format_name(base_format);  // what the run's settings record
  if (!lora_mode && o.base_dtype == "auto" && models::gguf_io::is_gguf_path(o.weights) &&
      models::resolved_base_format(models::BaseDtype::parse("auto"), o.weights) != QuantFormat::F32) {
    fmt::print(
        "notice: a full fine-tune trains every weight: the GGUF file's quantized tensors are dequantized to "
        "f32 (--mode lora keeps them as they are)\n");
  }
  fmt::print(
      "== {} fine-tuning{}{}, {} threads, device {}{}\n", lora_mode ? "LoRA" : "full",
      base_format == QuantFormat::F32 ? "" : fmt::format(" on a {} base", o.base_dtype),
      o.checkpoint_activations ? ", activations checkpointed" : "", num_threads(), device.str(),
      comm.size() > 1 ? fmt::format(", {} ranks ({}), batch {} per rank", comm.size(), comm.engine(), o.batch) : "");
  if (const std::string notice = blas_kernel_notice(); !notice.empty()) fmt::print("{}\n", notice);
  if (o.weights.empty()) {
    fmt::print(
        "notice: no --weights given: '{}' is randomly initialised (the memory and speed figures are real; the "
        "losses are those of an untrained model)\n",
        o.config.empty() ? "gpt2" : o.config);
  }
  const nn::LoRAConfig lora_config = lora_config_of(o);
  const std::string data_path = o.data.empty() ? default_data() : o.data;
  LORA_CHECK(is_regular_file(data_path), "--data '{}': {}", data_path, not_a_file_reason(data_path));
  const train::StepMemoryPrediction prediction =
      predict_and_check_fit(o, models::resolve_config(o.weights, o.config), lora_mode ? &lora_config : nullptr,
                            base_format, models::compact_tables(base, o.weights, o.config), device);

  std::shared_ptr<models::CausalLM> model = models::load_model(o.weights, o.config, o.seed, base);
  const models::ModelDims dims = model->dims();
  fmt::print("model: {}, {} layers, hidden {}, {} parameters\n", model->model_type(), dims.n_layer, dims.hidden,
             model->num_parameters() + nn::num_compact_weights(*model));
  std::unique_ptr<tokenizer::Tokenizer> tok;
  const std::function<const tokenizer::Tokenizer&()> get_tokenizer = [&]() -> const tokenizer::Tokenizer& {
    if (!tok) {  // loaded when the data or a sample needs it
      tok = tools::tokenizer_for_model(*model, o.weights, o.tokenizer);
      fmt::print("tokenizer: {}\n", tok->describe());
    }
    return *tok;
  };
  const tools::FinetuneData data = tools::load_finetune_data(o, data_path, get_tokenizer, dims.vocab_size);
  fmt::print("{}", data.describe());
  model->to(device);
  // Before a quantized base leaves the parameters; a base loaded compact (a GGUF file's blocks, a compact
  // checkpoint) counts by its weights.
  const int64_t total_params = model->num_parameters() + nn::num_compact_weights(*model);
  if (lora_mode) {
    models::apply_lora(*model, lora_config);
    model->to(device);
    fmt::print("{}\n", nn::lora_summary(*model).str());
    if (base_format != QuantFormat::F32) {
      fmt::print("base weights as {}: {}\n", o.base_dtype, models::quantize_base(*model, base_format).str());
    }
  }
  if (comm.size() > 1) {
    check_ranks_agree(comm, rank_description(*model, data, o, mode));
    NoGradGuard no_grad;  // every replica starts from rank 0's trainable weights
    for (auto& [name, p] : model->named_parameters(true)) comm.broadcast(p, 0);
  }
  const double lr = o.lr > 0 ? o.lr : (lora_mode ? 1e-3 : 1e-4);
  std::vector<std::string> trainable_names;
  for (const auto& [name, p] : model->named_parameters(true)) trainable_names.push_back(name);
  optim::AdamW optimizer(model->parameters(true), {.lr = lr, .weight_decay = o.weight_decay}, trainable_names);

  tools::ModeReport report;
  report.predicted = prediction.peak;
  report.predicted_total = prediction.total_peak;
  report.mode = mode;
  report.device = device.str();
  report.batch = o.batch * comm.size(), report.seq = o.seq;
  report.trainable_params = model->num_parameters(true);
  report.total_params = total_params;
  const std::vector<train::HostBatch> held_out = held_out_batches(data, o);
  const auto evaluate_held_out = [&] { return train::evaluate_loss(*model, held_out, device); };
  report.val_loss_before = report.val_loss_after = std::nan("");
  if (comm.rank() == 0 && data.has_eval()) {
    report.val_loss_before = evaluate_held_out();
    fmt::print("held-out loss before: {:.4f}\n", report.val_loss_before);
  }

  // The batches: this rank's shard of windows or of examples, and the steps (--epochs computes them).
  std::unique_ptr<train::BatchSource> source = tools::make_training_source(data, o, {comm.rank(), comm.size()});
  fmt::print("batches: {}{}\n", source->describe(),
             o.grad_accum > 1 ? fmt::format(", {} micro-batches per step", o.grad_accum) : "");
  if (o.epochs > 0) {
    o.steps = tools::steps_for_epochs(*source, o.epochs, o.grad_accum, o.batch * comm.size());
    fmt::print("--epochs {}: {} steps (about {:.1f} micro-batches of {} per epoch{}, {} per step)\n", o.epochs, o.steps,
               source->batches_per_epoch(), o.batch,
               comm.size() > 1 ? fmt::format(" on each of {} ranks", comm.size()) : "", o.grad_accum);
    LORA_CHECK(o.warmup < o.steps || o.steps == 1, "--warmup {} must be below the {} steps of --epochs {}", o.warmup,
               o.steps, o.epochs);
  }
  LORA_CHECK(!(o.early_stop_patience > 0 && !data.has_eval()),
             "--early-stop-patience {} needs held-out data: give --eval-data FILE or --eval-fraction F",
             o.early_stop_patience);

  const train::TrainerOptions trainer_options = trainer_options_of(o, lr);
  const train::RunIdentity identity = trainer_options.checkpoint_dir.empty()
                                          ? train::RunIdentity{}
                                          : run_identity(o, mode, lr, device, comm.size(), *model, data);
  train::TrainerCallbacks callbacks;
  if (data.has_eval()) callbacks.evaluate = evaluate_held_out;
  if (o.sample_every > 0) callbacks.sample = make_sampler(o, *model, data, get_tokenizer);
  train::Trainer trainer(*model, optimizer, *source, device, comm, trainer_options, identity, callbacks);
  train::TrainingRecord record;
  {
    autograd::CheckpointGuard checkpointing(o.checkpoint_activations);
    record = trainer.run();
  }
  report_training(record, o, data, report);
  if (!o.log.empty() && comm.rank() == 0) {
    const std::string svg = tools::write_loss_curve(o.log);
    if (!svg.empty()) fmt::print("log: {}, loss curve: {}\n", o.log, svg);
  }
  report_memory(comm, device, report);
  if (comm.rank() != 0) return report;  // rank 0 evaluates and saves for the job
  // The trainer's evaluation of the last step, unless early stopping gave the model other weights back.
  const bool evaluated_last = !record.evals.empty() && record.evals.back().first == record.steps_done &&
                              (o.early_stop_patience == 0 || record.best_step == record.steps_done);
  if (evaluated_last) {
    report.val_loss_after = record.evals.back().second;
    fmt::print("held-out loss after: {:.4f}\n", report.val_loss_after);
  } else if (data.has_eval()) {
    report.val_loss_after = evaluate_held_out();
    fmt::print("held-out loss after: {:.4f}\n", report.val_loss_after);
  }
  save_result(o, mode, lr, *model, data, record, report);
  fmt::print("\n{}", report.table());
  return report;
}

// Runs this program again for one mode (no shell: the arguments pass through as they are) and reads back
// its JSON report.
tools::ModeReport run_child(const tools::Variant& variant, const std::vector<std::string>& args) {
  const fs::path json_path = fs::temp_directory_path() / fmt::format("finetune_{}_{}.json", variant.name, getpid());
  std::vector<std::string> argv = {tools::self_executable()};
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--mode" || args[i] == "--report-json" || args[i] == "--variants") {
      ++i;
      continue;
    }
    if (args[i].rfind("--mode=", 0) == 0 || args[i].rfind("--report-json=", 0) == 0 ||
        args[i].rfind("--variants=", 0) == 0) {
      continue;
    }
    argv.push_back(args[i]);
  }
  argv.insert(argv.end(),
              {"--mode", variant.mode, "--base-dtype", variant.base_dtype, "--report-json", json_path.string()});
  if (variant.checkpoint) argv.push_back("--checkpoint-activations");
  // libgomp reads GOMP_SPINCOUNT before main: shorter spinning keeps idle OpenMP threads from taking a
  // core from the other thread when the machine is shared (measured: 7.0 -> 2.0 s per LoRA step under load).
  std::vector<std::string> env;
  if (!std::getenv("GOMP_SPINCOUNT")) env.push_back("GOMP_SPINCOUNT=10000");
  std::fflush(stdout);
  const int status = tools::run_program(argv, env);
  LORA_CHECK(status == 0, "the {} run failed (exit status {})", variant.name, status);
  const auto j = read_json_file(json_path.string(), "the run's report");
  fs::remove(json_path);
  return tools::ModeReport::from_json(j.at("modes").at(0));
}

void write_json(const std::string& path, const std::vector<tools::ModeReport>& reports) {
  nlohmann::json j;
  j["modes"] = nlohmann::json::array();
  for (const auto& r : reports) j["modes"].push_back(r.to_json());
  std::ofstream out(path);
  LORA_CHECK(out.good(), "--report-json '{}': cannot write", path);
  out << j.dump(2) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  tools::FinetuneOptions o;
  if (const int code = tools::parse_finetune_options(argc, argv, o); code >= 0) return code;

  // Under mpirun every rank runs this program: rank 0 speaks for the job, the others print only errors.
  dist::Communicator* comm = nullptr;
  try {
    o.validate();
    Device device = Device::parse(o.device);
    if (dist::launched_by_mpi() && o.mode != "compare") {
      comm = &dist::world(Device::cpu());
      if (comm->size() > 1 && device.is_cuda()) device = Device::cuda(comm->rank() % std::max(1, gpu_count()));
      comm = &dist::world(device);
      if (comm->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
        LORA_FAIL("cannot silence rank {}", comm->rank());
    }
    LORA_CHECK(!(dist::launched_by_mpi() && o.mode == "compare"),
               "--mode compare runs each mode in its own process: under mpirun, give --mode full or --mode lora");
    if (!comm) comm = &dist::world(Device::cpu());
    std::vector<tools::ModeReport> reports;
    if (o.mode == "compare") {
      check_cpu_allocator_settings();  // a bad setting is this process's error (status 2), not its children's
      const std::vector<std::string> args(argv, argv + argc);
      const std::vector<tools::Variant> variants = tools::parse_variants(o.variants);
      std::vector<std::string> names;
      for (const tools::Variant& v : variants) {
        reports.push_back(run_child(v, args));
        names.push_back(v.name);
      }
      if (o.variants == "full,lora")
        fmt::print("{}", tools::comparison_table(reports[0], reports[1]));
      else
        fmt::print("{}", tools::variants_table(names, reports));
    } else {
      reports.push_back(run_mode(o, o.mode, *comm, device));
    }
    if (!o.report_json.empty() && comm->rank() == 0) write_json(o.report_json, reports);
  } catch (const train::Interrupted& i) {
    return 128 + i.signal;
  } catch (const train::AllRanksError& e) {  // every rank reached the same verdict: no need to abort the job
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error{}: {}\n", comm && comm->size() > 1 ? fmt::format(" on rank {}", comm->rank()) : "",
               e.what());
    std::fflush(stderr);
    if (comm && comm->size() > 1) comm->abort(1);  // the other ranks would wait for this one forever
    return 1;
  }
  return 0;
}
