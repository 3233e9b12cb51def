// bench_tokenizer: tokenizer throughput (MB/s, tokens/s) on Tiny Shakespeare, cold and warm piece cache:
// GPT2Tokenizer, the same GPT-2 vocabulary as a tokenizer.json (HFTokenizer), and each tokenizer.json family.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/stopwatch.h"
#include "lora_source_dir.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/pretokenizer.h"

namespace fs = std::filesystem;
using lora::median;
using lora::seconds_of;
using lora::tokenizer::GPT2Tokenizer;
using lora::tokenizer::HFTokenizer;
using lora::tokenizer::Tokenizer;

namespace {

// The project's copy of Tiny Shakespeare when there is one, else the shared data folder.
std::string default_text_path() {
  const fs::path project = fs::path(LORA_SOURCE_DIR) / "data" / "tinyshakespeare.txt";
  if (fs::exists(project)) return project.string();
  return (fs::path(LORA_SOURCE_DIR) / ".." / "shared" / "data" / "tinyshakespeare.txt").lexically_normal().string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "cannot open '{}'", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void report(const char* what, size_t bytes, size_t tokens, double sec) {
  fmt::print("{:<28} {:8.2f} ms  {:8.2f} MB/s  {:10.0f} tokens/s\n", what, sec * 1e3, bytes / sec / 1e6, tokens / sec);
}

// One line per tokenizer: encode with a cold cache, with a warm one, and decode.
void bench_line(const std::string& name, const Tokenizer& tok, const std::function<void()>& clear_cache, double load_s,
                const std::string& text, int repeat) {
  std::vector<int32_t> ids;
  std::vector<double> cold, warm, decode;
  for (int r = 0; r < repeat; ++r) {
    clear_cache();
    cold.push_back(seconds_of([&] { ids = tok.encode(text, {}); }));
  }
  for (int r = 0; r < repeat; ++r) warm.push_back(seconds_of([&] { ids = tok.encode(text, {}); }));
  std::string back;
  for (int r = 0; r < repeat; ++r) decode.push_back(seconds_of([&] { back = tok.decode(ids, {}); }));
  LORA_CHECK(back == text, "{}: decode(encode(text)) differs from the text", name);
  const double mb = static_cast<double>(text.size()) / 1e6;
  fmt::print("{:<34} {:7} {:7.1f} {:9.2f} {:9.2f} {:9.2f} {:9.0f}\n", name, tok.vocab_size(), load_s * 1e3,
             mb / median(cold), mb / median(warm), mb / median(decode), static_cast<double>(ids.size()) / median(warm));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the tokenizers: encode a text file with a cold and a warm piece cache, and decode."};
  std::string path = default_text_path();
  std::vector<std::string> extra;
  int repeat = 5;
  app.add_option("--file", path, "UTF-8 text file to encode")->capture_default_str();
  app.add_option("--repeat", repeat, "Timed runs per measurement (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--tokenizer", extra, "Also benchmark this tokenizer.json or model folder (repeatable)");
  CLI11_PARSE(app, argc, argv);

  try {
    const std::string text = read_file(path);
    std::optional<GPT2Tokenizer> loaded;
    const double load = seconds_of([&] { loaded.emplace(GPT2Tokenizer::load_default()); });
    const GPT2Tokenizer& tokenizer = *loaded;
    fmt::print("file: {} ({} bytes)\nload: {:.1f} ms (encoder.json + vocab.bpe)\n", path, text.size(), load * 1e3);

    std::vector<int32_t> ids;
    std::vector<double> cold, warm, split, decode;
    for (int r = 0; r < repeat; ++r) {
      tokenizer.clear_cache();
      cold.push_back(seconds_of([&] { ids = tokenizer.encode(text); }));
    }
    const size_t cached = tokenizer.cache_size();
    for (int r = 0; r < repeat; ++r) warm.push_back(seconds_of([&] { ids = tokenizer.encode(text); }));

    // Where the warm time goes: the regex split alone, and decoding back.
    lora::tokenizer::PreTokenizer pretokenizer;
    std::vector<std::string_view> pieces;
    for (int r = 0; r < repeat; ++r) {
      pieces.clear();
      split.push_back(seconds_of([&] { pretokenizer.split(text, pieces); }));
    }
    std::string back;
    for (int r = 0; r < repeat; ++r) decode.push_back(seconds_of([&] { back = tokenizer.decode(ids); }));
    LORA_CHECK(back == text, "decode(encode(text)) differs from the text of '{}'", path);

    fmt::print("tokens: {} ({:.2f} bytes/token), pieces: {}, cache after one encode: {} entries, regex JIT: {}\n",
               ids.size(), double(text.size()) / double(ids.size()), pieces.size(), cached,
               pretokenizer.jit() ? "yes" : "no");
    fmt::print("median of {} runs:\n", repeat);
    report("encode, cold cache", text.size(), ids.size(), median(cold));
    report("encode, warm cache", text.size(), ids.size(), median(warm));
    report("regex split only", text.size(), ids.size(), median(split));
    report("decode", text.size(), ids.size(), median(decode));

    // Every tokenizer through the Tokenizer interface (special tokens parsed, as tokenizers does).
    fmt::print(
        "\nthrough the Tokenizer interface (MB/s, median of {} runs; the tokenizer.json fixtures have small\n"
        "vocabularies, so they make more, shorter tokens than the real models):\n",
        repeat);
    fmt::print("{:<34} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}\n", "tokenizer", "vocab", "load ms", "cold", "warm",
               "decode", "tokens/s");
    bench_line(
        "GPT2Tokenizer (encoder.json)", tokenizer, [&] { tokenizer.clear_cache(); }, load, text, repeat);
    const fs::path gpt2 = GPT2Tokenizer::default_dir();
    std::string gpt2_json;
    const double convert = seconds_of(
        [&] { gpt2_json = lora::tokenizer::gpt2_tokenizer_json(gpt2 / "encoder.json", gpt2 / "vocab.bpe"); });
    std::optional<HFTokenizer> hf;
    const double hf_load = seconds_of([&] { hf.emplace(HFTokenizer::from_json(gpt2_json, "GPT-2 tokenizer.json")); });
    bench_line(
        "tokenizer.json GPT-2", *hf, [&] { hf->clear_cache(); }, convert + hf_load, text, repeat);
    std::vector<std::pair<std::string, fs::path>> others;
    const fs::path fixtures = fs::path(LORA_SOURCE_DIR) / "tests" / "fixtures" / "tokenizers";
    for (const char* family : {"llama3", "qwen2", "llama2", "mistral"})
      if (fs::exists(fixtures / family)) others.emplace_back(std::string("fixture ") + family, fixtures / family);
    for (const std::string& p : extra) others.emplace_back(p, p);
    for (const auto& [name, where] : others) {
      std::optional<HFTokenizer> t;
      const fs::path file = fs::is_directory(where) ? where / "tokenizer.json" : where;
      const double t_load = seconds_of([&] { t.emplace(HFTokenizer::from_file(file)); });
      bench_line(
          name, *t, [&] { t->clear_cache(); }, t_load, text, repeat);
    }
    return 0;
  } catch (const lora::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
