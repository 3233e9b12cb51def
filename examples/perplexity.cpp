// perplexity: mean next-token loss and perplexity of a causal LM on a text file or an llm.c .bin token file.
//
//   perplexity --weights models/gpt2 --data data/tinyshakespeare.txt
//   perplexity --weights models/gpt2 --data tiny_shakespeare_val.bin --seq 512 --batch 8 --json
//
// The N tokens are cut into W = floor((N - 1) / T) windows: window k reads tokens kT .. kT+T-1 and predicts
// kT+1 .. kT+T. The mean loss is over all W*T predicted tokens; perplexity = exp(mean loss).
// With --json the last line of stdout is {"mean_loss", "perplexity", "tokens", "windows"}.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "tools/model_tokenizer.h"
#include "train/token_file.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Perplexity of a causal LM on a text file or an llm.c .bin token file (non-overlapping windows)."};
  std::string weights, config_name, tokenizer_path, data_path, base_dtype = "auto";
  int64_t seq = 0, batch = 4, max_windows = 0;
  bool json = false;
  app.add_option("--weights", weights,
                 "Hugging Face model folder (config.json + model.safetensors) or a .safetensors file");
  app.add_option("--config", config_name,
                 "A config.json path or a preset (gpt2, ..., tiny, smollm2-135m, llama-tiny): for a bare .safetensors "
                 "file, or the random model");
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer.json or a folder with tokenizer files (default: the model folder's, or GPT-2's for GPT-2)");
  app.add_option("--data", data_path, "Text file (encoded with the tokenizer) or llm.c .bin token file")->required();
  app.add_option("--seq", seq, "Window length T (default: min(1024, the model's context))")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "Windows per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-windows", max_windows, "Evaluate at most this many windows (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--base-dtype", base_dtype,
                 "Hold the linear layers' weights as f32, bf16, q8_0 (or int8), q4_0 or nf4 (quantized on load), or "
                 "auto: a GGUF file's own Q8_0/Q4_0 blocks as they are (K-quants to the nearest of the two), f32 for "
                 "other weights")
      ->capture_default_str();
  app.add_flag("--json", json, "End with one JSON line: mean_loss, perplexity, tokens, windows");
  CLI11_PARSE(app, argc, argv);

  try {
    if (weights.empty()) {
      std::cerr << "notice: no --weights given: using a randomly initialised '"
                << (config_name.empty() ? "gpt2" : config_name)
                << "' model, so expect a loss near ln(vocabulary size)\n";
    }
    const lora::models::BaseDtype base = lora::models::BaseDtype::parse(base_dtype);
    const lora::QuantFormat base_format = lora::models::resolved_base_format(base, weights, config_name);
    std::shared_ptr<lora::models::CausalLM> model = lora::models::load_model(weights, config_name, 0, base);
    if (base_format != lora::QuantFormat::F32) {
      model->freeze();  // evaluation: nothing trains
      std::cerr << fmt::format("base weights as {}: {}\n", lora::quant_format_name(base_format),
                               lora::models::quantize_base(*model, base_format).str());
    }
    const int64_t context = model->dims().context_length, vocab = model->dims().vocab_size;
    // An llm.c token file (by its magic; a .bin without it is refused); anything else is UTF-8 text for the
    // model's tokenizer.
    std::vector<int32_t> tokens;
    if (lora::train::has_llmc_magic(data_path) || data_path.ends_with(".bin")) {
      tokens = lora::train::read_llmc_tokens(data_path);
    } else {
      const auto tokenizer = lora::tools::tokenizer_for_model(*model, weights, tokenizer_path);
      const std::string text = lora::read_file(data_path, "--data");
      try {
        tokens = tokenizer->encode(text, {.add_special_tokens = false, .parse_special_tokens = false});
      } catch (const lora::Error& e) {
        LORA_FAIL("--data '{}': {}", data_path, e.what());
      }
    }
    const int64_t N = static_cast<int64_t>(tokens.size());
    const int64_t T = seq > 0 ? seq : std::min<int64_t>(1024, context);
    LORA_CHECK(T <= context, "--seq {}: longer than the model's context of {} tokens", T, context);

    for (int64_t i = 0; i < N; ++i) {
      LORA_CHECK(tokens[i] < vocab, "--data '{}': token {} at position {} is outside the model's vocabulary of {}",
                 data_path, tokens[i], i, vocab);
    }
    int64_t windows = std::max<int64_t>(0, (N - 1) / T);
    LORA_CHECK(windows > 0, "--data '{}': {} tokens, fewer than the {} needed for one window of --seq {}", data_path, N,
               T + 1, T);
    if (max_windows > 0) windows = std::min(windows, max_windows);

    lora::NoGradGuard no_grad;
    model->eval();
    double loss_sum = 0.0;  // sum over windows of each window's mean loss (all windows hold T predictions)
    bool progress_shown = false;
    const auto start = Clock::now();
    for (int64_t w0 = 0; w0 < windows; w0 += batch) {
      const int64_t B = std::min(batch, windows - w0);
      std::vector<int32_t> ids(static_cast<size_t>(B * T)), targets(ids.size());
      for (int64_t b = 0; b < B; ++b) {
        const auto first = tokens.begin() + (w0 + b) * T;
        std::copy(first, first + T, ids.begin() + b * T);
        std::copy(first + 1, first + T + 1, targets.begin() + b * T);
      }
      const lora::Tensor loss =
          model->loss(lora::Tensor::from_vector(ids, {B, T}), lora::Tensor::from_vector(targets, {B, T}));
      loss_sum += loss.item() * static_cast<double>(B);  // the batch's mean over B*T tokens, times B windows

      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const int64_t done = w0 + B;
      if (elapsed > 1.0 || progress_shown) {
        const double tokens_per_s = static_cast<double>(done * T) / elapsed;
        fmt::print(stderr, "\rwindows {}/{}  {:.0f} tokens/s  ETA {:.0f} s   ", done, windows, tokens_per_s,
                   static_cast<double>((windows - done) * T) / tokens_per_s);
        progress_shown = true;
      }
    }
    if (progress_shown) fmt::print(stderr, "\n");

    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double mean_loss = loss_sum / static_cast<double>(windows);
    const double perplexity = std::exp(mean_loss);
    const int64_t predicted = windows * T;
    fmt::print("data:       {} ({} tokens)\nwindows:    {} of {} tokens ({} predicted tokens, {:.1f} s)\n", data_path,
               N, windows, T, predicted, seconds);
    fmt::print("mean loss:  {:.6f}\nperplexity: {:.4f}\n", mean_loss, perplexity);
    if (json) {
      const nlohmann::json out = {
          {"mean_loss", mean_loss}, {"perplexity", perplexity}, {"tokens", predicted}, {"windows", windows}};
      fmt::print("{}\n", out.dump());
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
