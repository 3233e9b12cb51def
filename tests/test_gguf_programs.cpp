// The GGUF path through the programs: export_gguf writes a model, finetune trains LoRA on the GGUF file and
// saves the adapter as PEFT and as GGUF, generate runs the GGUF with the adapter, export_gguf refuses bad flags.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/files.h"
#include "core/gguf.h"
#include "lora_source_dir.h"
#include "tests/program_runner.h"

using namespace lora;
using namespace lora::testing;

TEST_CASE("export_gguf -> finetune --weights x.gguf --save-gguf-adapter -> generate with the adapter",
          "[examples][gguf]") {
  REQUIRE_PROGRAM(exporter, "export_gguf");
  REQUIRE_PROGRAM(finetune, "finetune");
  REQUIRE_PROGRAM(generate, "generate");
  const fs::path dir = scratch_dir() / "gguf_programs";
  fs::create_directories(dir);
  const fs::path model = dir / "model-q8_0.gguf", save = dir / "run";
  RunResult r = run(exporter, "--config small-test --type q8_0 --out " + quote(model) + " --ollama-modelfile " +
                                  quote(dir / "Modelfile"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("q8_0") != std::string::npos);
  const std::string modelfile = read_file((dir / "Modelfile").string(), "Modelfile");
  CHECK(modelfile.find("FROM ./model-q8_0.gguf") != std::string::npos);
  CHECK(modelfile.find("PARAMETER stop \"<|endoftext|>\"") != std::string::npos);

  r = run(finetune, "--weights " + quote(model) + " --data " +
                        quote(std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt") +
                        " --mode lora --steps 2 --warmup 0 --batch 1 --seq 16 --save " + quote(save) +
                        " --save-gguf-adapter --no-preflight --report-json " + quote(dir / "report.json"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  // The frozen base is the file's own Q8_0 blocks (--base-dtype auto, the default for a GGUF file), the token
  // embedding (the tied head) included: no f32 copy of it.
  CHECK(r.err.find("GGUF base: 16 linear layers held compact from the file (16 q8_0") != std::string::npos);
  CHECK(r.err.find("held compact too: token_embd.weight as q8_0 (the tied output head too)") != std::string::npos);
  {
    // The step's memory, predicted on the meta device with the same compact tables, is what was measured.
    std::ifstream in(dir / "report.json");
    const auto m = nlohmann::json::parse(in)["modes"][0];
    for (const auto& [category, bytes] : m["peak_bytes"].items()) {
      INFO(category << ": predicted " << m["predicted_bytes"][category] << ", measured " << bytes);
      const double predicted = m["predicted_bytes"][category].get<double>(), measured = bytes.get<double>();
      CHECK(std::abs(predicted - measured) <= 0.01 * measured + 65536.0);
    }
  }
  CHECK(r.out.find("LoRA fine-tuning on a q8_0 base") != std::string::npos);
  const gguf::File adapter = gguf::File::open((save / "lora" / "adapter.gguf").string());
  CHECK(adapter.get_string("general.type") == "adapter");
  CHECK(adapter.find_tensor("blk.0.attn_qkv.weight.lora_a") != nullptr);

  r = run(generate, "--weights " + quote(model) + " --adapter " + quote(save / "lora") +
                        " --prompt Hello --max-new-tokens 3 --temperature 0 --json");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r.out)["generated_ids"].size() == 3);
  {
    // What the load cost: "model loaded in S s: resident A -> B MB (peak C MB)", the peak at least B.
    const size_t at = r.err.find("model loaded in ");
    REQUIRE(at != std::string::npos);
    double seconds = -1, before = -1, after = -1, peak = -1;
    REQUIRE(std::sscanf(r.err.c_str() + at, "model loaded in %lf s: resident %lf -> %lf MB (peak %lf MB)", &seconds,
                        &before, &after, &peak) == 4);
    CHECK(seconds >= 0);
    CHECK(before > 0);
    CHECK(peak >= after);
  }

  // A full fine-tune trains every weight: the quantized file is dequantized to f32, and it says so.
  r = run(finetune, "--weights " + quote(model) + " --data " +
                        quote(std::string(LORA_SOURCE_DIR) + "/data/tinyshakespeare.txt") +
                        " --mode full --steps 1 --warmup 0 --batch 1 --seq 16 --no-preflight");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("the GGUF file's quantized tensors are dequantized to f32") != std::string::npos);
  CHECK(r.err.find("GGUF base:") == std::string::npos);

  r = run(exporter, "--config small-test --type q5_1 --out " + quote(dir / "x.gguf"));
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("--type 'q5_1': expected f32, f16, bf16, q8_0 or q4_0") != std::string::npos);
  r = run(generate, "--weights " + quote(model) + " --config gpt2 --prompt Hi");
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("describes its model itself") != std::string::npos);
}
