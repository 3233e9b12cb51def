// The strict JSON reader (core/json.h, core/json_object_reader.h), and that every kind of JSON file the
// framework reads goes through it: config.json, adapter_config.json, tokenizer files, generation_config.json,
// checkpoints' state.json, request bodies and data records all refuse a key given twice.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/json.h"
#include "core/json_object_reader.h"
#include "models/config_reader.h"
#include "models/gpt2/model.h"
#include "models/lora.h"
#include "models/stop_tokens.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "nn/lora/adapter.h"
#include "optim/adam.h"
#include "serve/api_request.h"
#include "train/checkpoint.h"

using namespace lora;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("lora_test_json_" + std::to_string(getpid()));
  fs::create_directories(dir);
  return dir / name;
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("strict JSON: duplicate keys refused at any depth, naming the key and where", "[json]") {
  CHECK_THROWS_WITH(parse_json(R"({"a": 1, "a": 2})", "doc"),
                    Contains("doc: key 'a' appears twice in the top-level object"));
  CHECK_THROWS_WITH(parse_json(R"({"x": {"y": [{"z": 1, "z": 1}]}})", "doc"),
                    Contains("key 'z' appears twice in the object at 'x.y'"));
  CHECK_THROWS_WITH(parse_json_ordered(R"({"b": 1, "a": 2, "b": 3})", "doc"), Contains("key 'b' appears twice"));
  // The same key in sibling objects is no duplicate; nor is a key equal to a value.
  CHECK(parse_json(R"({"a": {"k": 1}, "b": {"k": 2}, "c": "a"})", "doc")["b"]["k"] == 2);
  // Objects past the small-list threshold switch to a hash set: a duplicate far in is still found.
  std::string big = "{";
  for (int i = 0; i < 5000; ++i) big += fmt::format("\"k{}\": {}, ", i, i);
  CHECK(parse_json(big + "\"end\": 0}", "doc").size() == 5001);
  CHECK_THROWS_WITH(parse_json(big + "\"k4321\": 0}", "doc"), Contains("key 'k4321' appears twice"));
}

TEST_CASE("strict JSON: errors give the line and column; depth, overflow and bad UTF-8 refused", "[json]") {
  CHECK_THROWS_WITH(parse_json("{\"a\": 1,\n  \"b\": }", "cfg"), Contains("cfg: not valid JSON at line 2, column"));
  CHECK_THROWS_WITH(parse_json("{\"a\": ]", "cfg"), Contains("cfg: not valid JSON at column 7"));
  CHECK_THROWS_WITH(parse_json("{} x", "cfg"), Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse_json("", "cfg"), Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse_json(R"({"n": 1e999})", "cfg"), Contains("cfg") && Contains("overflow"));
  CHECK_THROWS_WITH(parse_json("{\"s\": \"\xff\"}", "cfg"), Contains("not valid JSON") && Contains("\\xFF"));
  const std::string deep = std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']');
  CHECK_THROWS_WITH(parse_json(deep, "cfg"), Contains("nested deeper than"));
  const std::string ok = std::string(kMaxJsonDepth - 1, '[') + std::string(kMaxJsonDepth - 1, ']');
  CHECK_NOTHROW(parse_json(ok, "cfg"));
  // The reason quoted from the document is bounded: a megabyte of text does not end up in the message.
  const std::string long_string = "{\"a\": \"" + std::string(1 << 20, 'x');
  try {
    parse_json(long_string, "cfg");
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).size() < 400);
  }
  // Files: missing, a folder, over the size limit.
  CHECK_THROWS_WITH(read_json_file("/nonexistent/x.json", "config"),
                    Contains("config '/nonexistent/x.json' does not exist"));
  CHECK_THROWS_WITH(read_json_file(fs::temp_directory_path().string(), "config"), Contains("is a folder"));
  write(scratch("small.json"), "{\"a\": 1}");
  CHECK_THROWS_WITH(read_json_file(scratch("small.json").string(), "config", 4), Contains("more than the 4"));
  CHECK(read_json_file(scratch("small.json").string(), "config")["a"] == 1);
}

TEST_CASE("JsonObjectReader: typed reads, ranges, ignored fields, and every other field refused", "[json]") {
  const std::set<std::string> ignored = {"note"};
  JsonObjectReader r(
      parse_json(R"({"n": 2048.0, "x": 0.5, "b": true, "s": "hi", "note": 1, "extra": 2, "gone": null})", "doc"),
      "thing 'doc'", &ignored);
  CHECK(r.integer("n", 0, 1, 4096) == 2048);  // an integral float is an integer
  CHECK(r.number("x", 0, 0, 1) == 0.5);
  CHECK(r.boolean("b", false));
  CHECK(r.string("s", "") == "hi");
  CHECK(r.integer("absent", 7, 0, 10) == 7);
  CHECK_THROWS_WITH(r.integer("x", 0, 0, 10), Contains("thing 'doc': 'x' must be an integer"));
  CHECK_THROWS_WITH(r.integer("n", 0, 0, 10), Contains("'n' = 2048.0 is outside [0, 10]"));
  CHECK_THROWS_WITH(r.boolean("s", false), Contains("'s' must be true or false"));
  CHECK_THROWS_WITH(r.required_integer("missing", 0, 1), Contains("'missing' is missing"));
  // A null field is a field: unknown ones are refused like any other (a known one reads as absent).
  CHECK_THROWS_WITH(r.finish(), Contains("thing 'doc': unknown fields 'extra', 'gone'") && !Contains("note"));
  r.mark_read("extra");
  CHECK(r.integer("gone", 3, 0, 10) == 3);
  CHECK_NOTHROW(r.finish());
  CHECK_THROWS_WITH(JsonObjectReader(parse_json("[1]", "doc"), "thing"),
                    Contains("expected a JSON object, got a list"));
}

TEST_CASE("every JSON file the framework reads refuses a duplicate key", "[json]") {
  // config.json: two hidden sizes would build one of two models.
  const fs::path config = scratch("config.json");
  write(config, R"({"model_type": "gpt2", "n_embd": 64, "n_embd": 128})");
  CHECK_THROWS_WITH(models::ConfigReader::from_file(config.string()),
                    Contains("config '" + config.string() + "'") && Contains("key 'n_embd' appears twice"));

  // adapter_config.json: two ranks.
  gpt2::GPT2LMHeadModel model(gpt2::GPT2Config::preset("tiny"), 3);
  nn::LoRAConfig lora;
  lora.options.rank = 4;
  models::apply_lora(model, lora);
  nn::AdapterState state = models::export_adapter(model, "tiny");
  {
    gpt2::GPT2LMHeadModel fresh(gpt2::GPT2Config::preset("tiny"));
    CHECK_NOTHROW(nn::import_adapter(fresh, state));
  }
  nn::AdapterState doubled = state;
  doubled.config_json.insert(doubled.config_json.find('{') + 1, "\"r\": 8, ");
  {
    gpt2::GPT2LMHeadModel fresh(gpt2::GPT2Config::preset("tiny"));
    CHECK_THROWS_WITH(nn::import_adapter(fresh, doubled),
                      Contains("adapter_config.json") && Contains("'r' appears twice"));
  }
  // ... and a field it does not know, refused by the object reader.
  nn::AdapterState unknown = state;
  unknown.config_json.insert(unknown.config_json.find('{') + 1, "\"lora_magic\": 1, ");
  {
    gpt2::GPT2LMHeadModel fresh(gpt2::GPT2Config::preset("tiny"));
    CHECK_THROWS_WITH(nn::import_adapter(fresh, unknown), Contains("unknown field 'lora_magic'"));
  }

  // generation_config.json
  CHECK_THROWS_WITH(models::read_generation_eos(R"({"eos_token_id": 1, "eos_token_id": 2})", "generation_config", 10),
                    Contains("'eos_token_id' appears twice"));

  // tokenizer.json: two models.
  CHECK_THROWS_WITH(tokenizer::HFTokenizer::from_json(R"({"model": {"type": "BPE"}, "model": null})", "tok.json"),
                    Contains("tok.json") && Contains("'model' appears twice"));

  // Request bodies: a 400 naming the key.
  try {
    serve::parse_completion_request(R"({"model": "a", "prompt": "x", "model": "b"})", {});
    FAIL("accepted");
  } catch (const serve::ApiError& e) {
    CHECK(e.status == 400);
    CHECK_THAT(e.what(), Contains("'model' appears twice"));
  }
  try {
    serve::parse_chat_request(R"({"model": "a", "messages": [{"role": "user", "content": "x", "role": "system"}]})",
                              {});
    FAIL("accepted");
  } catch (const serve::ApiError& e) {
    CHECK(e.status == 400);
    CHECK_THAT(e.what(), Contains("'role' appears twice"));
  }
}

TEST_CASE("a checkpoint's state.json is read strictly: a field it does not know, or twice, is refused", "[json]") {
  gpt2::GPT2LMHeadModel model(gpt2::GPT2Config::preset("tiny"), 5);
  std::vector<std::string> names;
  for (const auto& [name, p] : model.named_parameters(true)) names.push_back(name);
  optim::AdamW optimizer(model.parameters(true), {}, names);
  train::RunIdentity identity{{{"mode", "full"}}, model.hf_config(), train::RunIdentity::fingerprint(model), {}};
  train::TrainingProgress progress;
  progress.step = 3;
  progress.data = {{"row", 0}};
  const fs::path dir = scratch("checkpoints");
  fs::remove_all(dir);
  const std::string path = train::save_training_checkpoint(dir.string(), model, optimizer, identity, progress);
  CHECK(train::load_training_checkpoint(path, model, optimizer, identity).step == 3);

  const fs::path state = fs::path(path) / "state.json";
  std::ifstream in(state);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  in.close();
  auto damaged = [&](const std::string& insert) {
    std::string text = good;
    text.insert(text.find('{') + 1, insert);
    write(state, text);
  };
  damaged("\"learning_rate_schedule\": \"cosine\", ");
  CHECK_THROWS_WITH(train::load_training_checkpoint(path, model, optimizer, identity),
                    Contains("state.json") && Contains("unknown field 'learning_rate_schedule'"));
  damaged("\"step\": 99, ");
  CHECK_THROWS_WITH(train::load_training_checkpoint(path, model, optimizer, identity),
                    Contains("'step' appears twice"));
  damaged("\"version\": \"2\", ");
  CHECK_THROWS(train::load_training_checkpoint(path, model, optimizer, identity));
  write(state, good);
  CHECK(train::load_training_checkpoint(path, model, optimizer, identity).step == 3);
}
