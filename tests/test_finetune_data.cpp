// finetune on the data people fine-tune on (tools/finetune_data.h, examples/finetune.cpp): a packed batch
// trains as its examples padded one per row, through train_step; the program's --grad-accum equals one
// larger batch; JSONL runs end to end (format detection, --epochs, --eval-fraction, --packing, the saved
// folder's tokenizer and training_settings.json); a JSONL run killed mid-epoch resumes bit-identical;
// early stopping; --log lines; --config-file equals the same flags; flags that cannot apply are refused by
// name; SHA-256 against FIPS 180-4's vectors.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/sha256.h"
#include "lora_source_dir.h"
#include "models/registry.h"
#include "tests/program_runner.h"
#include "train/example_source.h"
#include "train/train_step.h"

using namespace lora;
using namespace lora::testing;

namespace {

// --- The model level: packing through train_step -------------------------------------------------------

train::Example random_example(Generator& gen, int64_t length, int64_t prompt, int32_t vocab) {
  train::Example e;
  for (int64_t i = 0; i < length; ++i) {
    e.ids.push_back(int32_t(gen.below(uint64_t(vocab))));
    e.labels.push_back(i < prompt ? train::kIgnoreLabel : e.ids.back());
  }
  return e;
}

std::vector<std::vector<double>> gradients_of(models::CausalLM& model) {
  std::vector<std::vector<double>> out;
  for (auto& [name, p] : model.named_parameters(true)) {
    out.push_back(p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>(size_t(p.numel()), 0.0));
    p.set_grad(Tensor());
  }
  return out;
}

double largest_difference(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j)
      worst = std::max(worst, std::abs(a[i][j] - b[i][j]) / (1e-3 + std::abs(b[i][j])));
  }
  return worst;
}

// --- The program level ---------------------------------------------------------------------------------

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<nlohmann::json> log_lines(const fs::path& p, const std::string& type) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);  // every line parses
    if (j.at("type") == type) out.push_back(j);
  }
  return out;
}

struct Files {
  fs::path dir, config, tokens, jsonl;
};

// A small GPT-2 with GPT-2's vocabulary (its tokenizer is the default), a token file for the tiny preset, and
// a JSONL file of prompt/completion records of very different lengths.
Files make_files(const std::string& name) {
  Files f;
  f.dir = scratch_dir() / name;
  fs::remove_all(f.dir);
  fs::create_directories(f.dir);
  f.config = f.dir / "config.json";
  write_file(f.config, R"({"model_type": "gpt2", "vocab_size": 50257, "n_positions": 64, "n_embd": 16, "n_layer": 1,
    "n_head": 2, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})");
  std::vector<int32_t> tokens;
  for (int i = 0; i < 3000; ++i) tokens.push_back((i * 7 + 3) % 101);
  f.tokens = f.dir / "tokens.bin";
  write_file(f.tokens, llmc_bin(tokens));
  std::string jsonl;
  const char* words[] = {"red", "green", "blue", "cat", "dog", "sun", "moon", "tree"};
  for (int i = 0; i < 24; ++i) {
    std::string completion;
    for (int k = 0; k < 1 + (i * 5) % 13; ++k) completion += std::string(" ") + words[(i + k) % 8];
    jsonl +=
        nlohmann::json{{"prompt", std::string("Say ") + words[i % 8] + ":"}, {"completion", completion}}.dump() + "\n";
  }
  f.jsonl = f.dir / "data.jsonl";
  write_file(f.jsonl, jsonl);
  return f;
}

// Whether this build reads JSONL (train/data/load_examples); the placeholder says it does not.
bool reads_jsonl(const fs::path& finetune, const Files& f) {
  const RunResult r = run(finetune, "--config " + quote(f.config) +
                                        " --mode lora --steps 1 --warmup 0 --batch 2 --seq 32 "
                                        "--data " +
                                        quote(f.jsonl));
  if (r.err.find("not readable in this build") != std::string::npos) {
    WARN("this build has no JSONL reader (train/data/load_examples): the JSONL checks are skipped");
    return false;
  }
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return true;
}

std::string tiny_tokens(const Files& f) {
  return "--config tiny --data " + quote(f.tokens) + " --seq 16 --eval-batches 1 --warmup 0 ";
}

}  // namespace

TEST_CASE("a packed batch through train_step trains as its examples padded one per row", "[finetune_data]") {
  for (const std::string preset : {"tiny", "llama-tiny", "gemma-tiny"}) {
    INFO(preset);
    Generator gen(3);
    std::vector<train::Example> examples;
    for (int64_t n : {5, 11, 3, 7, 9, 2, 14, 6}) examples.push_back(random_example(gen, n, n / 3, 101));
    train::ExampleBatching packed_batching{.batch = 3, .packing = true, .seq = 16, .seed = 1, .shuffle = false};
    train::ExampleSource packed_source(examples, packed_batching);
    const auto plan = packed_source.plan(0);
    REQUIRE(plan.size() == 4);  // 57 tokens in rows of 16
    train::HostBatch packed = packed_source.next_host();
    // The same examples, padded one per row.
    std::vector<train::Example> same;
    for (size_t r = 0; r < 3; ++r) {
      for (int32_t i : plan[r]) same.push_back(examples[size_t(i)]);
    }
    const train::HostBatch padded = train::batch_in_order(same, int64_t(same.size())).at(0);
    REQUIRE(packed.trained_tokens == padded.trained_tokens);
    REQUIRE(packed.sequences == int64_t(same.size()));

    auto model = models::create_model(models::read_config_arg(preset), 5);
    const train::AccumulatedLoss p = train::accumulate_gradients(*model, {packed.to_batch(Device::cpu())});
    const auto packed_grads = gradients_of(*model);
    const train::AccumulatedLoss q = train::accumulate_gradients(*model, {padded.to_batch(Device::cpu())});
    const auto padded_grads = gradients_of(*model);
    CHECK(std::abs(p.loss - q.loss) <= 1e-5 * std::abs(q.loss));
    CHECK(largest_difference(packed_grads, padded_grads) <= 1e-4);

    // It can fail: the packed rows without their segment ids attend across examples.
    packed.segments.clear();
    const train::AccumulatedLoss wrong = train::accumulate_gradients(*model, {packed.to_batch(Device::cpu())});
    (void)gradients_of(*model);
    CHECK(std::abs(wrong.loss - q.loss) > 1e-4);
  }
}

TEST_CASE("SHA-256 of FIPS 180-4's examples and of a file read in chunks", "[finetune_data]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const fs::path p = scratch_dir() / "million_a.txt";
  write_file(p, std::string(1000000, 'a'));
  CHECK(sha256_file(p.string()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("finetune --grad-accum 2 of batch 2 takes the steps of batch 4", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("grad_accum");
  const auto losses = [&](const std::string& flags, const std::string& name) {
    const fs::path log = f.dir / (name + ".jsonl");
    const RunResult r = run(finetune, tiny_tokens(f) + "--mode lora --steps 3 --log " + quote(log) + " " + flags);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    std::vector<double> out;
    for (const auto& j : log_lines(log, "step")) out.push_back(j.at("loss").get<double>());
    return out;
  };
  const std::vector<double> big = losses("--batch 4", "big"), accumulated = losses("--batch 2 --grad-accum 2", "acc"),
                            small = losses("--batch 2", "small");
  REQUIRE(big.size() == 3);
  REQUIRE(accumulated.size() == 3);
  for (size_t i = 0; i < big.size(); ++i) CHECK(std::abs(big[i] - accumulated[i]) <= 1e-5 * std::abs(big[i]));
  CHECK(std::abs(small[1] - big[1]) > 1e-6);  // the test can fail: batch 2 alone reads other windows
}

TEST_CASE("finetune --grad-accum with a quantized base, checkpointed activations, and full fine-tuning",
          "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("grad_accum_variants");
  for (const std::string flags : {"--mode lora --base-dtype nf4 --checkpoint-activations", "--mode full"}) {
    INFO(flags);
    const RunResult r = run(finetune, tiny_tokens(f) + flags + " --steps 2 --batch 2 --grad-accum 3");
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("3 micro-batches per step"));
    CHECK_THAT(r.out, Catch::Contains("trained: 2 steps, epoch 0.07, 12 sequences"));
  }
}

TEST_CASE("finetune on JSONL: --grad-accum over micro-batches of very different trained tokens equals one batch",
          "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("jsonl_grad_accum");
  if (!reads_jsonl(finetune, f)) return;
  for (const std::string packing : {"", " --packing"}) {
    INFO(packing);
    const auto losses = [&](const std::string& flags, const std::string& name) {
      const fs::path log = f.dir / (name + ".jsonl");
      const RunResult r =
          run(finetune, "--config " + quote(f.config) + " --data " + quote(f.jsonl) +
                            " --mode lora --steps 3 --warmup 1 --seq 32 --log " + quote(log) + " " + flags + packing);
      INFO(r.out << r.err);
      REQUIRE(r.exit_code == 0);
      std::vector<double> out;
      for (const auto& j : log_lines(log, "step")) out.push_back(j.at("loss").get<double>());
      return out;
    };
    const std::vector<double> big = losses("--batch 6", "big"), accumulated = losses("--batch 2 --grad-accum 3", "acc");
    REQUIRE(big.size() == 3);
    REQUIRE(accumulated.size() == 3);
    for (size_t i = 0; i < big.size(); ++i) CHECK(std::abs(big[i] - accumulated[i]) <= 1e-5 * std::abs(big[i]));
  }
}

TEST_CASE("finetune --log writes one JSON line per step and per evaluation, and an SVG loss curve", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("log");
  const fs::path log = f.dir / "run.jsonl";
  const RunResult r =
      run(finetune, tiny_tokens(f) + "--mode lora --steps 4 --batch 2 --eval-every 2 --log " + quote(log));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto steps = log_lines(log, "step"), evals = log_lines(log, "eval");
  REQUIRE(steps.size() == 4);
  REQUIRE(evals.size() == 2);
  for (const char* key : {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens_per_s",
                          "examples_per_s", "memory_bytes"}) {
    INFO(key);
    CHECK(steps.back().at(key).is_number());
  }
  CHECK(steps.back().at("step") == 4);
  CHECK(evals.back().at("eval_loss").is_number());
  CHECK_THAT(read_bytes(f.dir / "run.svg"), Catch::Contains("<svg"));
  CHECK_THAT(r.out, Catch::Contains("epoch") && Catch::Contains("examples/s") && Catch::Contains("trained tokens/s"));
}

TEST_CASE("finetune --eval-data holds out another file of the same kind", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("eval_data");
  std::vector<int32_t> other;
  for (int i = 0; i < 500; ++i) other.push_back((i * 3 + 1) % 101);
  write_file(f.dir / "held_out.bin", llmc_bin(other));
  const RunResult r =
      run(finetune, tiny_tokens(f) + "--mode lora --steps 2 --batch 2 --eval-data " + quote(f.dir / "held_out.bin"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("data: 3000 training tokens, 500 held out (--eval-data"));
}

TEST_CASE("finetune --early-stop-patience stops when the held-out loss stops improving", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("early_stop");
  // A learning rate too small to change the loss: no evaluation improves on the first.
  const RunResult r = run(finetune, tiny_tokens(f) +
                                        "--mode lora --steps 20 --batch 2 --lr 1e-30 --eval-every 1 "
                                        "--early-stop-patience 2");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("early stop after step 3"));
  CHECK_THAT(r.out, Catch::Contains("kept the weights of step 1"));
  CHECK_THAT(r.out, !Catch::Contains("step    4/20"));
}

TEST_CASE("finetune --config-file reads the flags of a TOML file as the command line would", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("config_file");
  const fs::path toml = f.dir / "run.toml";
  write_file(toml, "config = \"tiny\"\ndata = \"" + f.tokens.string() +
                       "\"\nseq = 16\neval-batches = 1\nwarmup = 0\n"
                       "mode = \"lora\"\nsteps = 3\nbatch = 2\nrank = 4\nsave = \"" +
                       (f.dir / "from_file").string() + "\"\n");
  const RunResult a = run(finetune, "--config-file " + quote(toml));
  INFO(a.out << a.err);
  REQUIRE(a.exit_code == 0);
  const RunResult b =
      run(finetune, tiny_tokens(f) + "--mode lora --steps 3 --batch 2 --rank 4 --save " + quote(f.dir / "from_flags"));
  INFO(b.out << b.err);
  REQUIRE(b.exit_code == 0);
  const std::string weights = read_bytes(f.dir / "from_file" / "lora" / "adapter_model.safetensors");
  CHECK(!weights.empty());
  CHECK(weights == read_bytes(f.dir / "from_flags" / "lora" / "adapter_model.safetensors"));
  const auto settings = nlohmann::json::parse(read_bytes(f.dir / "from_file" / "lora" / "training_settings.json"));
  CHECK(settings.at("settings").at("config_file") == toml.string());
  CHECK(settings.at("settings").at("steps") == 3);
  CHECK(settings.at("data").at("sha256") == sha256_file(f.tokens.string()));
}

TEST_CASE("finetune refuses, by name, flags that cannot apply", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("refusals");
  const std::string base = tiny_tokens(f) + "--mode lora --batch 2 ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--steps 2 --packing", "--packing"},
      {"--steps 2 --train-on-inputs", "--train-on-inputs"},
      {"--steps 2 --max-seq 8", "--max-seq"},
      {"--steps 2 --drop-long", "--drop-long"},
      {"--steps 2 --eval-fraction 0.1", "--eval-fraction"},
      {"--steps 2 --epochs 1", "--epochs"},
      {"--steps 2 --eval-data " + quote(f.jsonl), "--eval-data"},
      {"--steps 2 --sample-every 1", "--sample-prompt"},
      {"--steps 2 --early-stop-patience 2", "--eval-every"},
      {"--steps 2 --packing --max-seq 32", "--max-seq"},
      {"--steps 2 --format alpaca2", "--format"},
      {"--steps 2 --grad-accum 0", "--grad-accum"},
      {"--steps 2 --config-file /nonexistent.toml", "config"},
      {"--epochs 0", "--epochs: '0': expected a number of passes above 0"},
      {"--epochs -1", "--epochs: '-1': expected a number of passes above 0"},
  };
  for (const auto& [flags, name] : cases) {
    INFO(flags);
    const RunResult r = run(finetune, base + flags);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err + r.out, Catch::Contains(name));
  }
  const RunResult help = run(finetune, "--help");
  for (const char* flag : {"--format", "--chat-template", "--train-on-inputs", "--max-seq", "--drop-long", "--packing",
                           "--eval-data", "--eval-fraction", "--epochs", "--grad-accum", "--early-stop-patience",
                           "--sample-every", "--sample-prompt", "--log", "--config-file"}) {
    INFO(flag);
    CHECK_THAT(help.out, Catch::Contains(flag));
  }
}

TEST_CASE("finetune on JSONL: detection, --epochs, --eval-fraction, packing, a folder ready to use",
          "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("jsonl");
  if (!reads_jsonl(finetune, f)) return;
  const fs::path save = f.dir / "out", log = f.dir / "run.jsonl";
  const RunResult r =
      run(finetune, "--config " + quote(f.config) + " --data " + quote(f.jsonl) +
                        " --mode lora --epochs 2 --batch 2 --grad-accum 2 --seq 32 --warmup 1 --packing "
                        "--eval-fraction 0.25 --eval-every 2 --sample-every 3 --sample-prompt 'Say red:' "
                        "--log " +
                        quote(log) + " --save " + quote(save));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("read as prompt_completion"));
  CHECK_THAT(r.out, Catch::Contains("--epochs 2:"));
  CHECK_THAT(r.out, Catch::Contains("--eval-fraction 0.25: 6 of the 24 examples"));
  CHECK_THAT(r.out, Catch::Contains("held-out loss after"));
  CHECK_THAT(r.out, Catch::Contains("sample at step 3:"));
  CHECK_THAT(r.out, Catch::Contains("padding"));
  const auto steps = log_lines(log, "step");
  REQUIRE(!steps.empty());
  CHECK(steps.back().at("epoch").get<double>() >= 2.0 - 1e-9);
  for (const char* name :
       {"adapter_model.safetensors", "adapter_config.json", "training_settings.json", "vocab.bpe", "encoder.json"}) {
    INFO(name);
    CHECK(fs::exists(save / "lora" / name));
  }
  const auto settings = nlohmann::json::parse(read_bytes(save / "lora" / "training_settings.json"));
  CHECK(settings.at("data").at("sha256") == sha256_file(f.jsonl.string()));
  CHECK(settings.at("settings").at("packing") == true);
  CHECK(settings.at("settings").at("format") == "prompt_completion");
}

TEST_CASE("finetune on JSONL, killed mid-epoch and resumed, ends bit-identical", "[finetune_data][slow]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("jsonl_resume");
  if (!reads_jsonl(finetune, f)) return;
  for (const std::string packing : {"", "--packing"}) {
    INFO(packing);
    const auto args = [&](const fs::path& save) {
      std::vector<std::string> a = {"--config",       f.config.string(),
                                    "--data",         f.jsonl.string(),
                                    "--mode",         "lora",
                                    "--steps",        "8",
                                    "--batch",        "2",
                                    "--grad-accum",   "2",
                                    "--seq",          "32",
                                    "--warmup",       "1",
                                    "--lora-dropout", "0.1",
                                    "--save",         save.string(),
                                    "--save-every",   "2"};
      if (!packing.empty()) a.push_back(packing);
      return a;
    };
    const fs::path log = f.dir / "log.txt", reference = f.dir / ("reference" + packing),
                   save = f.dir / ("killed" + packing);
    REQUIRE(Child(finetune, args(reference), log).wait() == 0);
    // Killed in step 5 (mid-epoch: 24 examples, 4 a step), resumed from checkpoint 4.
    REQUIRE(Child(finetune, args(save), log, {"LORA_FAULT_INJECT=train-step:5"}).wait() == 128 + SIGKILL);
    auto resume = args(save);
    resume.insert(resume.end(), {"--resume", save.string()});
    REQUIRE(Child(finetune, resume, log).wait() == 0);
    const std::string expected = read_bytes(reference / "lora" / "adapter_model.safetensors");
    REQUIRE(!expected.empty());
    CHECK(read_bytes(save / "lora" / "adapter_model.safetensors") == expected);
  }
}

TEST_CASE("finetune on JSONL refuses, by name, flags and files that do not fit examples", "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("jsonl_refusals");
  if (!reads_jsonl(finetune, f)) return;
  const std::string base = "--config " + quote(f.config) + " --data " + quote(f.jsonl) +
                           " --mode lora --steps 2 --warmup 0 "
                           "--batch 2 --seq 32 ";
  const std::string chatml = std::string(LORA_SOURCE_DIR) + "/data/chat_templates/chatml.jinja";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--chat-template " + quote(chatml), "--chat-template applies to alpaca, messages and sharegpt"},
      {"--eval-data " + quote(f.tokens), "--eval-data"},
      {"--eval-data " + quote(f.jsonl) + " --eval-fraction 0.1", "--eval-fraction"},
      {"--packing --max-seq 64", "--max-seq"},
      {"--max-seq 4 --drop-long", "--drop-long"},
      {"--early-stop-patience 2 --eval-every 1", "held-out data"},
      {"--format messages", "messages"},
  };
  for (const auto& [flags, name] : cases) {
    INFO(flags);
    const RunResult r = run(finetune, base + flags);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err + r.out, Catch::Contains(name));
  }
  // Truncation is counted and reported.
  const RunResult r = run(finetune, base + "--max-seq 6");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("truncated (") && Catch::Contains("padding"));
}

TEST_CASE("finetune on chat messages: the chat template renders them and is saved beside the adapter",
          "[finetune_data]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  const Files f = make_files("messages");
  std::string jsonl;
  for (int i = 0; i < 8; ++i) {
    jsonl += nlohmann::json{{"messages",
                             {{{"role", "user"}, {"content", "Count to " + std::to_string(i)}},
                              {{"role", "assistant"}, {"content", std::string(size_t(i + 1), 'x')}}}}}
                 .dump() +
             "\n";
  }
  write_file(f.dir / "chat.jsonl", jsonl);
  const std::string chatml = std::string(LORA_SOURCE_DIR) + "/data/chat_templates/chatml.jinja";
  const fs::path save = f.dir / "out";
  const RunResult r = run(finetune, "--config " + quote(f.config) + " --data " + quote(f.dir / "chat.jsonl") +
                                        " --chat-template " + quote(chatml) +
                                        " --mode lora --steps 2 --warmup 0 --batch 2 "
                                        "--seq 64 --sample-every 2 --sample-prompt 'Count to 3' --save " +
                                        quote(save));
  if (r.err.find("cannot be tokenized yet") != std::string::npos) {
    WARN("this build cannot tokenize conversations yet (train/data/conversation_example): skipped");
    return;
  }
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("read as messages"));
  CHECK_THAT(r.out, Catch::Contains("sample at step 2:"));
  CHECK(read_bytes(save / "lora" / "chat_template.jinja") == read_bytes(chatml));
  const RunResult without = run(finetune, "--config " + quote(f.config) + " --data " + quote(f.dir / "chat.jsonl") +
                                              " --mode lora --steps 2 --warmup 0 --batch 2 --seq 64");
  CHECK(without.exit_code != 0);
  CHECK_THAT(without.err, Catch::Contains("--chat-template"));
}
