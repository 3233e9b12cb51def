// A Llama-family folder in Hugging Face's layout (config.json, model.safetensors, tokenizer.json) goes
// through the same programs as GPT-2: finetune with LoRA on text (encoded with the folder's tokenizer),
// generate with the adapter unmerged and merged, merge_lora, perplexity on text. A Llama model without a
// tokenizer is refused, naming --tokenizer.
#include <catch2/catch.hpp>

#include "core/safetensors.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "tests/program_runner.h"

using namespace lora;
using namespace lora::testing;

namespace {

// A random Llama (GQA, untied head) whose vocabulary fits the llama2-style tokenizer fixture (1004 ids),
// saved with the tokenizer beside it.
fs::path make_llama_folder() {
  const fs::path dir = scratch_dir() / "llama_model";
  if (fs::exists(dir / "model.safetensors")) return dir;
  const nlohmann::json config = {{"model_type", "llama"},    {"vocab_size", 1024},
                                 {"hidden_size", 64},        {"intermediate_size", 128},
                                 {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                                 {"num_key_value_heads", 2}, {"max_position_embeddings", 128},
                                 {"rms_norm_eps", 1e-5},     {"tie_word_embeddings", false},
                                 {"bos_token_id", 1},        {"eos_token_id", 2}};
  auto model = models::create_model({config, "test"}, 7);
  models::save_hf_checkpoint(*model, dir.string());
  const fs::path tokenizer = fs::path(LORA_TEST_DATA_DIR) / "tokenizers" / "llama2";
  fs::copy_file(tokenizer / "tokenizer.json", dir / "tokenizer.json");
  fs::copy_file(tokenizer / "tokenizer_config.json", dir / "tokenizer_config.json");
  return dir;
}

fs::path text_file() {
  const fs::path path = scratch_dir() / "llama_text.txt";
  std::string text;
  for (int i = 0; i < 60; ++i) text += "The quick brown fox jumps over the lazy dog, and the dog sleeps on. ";
  write_file(path, text);
  return path;
}

}  // namespace

TEST_CASE("a Llama folder with tokenizer.json fine-tunes with LoRA, generates, merges and gives perplexity",
          "[examples][llama]") {
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(generate, "generate");
  REQUIRE_PROGRAM(merge, "merge_lora");
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const fs::path model = make_llama_folder(), text = text_file(), save = scratch_dir() / "llama_run";
  RunResult r =
      run(finetune, "--weights " + quote(model) + " --data " + quote(text) +
                        " --mode lora --targets q,v,gate_proj --rank 4 --steps 6 --batch 2 --seq 32 --warmup 1"
                        " --lr 0.01 --eval-batches 1 --save " +
                        quote(save));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("tokenizer: ") && Catch::Contains("model: llama"));
  const fs::path adapter = save / "lora";
  REQUIRE(fs::exists(adapter / "adapter_model.safetensors"));

  // Greedy generation, unmerged and merged: the same tokens.
  const std::string gen = "--weights " + quote(model) + " --adapter " + quote(adapter) +
                          " --prompt 'The quick' --max-new-tokens 8 --temperature 0 --json";
  const RunResult unmerged = run(generate, gen), merged = run(generate, gen + " --merge");
  INFO(unmerged.err << merged.err);
  REQUIRE(unmerged.exit_code == 0);
  REQUIRE(merged.exit_code == 0);
  const auto a = last_json_line(unmerged.out), b = last_json_line(merged.out);
  CHECK(a["generated_ids"] == b["generated_ids"]);
  CHECK(a["prompt_ids"][0] == 1);  // the tokenizer's BOS, added as transformers' tokenizer(prompt) does

  // merge_lora writes a plain Llama that generates the same tokens without the adapter.
  const fs::path merged_dir = scratch_dir() / "llama_merged";
  r = run(merge, "--weights " + quote(model) + " --adapter " + quote(adapter) + " --out " + quote(merged_dir));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  fs::copy_file(model / "tokenizer.json", merged_dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  const RunResult plain = run(
      generate, "--weights " + quote(merged_dir) + " --prompt 'The quick' --max-new-tokens 8 --temperature 0 --json");
  REQUIRE(plain.exit_code == 0);
  CHECK(last_json_line(plain.out)["generated_ids"] == a["generated_ids"]);

  r = run(perplexity, "--weights " + quote(model) + " --data " + quote(text) + " --seq 32 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r.out)["perplexity"].get<double>() > 1.0);
}

TEST_CASE("a Llama model without a tokenizer is refused for text, naming --tokenizer", "[examples][llama]") {
  REQUIRE_PROGRAM(perplexity, "perplexity");
  const fs::path model = make_llama_folder();
  const fs::path bare = scratch_dir() / "llama_bare";
  fs::create_directories(bare);
  for (const char* f : {"config.json", "model.safetensors"}) {
    fs::copy_file(model / f, bare / f, fs::copy_options::overwrite_existing);
  }
  const RunResult r = run(perplexity, "--weights " + quote(bare) + " --data " + quote(text_file()));
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("no tokenizer") && Catch::Contains("--tokenizer"));
  // With --tokenizer it runs.
  const RunResult ok = run(perplexity, "--weights " + quote(bare) + " --data " + quote(text_file()) + " --seq 16 " +
                                           "--tokenizer " + quote(model / "tokenizer.json"));
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
}
