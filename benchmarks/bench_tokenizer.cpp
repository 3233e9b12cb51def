// bench_tokenizer: GPT-2 tokenizer throughput (MB/s, tokens/s) on Tiny Shakespeare, cold and warm cache.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "models/tokenizer/pretokenizer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

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

template <class F>
double seconds(F&& f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void report(const char* what, size_t bytes, size_t tokens, double sec) {
  fmt::print("{:<28} {:8.2f} ms  {:8.2f} MB/s  {:10.0f} tokens/s\n", what, sec * 1e3, bytes / sec / 1e6,
             tokens / sec);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the GPT-2 tokenizer: encode a text file with a cold and a warm piece cache."};
  std::string path = default_text_path();
  int repeat = 5;
  app.add_option("--file", path, "UTF-8 text file to encode")->capture_default_str();
  app.add_option("--repeat", repeat, "Timed runs per measurement (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);

  try {
    const std::string text = read_file(path);
    std::optional<lora::tokenizer::GPT2Tokenizer> loaded;
    const double load = seconds([&] { loaded.emplace(lora::tokenizer::GPT2Tokenizer::load_default()); });
    const lora::tokenizer::GPT2Tokenizer& tokenizer = *loaded;
    fmt::print("file: {} ({} bytes)\nload: {:.1f} ms (encoder.json + vocab.bpe)\n", path, text.size(), load * 1e3);

    std::vector<int32_t> ids;
    std::vector<double> cold, warm, split, decode;
    for (int r = 0; r < repeat; ++r) {
      tokenizer.clear_cache();
      cold.push_back(seconds([&] { ids = tokenizer.encode(text); }));
    }
    const size_t cached = tokenizer.cache_size();
    for (int r = 0; r < repeat; ++r) warm.push_back(seconds([&] { ids = tokenizer.encode(text); }));

    // Where the warm time goes: the regex split alone, and decoding back.
    lora::tokenizer::PreTokenizer pretokenizer;
    std::vector<std::string_view> pieces;
    for (int r = 0; r < repeat; ++r) {
      pieces.clear();
      split.push_back(seconds([&] { pretokenizer.split(text, pieces); }));
    }
    std::string back;
    for (int r = 0; r < repeat; ++r) decode.push_back(seconds([&] { back = tokenizer.decode(ids); }));
    LORA_CHECK(back == text, "decode(encode(text)) differs from the text of '{}'", path);

    fmt::print("tokens: {} ({:.2f} bytes/token), pieces: {}, cache after one encode: {} entries, regex JIT: {}\n",
               ids.size(), double(text.size()) / double(ids.size()), pieces.size(), cached,
               pretokenizer.jit() ? "yes" : "no");
    fmt::print("median of {} runs:\n", repeat);
    report("encode, cold cache", text.size(), ids.size(), median(cold));
    report("encode, warm cache", text.size(), ids.size(), median(warm));
    report("regex split only", text.size(), ids.size(), median(split));
    report("decode", text.size(), ids.size(), median(decode));
    return 0;
  } catch (const lora::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
