// bench_data: how fast fine-tuning data is read and tokenized (load_examples): a synthetic JSONL file of
// chat conversations (messages: system, user, assistant, about 300 GPT-2 tokens each), written once to a
// temporary file, then loaded --repeat times; prints examples/s and tokens/s (median). The text is random
// words over a vocabulary of a few thousand made-up words, so the tokenizer's piece cache warms up as on real
// data of a narrow domain. Also times the same records as prompt/completion (no chat template) to show what
// the template costs.
#include <fmt/format.h>
#include <omp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/stopwatch.h"
#include "lora_source_dir.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "train/data/load_examples.h"

namespace fs = std::filesystem;
using lora::median;
using lora::seconds_of;
using lora::train::DataFormat;

namespace {

// A vocabulary of made-up words from syllables, and sentences drawn from it.
class Words {
 public:
  explicit Words(uint64_t seed) : rng_(seed) {
    const char* syllables[] = {"ka", "lo",  "mi", "ten", "ra", "vis", "or", "pe",  "lun", "sa",  "dre", "to",
                               "in", "gar", "el", "fo",  "u",  "ber", "ci", "nam", "the", "and", "is",  "of"};
    std::uniform_int_distribution<int> count(1, 3), pick(0, 23);
    for (int i = 0; i < 4000; ++i) {
      std::string w;
      for (int s = count(rng_); s > 0; --s) w += syllables[pick(rng_)];
      words_.push_back(w);
    }
  }
  // About `n` words, with capitals, commas and full stops.
  std::string text(int n) {
    std::string out;
    std::uniform_int_distribution<size_t> pick(0, words_.size() - 1);
    std::uniform_int_distribution<int> punct(0, 11);
    bool capital = true;
    for (int i = 0; i < n; ++i) {
      std::string w = words_[pick(rng_)];
      if (capital) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
      out += (i ? " " : "") + w;
      const int p = punct(rng_);
      capital = p == 0;
      if (p == 0) out += ".";
      if (p == 1) out += ",";
    }
    return out + ".";
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::string> words_;
};

void report(const char* what, const std::string& path, const lora::tokenizer::Tokenizer& tokenizer,
            const lora::train::ExampleOptions& options, int repeat) {
  std::vector<double> times;
  size_t examples = 0, tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    lora::train::LoadedExamples loaded;
    times.push_back(seconds_of([&] { loaded = lora::train::load_examples(path, tokenizer, options); }));
    examples = loaded.examples.size();
    tokens = 0;
    for (const auto& e : loaded.examples) tokens += e.ids.size();
  }
  const double s = median(times);
  fmt::print("{:<34} {:7.3f} s  {:9.0f} examples/s  {:11.0f} tokens/s  ({} examples, {:.0f} tokens each)\n", what, s,
             double(examples) / s, double(tokens) / s, examples, double(tokens) / double(examples));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark reading and tokenizing fine-tuning data (load_examples) on synthetic chat JSONL."};
  int examples = 50000, repeat = 3, threads = 0;
  std::string template_path = (fs::path(LORA_SOURCE_DIR) / "data" / "chat_templates" / "chatml.jinja").string();
  app.add_option("--examples", examples, "Conversations in the file")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000000));
  app.add_option("--repeat", repeat, "Timed loads (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--threads", threads, "OpenMP threads (0: OpenMP's default)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--chat-template", template_path, "The chat template of the messages format")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    if (threads > 0) omp_set_num_threads(threads);
    const auto tokenizer = lora::tokenizer::GPT2Tokenizer::load_default();
    const fs::path dir = fs::temp_directory_path() / fmt::format("bench_data_{}", ::getpid());
    fs::create_directories(dir);
    const std::string chat_path = (dir / "chat.jsonl").string(), pc_path = (dir / "pc.jsonl").string();
    {
      Words words(1);
      std::ofstream chat(chat_path, std::ios::binary), pc(pc_path, std::ios::binary);
      for (int i = 0; i < examples; ++i) {
        const std::string system = "You are a helpful assistant.", user = words.text(45), reply = words.text(85);
        chat << nlohmann::json{{"messages",
                                {{{"role", "system"}, {"content", system}},
                                 {{"role", "user"}, {"content", user}},
                                 {{"role", "assistant"}, {"content", reply}}}}}
                    .dump()
             << '\n';
        pc << nlohmann::json{{"prompt", system + "\n" + user + "\n"}, {"completion", reply}}.dump() << '\n';
      }
    }
    fmt::print("{} conversations ({:.1f} MB of JSONL), {} OpenMP threads, median of {} loads\n", examples,
               double(fs::file_size(chat_path)) / 1e6, omp_get_max_threads(), repeat);
    report("prompt_completion (no template)", pc_path, tokenizer, {.format = DataFormat::PromptCompletion}, repeat);
    std::optional<lora::chat::ChatTemplate> chat_template;
    if (fs::exists(template_path)) {
      chat_template.emplace(lora::chat::ChatTemplate::from_file(template_path));
      report("messages (chat template)", chat_path, tokenizer,
             {.format = DataFormat::Messages, .chat_template = &*chat_template}, repeat);
    } else {
      fmt::print("messages: no chat template at '{}' (--chat-template)\n", template_path);
    }
    fs::remove_all(dir);
    return 0;
  } catch (const lora::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
