// replicate_lora's options, data, pre-training, fine-tuning runs, their evaluation and the style adapter.
// Switching, merging, the report and run_all() are in replication_report.cpp.
#include "tools/replication_stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <numeric>

#include "backends/backend.h"
#include "core/safetensors.h"
#include "lora_source_dir.h"
#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/registry.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "tools/replication_internal.h"
#include "tools/text_metrics.h"
#include "tools/train_report.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

// ---------------------------------------------------------------------------------------------------
// Options

std::vector<RunSpec> all_runs() {
  const std::string qv = "q,v", all = "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj";
  return {{"full", false, "", 0},          {"lora_qv_r1", true, qv, 1}, {"lora_qv_r2", true, qv, 2},
          {"lora_qv_r4", true, qv, 4},     {"lora_qv_r8", true, qv, 8}, {"lora_qv_r64", true, qv, 64},
          {"lora_all_r8", true, all, 8}};
}

std::string all_run_names() {
  std::string s;
  for (const auto& r : all_runs()) s += (s.empty() ? "" : ",") + r.name;
  return s;
}

namespace {
template <typename T>
void set_default(T& value, T preset) {
  if (value == T{}) value = preset;
}
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(',', start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}
}  // namespace

// The default pre-training corpus: four novels of plain 19th-century English prose (719,828 GPT-2 tokens;
// the default pre-training reads 200 x 16 x 128 = 409,600 of them); verse and scripture are least like
// E2E's descriptions and are left out, and Persuasion is held out for the style task (data/README.md).
const std::vector<std::string> kFullCorpus = {
    "corpus/gutenberg-austen-emma.txt", "corpus/gutenberg-austen-pride.txt", "corpus/gutenberg-austen-sense.txt",
    "corpus/gutenberg-twain-huckleberry_finn.txt"};
const std::vector<std::string> kQuickCorpus = {"corpus/gutenberg-twain-huckleberry_finn.txt"};

void Options::finalize(const std::vector<std::string>& argv) {
  for (const auto& a : argv) command += (command.empty() ? "" : " ") + a;
  if (data_dir.empty()) data_dir = std::string(LORA_SOURCE_DIR) + "/data";
  if (report_dir.empty()) report_dir = (fs::path(out) / "report").string();
  // Full experiment (measured on 2 cores: docs/replication.md), or --quick (CI: about a minute).
  set_default(n_embd, quick ? int64_t{64} : int64_t{128});
  set_default(n_layer, quick ? int64_t{2} : int64_t{4});
  set_default(n_head, quick ? int64_t{2} : int64_t{4});
  if (pre.steps == PretrainOptions{}.steps) pre.steps = quick ? 30 : 200;
  if (pre.batch == PretrainOptions{}.batch) pre.batch = quick ? 4 : 16;
  if (pre.seq == PretrainOptions{}.seq) pre.seq = quick ? 64 : 128;
  pre.warmup = std::max<int64_t>(1, pre.steps / 10);
  pre.eval_every = quick ? 10 : 200;
  pre.eval_batches = quick ? 2 : 8;
  if (pre.lr == PretrainOptions{}.lr) pre.lr = 2e-3;
  pre.min_lr = pre.lr / 10;
  pre.seed = seed;
  set_default(ft_steps, quick ? int64_t{24} : int64_t{240});
  set_default(ft_batch, int64_t{4});
  set_default(eval_every, quick ? int64_t{8} : int64_t{40});
  set_default(valid_examples, quick ? int64_t{16} : int64_t{146});
  set_default(test_mrs, quick ? int64_t{4} : int64_t{105});
  set_default(max_new_tokens, quick ? int64_t{16} : int64_t{40});
  set_default(style_steps, quick ? int64_t{8} : int64_t{40});
  set_default(latency_rounds, quick ? int64_t{3} : int64_t{11});
  set_default(full_lr, 1e-3);
  set_default(lora_lr, 3e-3);
  set_default(lora_scale, 2.0);
  LORA_CHECK(n_embd % n_head == 0, "--n-embd {} is not a multiple of --n-head {}", n_embd, n_head);
  LORA_CHECK(pre.warmup < pre.steps, "--pretrain-steps {} must exceed the warm-up of {} steps", pre.steps, pre.warmup);
  LORA_CHECK(fs::is_directory(data_dir), "--data-dir '{}': no such folder", data_dir);
  if (!weights.empty()) LORA_CHECK(fs::exists(weights), "--weights '{}': no such file or folder", weights);
  for (const auto& f : corpus_files()) LORA_CHECK(fs::is_regular_file(data(f)), "--corpus: '{}' not found", data(f).string());
  LORA_CHECK(fs::is_regular_file(data(style_text)), "--style-text: '{}' not found", data(style_text).string());
  for (const char* split : {"train", "valid", "test"}) {
    const fs::path p = data(std::string("e2e/") + split + ".txt");
    LORA_CHECK(fs::is_regular_file(p), "--data-dir: E2E file '{}' not found", p.string());
  }
  for (const auto& c : corpus_files()) {
    LORA_CHECK(data(c) != data(style_text), "--corpus: '{}' is the style task's text (--style-text), which must stay "
               "held out of pre-training", c);
  }
  selected_runs();  // validates --runs
}

fs::path Options::data(const std::string& relative) const { return fs::path(data_dir) / relative; }

std::vector<std::string> Options::corpus_files() const {
  if (!corpus.empty()) return split_list(corpus);
  return quick ? kQuickCorpus : kFullCorpus;
}

std::vector<RunSpec> Options::selected_runs() const {
  if (runs.empty()) return all_runs();
  std::vector<RunSpec> out;
  for (const auto& name : split_list(runs)) {
    if (name == "none") continue;
    const auto all = all_runs();
    auto it = std::find_if(all.begin(), all.end(), [&](const RunSpec& r) { return r.name == name; });
    LORA_CHECK(it != all.end(), "--runs: unknown run '{}' (runs: {}, or none)", name, all_run_names());
    out.push_back(*it);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Data

Data load_data(const Options& o, const tokenizer::GPT2Tokenizer& tok, int64_t context) {
  Data d;
  const int32_t eot = tok.eot_token();
  auto read_text = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    LORA_CHECK(in.good(), "cannot read '{}'", p.string());
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  // Corpus: each file's first 98% of tokens for training, the rest held out, files in the order given.
  for (const auto& f : o.corpus_files()) {
    const std::vector<int32_t> ids = tok.encode(read_text(o.data(f)));
    const size_t cut = ids.size() * 98 / 100;
    d.corpus_train.insert(d.corpus_train.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut));
    d.corpus_train.push_back(eot);
    d.corpus_val.insert(d.corpus_val.end(), ids.begin() + static_cast<std::ptrdiff_t>(cut), ids.end());
    d.corpus_val.push_back(eot);
  }
  // Style task: the held-out book, first 90% to train the adapter, the last 10% to evaluate it.
  const std::vector<int32_t> style = tok.encode(read_text(o.data(o.style_text)));
  const size_t cut = style.size() * 9 / 10;
  d.style_train.assign(style.begin(), style.begin() + static_cast<std::ptrdiff_t>(cut));
  d.style_val.assign(style.begin() + static_cast<std::ptrdiff_t>(cut), style.end());

  // E2E: every training example (the data/ copy is already a subset), `valid_examples` evenly spaced
  // valid lines, and `test_mrs` evenly spaced test MRs with all their references.
  for (const auto& e : read_e2e(o.data("e2e/train.txt").string())) d.train.push_back(encode_e2e(tok, e, context));
  const auto valid = read_e2e(o.data("e2e/valid.txt").string());
  const int64_t nv = std::min<int64_t>(o.valid_examples, static_cast<int64_t>(valid.size()));
  for (int64_t i = 0; i < nv; ++i) {
    d.valid.push_back(encode_e2e(tok, valid[static_cast<size_t>(i * static_cast<int64_t>(valid.size()) / nv)], context));
  }
  const auto groups = group_by_mr(read_e2e(o.data("e2e/test.txt").string()));
  const int64_t nt = std::min<int64_t>(o.test_mrs, static_cast<int64_t>(groups.size()));
  for (int64_t i = 0; i < nt; ++i) d.test.push_back(groups[static_cast<size_t>(i * static_cast<int64_t>(groups.size()) / nt)]);
  for (const auto& g : d.test) d.test_prompts.push_back(tok.encode(e2e_prompt(g.mr)));
  return d;
}

// ---------------------------------------------------------------------------------------------------
// Pre-training

nlohmann::json model_config(const Options& o) {
  json c = models::preset_config("gpt2");
  c["n_embd"] = o.n_embd, c["n_layer"] = o.n_layer, c["n_head"] = o.n_head;
  c["n_positions"] = o.pre.seq, c["n_ctx"] = o.pre.seq;
  return c;
}

std::shared_ptr<models::CausalLM> load_base(const Options& o) {
  if (!o.weights.empty()) return models::load_model(o.weights, "");
  return models::load_model((fs::path(o.out) / "pretrain" / "model").string(), "");
}

int stage_pretrain(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "pretrain.json";
  if (fs::exists(done)) return fmt::print("pre-training: done ({})\n", done.string()), 0;
  if (!o.weights.empty()) {
    write_json_atomically(done, {{"skipped", true}, {"weights", o.weights}});
    return 0;
  }
  const json config = model_config(o);
  auto model = models::create_model({config, "replicate_lora"}, o.seed);
  fmt::print("== pre-training: GPT-2 shape {} layers x {} wide, {} heads, context {}; {} parameters ({} outside the "
             "embeddings); {} training tokens, {} held out; {} steps of {} x {} tokens\n",
             o.n_layer, o.n_embd, o.n_head, o.pre.seq, model->num_parameters(),
             model->num_parameters() - (50257 + o.pre.seq) * o.n_embd, d.corpus_train.size(), d.corpus_val.size(),
             o.pre.steps, o.pre.batch, o.pre.seq);
  const auto t0 = Clock::now();
  json log = pretrain(*model, d.corpus_train, d.corpus_val, o.pre, fs::path(o.out) / "pretrain");
  if (log.contains("stopped_at")) {
    fmt::print("pre-training stopped after step {} (--stop-after); rerun the same command to resume\n",
               log["stopped_at"].get<int64_t>());
    return 3;
  }
  save_hf_checkpoint(*model, (fs::path(o.out) / "pretrain" / "model").string());
  json result = {{"config", config},
                 {"parameters", model->num_parameters()},
                 {"train_tokens", d.corpus_train.size()},
                 {"heldout_tokens", d.corpus_val.size()},
                 {"tokens_seen", o.pre.steps * o.pre.batch * o.pre.seq},
                 {"corpus", o.corpus_files()},
                 {"steps", o.pre.steps}, {"batch", o.pre.batch}, {"seq", o.pre.seq}, {"lr", o.pre.lr}, {"seed", o.seed},
                 {"wall_seconds_this_process", seconds_since(t0)},
                 {"train_seconds", log["train_seconds"]}, {"tokens_per_s", log["tokens_per_s"]},
                 {"resumed_from", log["resumed_from"]}, {"evals", log["evals"]},
                 {"final_train_loss", log["losses"].back()}};
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Fine-tuning

json memory_json(const DeviceMemoryStats& s) {
  json at_peak, own_peak;
  for (int c = 0; c < kNumMemoryCategories; ++c) {
    const auto cat = static_cast<MemoryCategory>(c);
    at_peak[std::string(category_name(cat))] = s.live_at_peak[cat];
    own_peak[std::string(category_name(cat))] = s.peak[cat];
  }
  return {{"global_peak_bytes", s.global_peak}, {"at_global_peak", at_peak}, {"category_peaks", own_peak}};
}

// Bytes of the adapter's tensors in PEFT's layout: per layer with S adapted slices, A [S r, in] and
// B [out, S r] (a sliced layer's B carries zero rows for the slices it does not adapt), 4 bytes each.
int64_t expected_adapter_data_bytes(const models::CausalLM& model) {
  int64_t n = 0;
  for (const auto& [path, layer] : nn::lora_layers(model)) {
    const int64_t S = static_cast<int64_t>(layer->slices().size()), r = layer->rank();
    n += S * r * layer->in_features() + layer->out_features() * S * r;
  }
  return 4 * n;
}

// The data section of a safetensors file: its size less the 8-byte length and the header.
int64_t safetensors_data_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  LORA_CHECK(in.good(), "'{}': no safetensors header", file.string());
  return static_cast<int64_t>(fs::file_size(file)) - 8 - static_cast<int64_t>(header);
}

bool bit_identical(const std::vector<std::pair<std::string, std::vector<float>>>& a,
                   const std::vector<std::pair<std::string, std::vector<float>>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || a[i].second.size() != b[i].second.size()) return false;
    if (std::memcmp(a[i].second.data(), b[i].second.data(), a[i].second.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

fs::path run_dir(const Options& o, const std::string& name) { return fs::path(o.out) / "runs" / name; }

nn::LoRAConfig lora_config(const Options& o, const std::string& targets, int64_t rank) {
  nn::LoRAConfig c;
  c.options.rank = rank;
  c.options.alpha = o.lora_scale * static_cast<double>(rank);
  c.options.seed = o.seed;
  c.targets = nn::LoRAConfig::parse_targets(targets);
  return c;
}

int stage_finetune(const Options& o, const Data& d, const RunSpec& spec) {
  const fs::path done = run_dir(o, spec.name) / "train.json";
  if (fs::exists(done)) return fmt::print("fine-tune {}: done\n", spec.name), 0;
  fmt::print("== fine-tune {}: {}\n", spec.name,
             spec.lora ? fmt::format("LoRA r={} on {}", spec.rank, spec.targets) : std::string("all parameters"));
  auto model = load_base(o);
  const auto before = snapshot_weights(*model);
  if (spec.lora) models::apply_lora(*model, lora_config(o, spec.targets, spec.rank));
  const double lr = spec.lora ? o.lora_lr : o.full_lr;
  optim::AdamW optimizer(model->parameters(true), {.lr = lr, .weight_decay = 0.0});
  // The paper's schedule: linear decay after a warm-up.
  optim::LRSchedule schedule{optim::ScheduleKind::Linear, lr, std::max<int64_t>(1, o.ft_steps / 10), o.ft_steps};
  schedule.validate();
  const int32_t pad = 50256;
  const int64_t n = static_cast<int64_t>(d.train.size());

  json curve = json::array(), losses = json::array(), step_times = json::array();
  curve.push_back({0, heldout_example_loss(*model, d.valid, o.ft_batch, pad)});
  // Memory of the training steps alone: the peaks are read before each held-out evaluation and reset after
  // it, and the largest training-time figures are kept.
  DeviceMemoryStats memory;
  auto absorb_peaks = [&memory] {
    const DeviceMemoryStats s = MemoryTracker::instance().stats(Device::cpu());
    if (s.global_peak > memory.global_peak) memory.global_peak = s.global_peak, memory.live_at_peak = s.live_at_peak;
    for (size_t c = 0; c < memory.peak.bytes.size(); ++c) memory.peak.bytes[c] = std::max(memory.peak.bytes[c], s.peak.bytes[c]);
  };
  MemoryTracker::instance().reset_peaks();
  Progress progress("fine-tune " + spec.name + " step", o.ft_steps);
  model->train();
  std::vector<int64_t> order;
  for (int64_t step = 0; step < o.ft_steps; ++step) {
    // A fixed permutation of the training examples per epoch (seeded), consumed in order.
    std::vector<int64_t> rows;
    for (int64_t i = step * o.ft_batch; i < (step + 1) * o.ft_batch; ++i) {
      if (i % n == 0) {
        order.resize(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), int64_t{0});
        Generator gen(o.seed + 7919 * static_cast<uint64_t>(i / n));
        for (int64_t k = n - 1; k > 0; --k) std::swap(order[static_cast<size_t>(k)], order[gen.next_u64() % static_cast<uint64_t>(k + 1)]);
      }
      rows.push_back(order[static_cast<size_t>(i % n)]);
    }
    const auto t0 = Clock::now();
    Tensor x, y;
    make_lm_batch(d.train, rows, pad, x, y);
    optimizer.set_lr(schedule.lr_at(step));
    Tensor loss = model->loss(x, y);
    backward(loss);
    optim::clip_grad_norm(optimizer.params(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    const double value = loss.item();
    step_times.push_back(seconds_since(t0));
    losses.push_back(value);
    if ((step + 1) % o.eval_every == 0 || step + 1 == o.ft_steps) {
      absorb_peaks();
      curve.push_back({step + 1, heldout_example_loss(*model, d.valid, o.ft_batch, pad)});
      MemoryTracker::instance().reset_peaks();
    }
    if ((step + 1) % 10 == 0 || step + 1 == o.ft_steps) {
      progress.update(step + 1, fmt::format("loss {:.4f} | held-out {:.4f} | {:.2f} s/step", value,
                                            curve.back()[1].get<double>(), step_times.back().get<double>()));
    }
  }
  json result = {{"name", spec.name}, {"mode", spec.lora ? "lora" : "full"}, {"targets", spec.targets},
                 {"rank", spec.rank}, {"alpha", spec.lora ? o.lora_scale * static_cast<double>(spec.rank) : 0.0},
                 {"lr", lr}, {"steps", o.ft_steps}, {"batch", o.ft_batch},
                 {"trainable_params", model->num_parameters(true)}, {"total_params", model->num_parameters()},
                 {"curve", curve}, {"train_losses", losses}, {"step_times_s", step_times},
                 {"memory", memory_json(memory)}, {"process_peak_rss_bytes_so_far", process_peak_rss_bytes()}};
  std::vector<double> times = step_times.get<std::vector<double>>();
  if (times.size() > 1) times.erase(times.begin());  // the first step allocates
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  result["median_step_s"] = times[times.size() / 2];

  const fs::path dir = run_dir(o, spec.name);
  if (spec.lora) {
    // The frozen base must be bit-identical after training (LoRA never writes it).
    result["base_bit_identical"] = bit_identical(before, snapshot_weights(*model));
    const fs::path adapter = dir / "adapter";
    models::save_adapter(*model, adapter.string(), o.weights.empty() ? "replicate_lora/pretrain" : o.weights);
    result["saved_bytes"] = directory_bytes(adapter);
    result["adapter_data_bytes"] = safetensors_data_bytes(adapter / "adapter_model.safetensors");
    result["expected_adapter_data_bytes"] = expected_adapter_data_bytes(*model);
    result["saved_path"] = adapter.string();
  } else {
    const fs::path ckpt = dir / "model";
    models::save_hf_checkpoint(*model, ckpt.string());
    result["saved_bytes"] = directory_bytes(ckpt);
    result["saved_path"] = ckpt.string();
  }
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Evaluation of one run: greedy generations for the test MRs, BLEU and ROUGE-L.

std::shared_ptr<models::CausalLM> load_run_model(const Options& o, const RunSpec& spec) {
  if (!spec.lora) return models::load_model((run_dir(o, spec.name) / "model").string(), "");
  auto model = load_base(o);
  nn::load_adapter(*model, (run_dir(o, spec.name) / "adapter").string());
  return model;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

int stage_evaluate(const Options& o, const Data& d, const RunSpec& spec, const tokenizer::GPT2Tokenizer& tok) {
  const fs::path done = run_dir(o, spec.name) / "eval.json";
  if (fs::exists(done)) return fmt::print("evaluate {}: done\n", spec.name), 0;
  auto model = load_run_model(o, spec);
  std::vector<std::string> hyps;
  Progress progress("generate " + spec.name, static_cast<int64_t>(d.test_prompts.size()));
  for (size_t i = 0; i < d.test_prompts.size(); ++i) {
    const auto ids = greedy_generate(*model, {d.test_prompts[i]}, o.max_new_tokens)[0];
    hyps.push_back(one_line(tok.decode(ids)));
    if ((i + 1) % 25 == 0 || i + 1 == d.test_prompts.size()) progress.update(static_cast<int64_t>(i + 1), "greedy");
  }
  std::vector<std::vector<std::string>> refs;
  for (const auto& g : d.test) refs.push_back(g.refs);
  const BleuScore bleu = corpus_bleu_text(hyps, refs);
  const double rouge = corpus_rouge_l(hyps, refs);
  std::string text;
  for (const auto& h : hyps) text += h + "\n";
  const std::string gen_file = "generations/" + spec.name + ".txt";
  write_text_atomically(fs::path(o.report_dir) / gen_file, text);
  json result = {{"bleu", bleu.bleu}, {"bleu_precisions", bleu.precisions}, {"brevity_penalty", bleu.brevity_penalty},
                 {"hyp_length", bleu.hyp_length}, {"ref_length", bleu.ref_length}, {"rouge_l", rouge},
                 {"generations_file", gen_file}, {"decoding", fmt::format("greedy, at most {} new tokens, stop at "
                                                                         "<|endoftext|>", o.max_new_tokens)}};
  fmt::print("evaluate {}: BLEU {:.4f}, ROUGE-L {:.4f}\n", spec.name, bleu.bleu, rouge);
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The second task: LoRA (q, v, r = 8) on the held-out book, for adapter switching.

int stage_style(const Options& o, const Data& d) {
  const fs::path done = run_dir(o, "style_r8") / "train.json";
  if (fs::exists(done)) return fmt::print("style adapter: done\n"), 0;
  fmt::print("== style adapter: LoRA r=8 on q,v, continuing {}\n", o.style_text);
  auto model = load_base(o);
  models::apply_lora(*model, lora_config(o, "q,v", 8));
  const int64_t seq = std::min<int64_t>(o.pre.seq, model->dims().context_length);
  const int64_t eval_batches = o.quick ? 2 : 8;
  const double before = heldout_window_loss(*model, d.style_val, o.ft_batch, seq, eval_batches);
  PretrainOptions p = o.pre;
  p.steps = o.style_steps, p.batch = o.ft_batch, p.seq = seq, p.lr = o.lora_lr, p.min_lr = o.lora_lr / 10;
  p.warmup = std::max<int64_t>(1, o.style_steps / 10), p.eval_every = o.style_steps, p.eval_batches = eval_batches;
  p.stop_after = 0;
  p.checkpoint_minutes = 1e9;  // short: no intermediate checkpoints
  const fs::path dir = run_dir(o, "style_r8");
  fs::remove_all(dir / "train");
  const json log = pretrain(*model, d.style_train, d.style_val, p, dir / "train");
  fs::remove_all(dir / "train");
  models::save_adapter(*model, (dir / "adapter").string(), "replicate_lora/pretrain");
  write_json_atomically(done, {{"text", o.style_text}, {"steps", o.style_steps}, {"heldout_loss_before", before},
                               {"heldout_loss_after", log["evals"].back()[1]}, {"median_step_s", log["train_seconds"].get<double>() / static_cast<double>(o.style_steps)}});
  return 0;
}

}  // namespace lora::replicate
