// replicate_lora's options (the full, --quick and --device cuda presets), its data (the corpus, the style
// book and E2E, tokenised with the replication's BPE), pre-training and the base model's evaluation.
// Fine-tuning runs are in replication_runs.cpp; switching, merging and the report in replication_report.cpp;
// the subspace analysis and the step-time measurement in replication_analysis.cpp.
#include "experiments/replication/replication_stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "core/device.h"
#include "experiments/replication/replication_internal.h"
#include "lora_source_dir.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "tools/model_tokenizer.h"

namespace lora::replicate {

using json = nlohmann::json;
using namespace lora::tools;

// ---------------------------------------------------------------------------------------------------
// Options

std::vector<RunSpec> all_runs() {
  // In the order they run: what claim 1 needs first (full, q,v r = 8), then claim 2's ranks (r = 1 and 64 also
  // feed the subspace analysis), then the rest.
  const std::string qv = "q,v", all = "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj";
  return {{"full", false, "", 0},        {"lora_qv_r8", true, qv, 8}, {"lora_qv_r1", true, qv, 1},
          {"lora_qv_r64", true, qv, 64}, {"lora_qv_r2", true, qv, 2}, {"lora_qv_r4", true, qv, 4},
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

// The default pre-training corpus: every text of data/corpus/ but the style task's book (docs/replication.md
// and data/README.md: 15 files, 4.0M tokens of the replication's BPE; novels, speeches, scripture, verse).
const std::vector<std::string> kFullCorpus = {
    "corpus/gutenberg-austen-emma.txt",          "corpus/gutenberg-austen-pride.txt",
    "corpus/gutenberg-austen-sense.txt",         "corpus/gutenberg-bible-kjv.txt",
    "corpus/gutenberg-blake-poems.txt",          "corpus/gutenberg-carroll-alice.txt",
    "corpus/gutenberg-chesterton-ball.txt",      "corpus/gutenberg-chesterton-brown.txt",
    "corpus/gutenberg-chesterton-thursday.txt",  "corpus/gutenberg-melville-moby_dick.txt",
    "corpus/gutenberg-milton-paradise.txt",      "corpus/gutenberg-twain-huckleberry_finn.txt",
    "corpus/gutenberg-whitman-leaves.txt",       "corpus/us-inaugural-addresses-1789-2005.txt",
    "corpus/us-state-of-the-union-1945-2006.txt"};
const std::vector<std::string> kQuickCorpus = {"corpus/gutenberg-twain-huckleberry_finn.txt"};

void Options::finalize(const std::vector<std::string>& argv) {
  for (const auto& a : argv) command += (command.empty() ? "" : " ") + a;
  if (data_dir.empty()) data_dir = std::string(LORA_SOURCE_DIR) + "/data";
  if (report_dir.empty()) report_dir = (fs::path(out) / "report").string();
  const Device dev = Device::parse(device);  // names the flag's value when it is not a device
  LORA_CHECK(!dev.is_meta(), "--device meta: the experiment trains and measures; use cpu or cuda[:N]");
  const bool cuda = dev.is_cuda();
#ifndef LORA_HAVE_CUDA
  LORA_CHECK(!cuda, "--device {}: this build has no CUDA backend (configure with the CUDA toolkit installed)", device);
#endif
  // Three presets: --quick (CI, about a minute), the full CPU experiment (about 2 hours on 2 quiet cores:
  // docs/replication.md) and, with --device cuda, a bigger base pre-trained on more of the corpus.
  set_default(n_embd, quick ? int64_t{64} : cuda ? int64_t{512} : int64_t{256});
  set_default(n_layer, quick ? int64_t{2} : cuda ? int64_t{8} : int64_t{4});
  set_default(n_head, quick ? int64_t{2} : cuda ? int64_t{8} : int64_t{4});
  if (pre.steps == PretrainOptions{}.steps) pre.steps = quick ? 30 : cuda ? 12000 : 3000;
  if (pre.batch == PretrainOptions{}.batch) pre.batch = quick ? 4 : cuda ? 32 : 16;
  if (pre.seq == PretrainOptions{}.seq) pre.seq = quick ? 128 : 192;
  pre.warmup = std::max<int64_t>(1, pre.steps / 20);
  pre.eval_every = quick ? 10 : 200;
  pre.eval_batches = quick ? 2 : 16;
  if (pre.lr == PretrainOptions{}.lr) pre.lr = quick ? 2e-3 : cuda ? 1e-3 : 2e-3;
  pre.min_lr = pre.lr / 10;
  pre.seed = seed;
  set_default(ft_steps, quick ? int64_t{12} : cuda ? int64_t{5000} : int64_t{800});
  set_default(ft_batch, quick ? int64_t{4} : int64_t{8});
  set_default(eval_every, quick ? int64_t{6} : cuda ? int64_t{500} : int64_t{100});
  if (train_examples < 0) train_examples = quick ? 400 : 0;  // 0: all 42,061
  set_default(valid_examples, quick ? int64_t{16} : int64_t{400});
  set_default(test_mrs, quick ? int64_t{4} : int64_t{105});
  set_default(max_new_tokens, quick ? int64_t{16} : int64_t{64});
  set_default(style_steps, quick ? int64_t{8} : int64_t{40});
  set_default(latency_rounds, quick ? int64_t{3} : int64_t{11});
  set_default(timing_rounds, quick ? int64_t{2} : int64_t{8});
  if (full_lrs.empty()) full_lrs = quick ? std::vector<double>{5e-4, 1e-3} : std::vector<double>{2.5e-4, 5e-4, 1e-3};
  if (lora_lrs.empty()) lora_lrs = quick ? std::vector<double>{1e-3, 2e-3} : std::vector<double>{5e-4, 1e-3, 2e-3};
  if (sweep_extensions < 0) sweep_extensions = quick ? 1 : 3;
  set_default(lora_alpha, 32.0);  // the paper's GPT-2 E2E value (microsoft/LoRA examples/NLG: --lora_alpha 32)
  for (double lr : full_lrs) LORA_CHECK(lr > 0 && lr < 1, "--full-lrs: {} is not a learning rate in (0, 1)", lr);
  for (double lr : lora_lrs) LORA_CHECK(lr > 0 && lr < 1, "--lora-lrs: {} is not a learning rate in (0, 1)", lr);
  LORA_CHECK(n_embd % n_head == 0, "--n-embd {} is not a multiple of --n-head {}", n_embd, n_head);
  LORA_CHECK(pre.warmup < pre.steps, "--pretrain-steps {} must exceed the warm-up of {} steps", pre.steps, pre.warmup);
  LORA_CHECK(fs::is_directory(data_dir), "--data-dir '{}': no such folder", data_dir);
  if (!weights.empty()) LORA_CHECK(fs::exists(weights), "--weights '{}': no such file or folder", weights);
  if (weights.empty())
    LORA_CHECK(fs::is_regular_file(tokenizer_file()), "--tokenizer: '{}' not found", tokenizer_file().string());
  for (const auto& f : corpus_files())
    LORA_CHECK(fs::is_regular_file(data(f)), "--corpus: '{}' not found", data(f).string());
  LORA_CHECK(fs::is_regular_file(data(style_text)), "--style-text: '{}' not found", data(style_text).string());
  for (const char* split : {"train", "valid", "test"}) {
    const fs::path p = data(std::string("e2e/") + split + ".txt");
    LORA_CHECK(fs::is_regular_file(p), "--data-dir: E2E file '{}' not found", p.string());
  }
  for (const auto& c : corpus_files()) {
    LORA_CHECK(data(c) != data(style_text),
               "--corpus: '{}' is the style task's text (--style-text), which must stay "
               "held out of pre-training",
               c);
    LORA_CHECK(c.find("e2e") == std::string::npos, "--corpus: '{}': E2E's own text stays out of pre-training", c);
  }
  selected_runs();  // validates --runs
}

fs::path Options::data(const std::string& relative) const {
  return fs::path(data_dir) / relative;
}

fs::path Options::tokenizer_file() const {
  return tokenizer.empty() ? data("replication/tokenizer.json") : fs::path(tokenizer);
}

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

namespace {
std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  LORA_CHECK(in.good(), "cannot read '{}'", p.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
// `count` evenly spaced items of `all` (all of them when count is 0 or larger).
template <typename T>
std::vector<T> evenly_spaced(const std::vector<T>& all, int64_t count) {
  const int64_t n = static_cast<int64_t>(all.size());
  if (count <= 0 || count >= n) return all;
  std::vector<T> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(all[static_cast<size_t>(i * n / count)]);
  return out;
}
}  // namespace

Data load_data(const Options& o, int64_t context) {
  Data d;
  if (o.weights.empty()) {
    d.tok = tokenizer::load_tokenizer(o.tokenizer_file());
  } else {
    const auto model = models::load_model(o.weights, "");
    d.tok = tools::tokenizer_for_model(*model, o.weights, o.tokenizer);
  }
  const auto eot = d.tok->token_to_id("<|endoftext|>");
  LORA_CHECK(eot.has_value(), "tokenizer '{}': no <|endoftext|> token (the experiment ends every text with it)",
             o.weights.empty() ? o.tokenizer_file().string() : o.weights);
  d.eot = *eot;
  d.vocab_size = static_cast<int64_t>(d.tok->vocab_size());
  const tokenizer::EncodeOptions plain{.add_special_tokens = false, .parse_special_tokens = false};
  // Corpus: each file's first 98% of tokens for training, the rest held out, files in the order given.
  for (const auto& f : o.corpus_files()) {
    const std::vector<int32_t> ids = d.tok->encode(read_text(o.data(f)), plain);
    const size_t cut = ids.size() * 98 / 100;
    d.corpus_train.insert(d.corpus_train.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut));
    d.corpus_train.push_back(d.eot);
    d.corpus_val.insert(d.corpus_val.end(), ids.begin() + static_cast<std::ptrdiff_t>(cut), ids.end());
    d.corpus_val.push_back(d.eot);
  }
  // Style task: the held-out book, first 90% to train the adapter, the last 10% to evaluate it.
  const std::vector<int32_t> style = d.tok->encode(read_text(o.data(o.style_text)), plain);
  const size_t cut = style.size() * 9 / 10;
  d.style_train.assign(style.begin(), style.begin() + static_cast<std::ptrdiff_t>(cut));
  d.style_val.assign(style.begin() + static_cast<std::ptrdiff_t>(cut), style.end());

  // E2E: the training examples (all of them unless --train-examples), `valid_examples` evenly spaced valid
  // lines, and `test_mrs` evenly spaced test MRs with all their references.
  for (const auto& e : evenly_spaced(read_e2e(o.data("e2e/train.txt").string()), o.train_examples)) {
    d.train.push_back(encode_e2e(*d.tok, d.eot, e, context));
  }
  for (const auto& e : evenly_spaced(read_e2e(o.data("e2e/valid.txt").string()), o.valid_examples)) {
    d.valid.push_back(encode_e2e(*d.tok, d.eot, e, context));
  }
  d.test = evenly_spaced(group_by_mr(read_e2e(o.data("e2e/test.txt").string())), o.test_mrs);
  for (const auto& g : d.test) d.test_prompts.push_back(d.tok->encode(e2e_prompt(g.mr), plain));
  return d;
}

// ---------------------------------------------------------------------------------------------------
// Pre-training

nlohmann::json model_config(const Options& o, const Data& d) {
  json c = models::preset_config("gpt2");
  c["n_embd"] = o.n_embd, c["n_layer"] = o.n_layer, c["n_head"] = o.n_head;
  c["n_positions"] = o.pre.seq, c["n_ctx"] = o.pre.seq;
  c["vocab_size"] = d.vocab_size;
  c["bos_token_id"] = d.eot, c["eos_token_id"] = d.eot;
  return c;
}

std::shared_ptr<models::CausalLM> load_base(const Options& o) {
  auto model =
      models::load_model(o.weights.empty() ? (fs::path(o.out) / "pretrain" / "model").string() : o.weights, "");
  model->to(Device::parse(o.device));
  return model;
}

int stage_pretrain(const Options& o, const Data& d) {
  const fs::path done = fs::path(o.out) / "pretrain.json";
  if (fs::exists(done)) return fmt::print("pre-training: done ({})\n", done.string()), 0;
  if (!o.weights.empty()) {
    write_json_atomically(done, {{"skipped", true}, {"weights", o.weights}});
    return 0;
  }
  const json config = model_config(o, d);
  auto model = models::create_model({config, "replicate_lora"}, o.seed);
  model->to(Device::parse(o.device));
  const int64_t embedding_params = (d.vocab_size + o.pre.seq) * o.n_embd;
  fmt::print(
      "== pre-training on {}: GPT-2 shape {} layers x {} wide, {} heads, context {}, vocabulary {}; {} "
      "parameters ({} outside the embeddings); {} training tokens, {} held out; {} steps of {} x {} tokens\n",
      o.device, o.n_layer, o.n_embd, o.n_head, o.pre.seq, d.vocab_size, model->num_parameters(),
      model->num_parameters() - embedding_params, d.corpus_train.size(), d.corpus_val.size(), o.pre.steps, o.pre.batch,
      o.pre.seq);
  const auto t0 = Clock::now();
  PretrainOptions pre = o.pre;
  // E2E's validation loss at every evaluation, beside the corpus's: when the base becomes fair (never trained on).
  pre.side_eval = [&](models::CausalLM& m) { return heldout_example_loss(m, d.valid, o.ft_batch, d.eot); };
  json log = pretrain(*model, d.corpus_train, d.corpus_val, pre, fs::path(o.out) / "pretrain");
  if (log.contains("stopped_at")) {
    fmt::print("pre-training stopped after step {} (--stop-after); rerun the same command to resume\n",
               log["stopped_at"].get<int64_t>());
    return 3;
  }
  const fs::path model_dir = fs::path(o.out) / "pretrain" / "model";
  save_hf_checkpoint(*model, model_dir.string());
  // The tokenizer goes with the model, so generate, perplexity and --weights read the folder as it is.
  if (o.weights.empty())
    fs::copy_file(o.tokenizer_file(), model_dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  json result = {{"config", config},
                 {"device", o.device},
                 {"parameters", model->num_parameters()},
                 {"embedding_parameters", embedding_params},
                 {"tokenizer", o.tokenizer_file().filename().string()},
                 {"vocab_size", d.vocab_size},
                 {"train_tokens", d.corpus_train.size()},
                 {"heldout_tokens", d.corpus_val.size()},
                 {"tokens_seen", o.pre.steps * o.pre.batch * o.pre.seq},
                 {"corpus", o.corpus_files()},
                 {"steps", o.pre.steps},
                 {"batch", o.pre.batch},
                 {"seq", o.pre.seq},
                 {"lr", o.pre.lr},
                 {"seed", o.seed},
                 {"wall_seconds_this_process", seconds_since(t0)},
                 {"train_seconds", log["train_seconds"]},
                 {"tokens_per_s", log["tokens_per_s"]},
                 {"resumed_from", log["resumed_from"]},
                 {"evals", log["evals"]},
                 {"e2e_validation_evals", log.value("side_evals", json::array())},
                 {"corpus_heldout_loss", log["evals"].back()[1]},
                 {"final_train_loss", log["losses"].back()}};
  write_json_atomically(done, result);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The base before fine-tuning: its loss on E2E's validation references (the fairness check compares it with
// its loss on held-out corpus text) and its generations for the test MRs, scored like every run's.

int stage_evaluate_base(const Options& o, const Data& d) {
  const fs::path done = run_dir(o, "base") / "eval.json";
  if (fs::exists(done)) return fmt::print("evaluate base: done\n"), 0;
  auto model = load_base(o);
  const double valid = heldout_example_loss(*model, d.valid, o.ft_batch, d.eot);
  const double corpus =
      heldout_window_loss(*model, d.corpus_val, o.pre.batch, std::min<int64_t>(o.pre.seq, model->dims().context_length),
                          o.pre.eval_batches);
  json result = evaluate_generations(o, d, *model, "base");
  result["heldout_loss"] = valid;
  result["corpus_heldout_loss"] = corpus;
  fmt::print(
      "base: E2E validation loss {:.4f}, corpus held-out loss {:.4f} (ratio {:.2f}; the fair-setup check "
      "asks at most 1.5)\n",
      valid, corpus, valid / corpus);
  write_json_atomically(done, result);
  return 0;
}

}  // namespace lora::replicate
