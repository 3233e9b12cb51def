// merge_lora: fold a LoRA adapter into its base model and write a plain model (W' = W + s B A) of the same
// architecture, which generate, perplexity and Hugging Face transformers load like any other checkpoint,
// and which runs at exactly the base model's speed (no adapter branch left).
//
//   merge_lora --weights models/gpt2 --adapter out/lora --out models/gpt2-merged          # folder
//   merge_lora --weights gpt2.safetensors --config gpt2 --adapter out/lora --out merged.safetensors
//
// A folder --out gets config.json + model.safetensors; a --out ending in .safetensors gets that file and a
// config.json beside it (an existing config.json of the same shape is kept, one of another shape refused).
// Before writing, the program checks that the merged model computes what the base model with the adapter
// does, on a few tokens.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"
#include "core/safetensors.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"
#include "tools/model_probe.h"
#include "tools/train_report.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

// "q, v" for slices of a fused q,k,v projection [3C, C]; "rows [a, b)" otherwise; "all rows" when whole.
std::string slice_names(const nn::LoRALinear& layer) {
  const auto& slices = layer.slices();
  if (slices.size() == 1 && slices[0].size == layer.out_features()) return "all rows";
  const bool fused_qkv = layer.out_features() == 3 * layer.in_features() && slices[0].size == layer.in_features();
  std::string s;
  for (const auto& sl : slices) {
    s += s.empty() ? "" : ", ";
    s += fused_qkv ? std::string(1, "qkv"[sl.offset / sl.size])
                   : fmt::format("rows [{}, {})", sl.offset, sl.offset + sl.size);
  }
  return s;
}

double frobenius(const Tensor& t) {
  double sum = 0.0;
  for (float v : t.to_vector<float>()) sum += double(v) * double(v);
  return std::sqrt(sum);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

// The same model: both configs build a model with the same config.json (which normalises defaults).
bool same_model(const models::ModelConfig& a, const models::ModelConfig& b) {
  return models::create_model(a)->hf_config() == models::create_model(b)->hf_config();
}

bool same_path(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::exists(a) && fs::exists(b) && fs::equivalent(a, b, ec);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Merge a LoRA adapter into its base model and write a plain checkpoint of the same architecture (Hugging Face "
      "layout)."};
  std::string weights, config_name, adapter, out;
  app.add_option("--weights", weights,
                 "Base model: Hugging Face folder (config.json + model.safetensors or shards) or a .safetensors file")
      ->required();
  app.add_option("--config", config_name,
                 "A config.json path or a preset (gpt2, ..., tiny, smollm2-135m, llama-tiny) for a bare .safetensors "
                 "file without a config.json beside it");
  app.add_option("--adapter", adapter,
                 "PEFT adapter folder (adapter_config.json + adapter_model.safetensors), e.g. finetune's SAVE/lora")
      ->required();
  app.add_option("--out", out, "Output folder (gets config.json + model.safetensors), or a path ending in .safetensors")
      ->required();
  CLI11_PARSE(app, argc, argv);

  try {
    LORA_CHECK(
        is_directory(adapter),
        "--adapter '{}': no such folder (expected a PEFT adapter folder with "
        "adapter_config.json and adapter_model.safetensors, as finetune --mode lora --save DIR writes into DIR/lora)",
        adapter);
    const bool to_file = out.ends_with(".safetensors");
    const fs::path out_weights = to_file ? fs::path(out) : fs::path(out) / "model.safetensors";
    LORA_CHECK(!same_path(out_weights, weights) && !same_path(out, weights) &&
                   !(is_directory(weights) && same_path(out_weights, fs::path(weights) / "model.safetensors")),
               "--out '{}' would overwrite the base model '{}': choose another path", out, weights);

    // A .safetensors --out beside a config.json: keep it when it describes this model, refuse otherwise
    // (it belongs to another model in that folder).
    const fs::path beside =
        out_weights.parent_path().empty() ? fs::path("config.json") : out_weights.parent_path() / "config.json";
    const bool write_config = !to_file || !path_exists(beside.string());
    if (!write_config) {
      const models::ModelConfig existing = models::read_config_arg(beside.string());
      const models::ModelConfig config = models::resolve_config(weights, config_name);
      LORA_CHECK(
          same_model(existing, config),
          "--out '{}': the config.json beside it describes another model, not this one; write into another folder",
          out);
    }

    // The base model, and what it computes on a few tokens.
    auto model = models::load_model(weights, config_name);
    model->eval();
    fmt::print("base: {} ({}, {} layers, hidden {}, {} parameters)\n", weights, model->model_type(),
               model->dims().n_layer, model->dims().hidden, model->num_parameters());
    const std::vector<float> base_logits = tools::probe_logits(*model);

    // The adapter, unmerged: the reference the merged model must match.
    nn::load_adapter(*model, adapter);
    model->eval();
    const auto layers = nn::lora_layers(*model);
    const auto& first = *layers.front().second;
    fmt::print("adapter: {}: {} adapted layers, rank {} per slice, alpha {}, scale {} ({} adapter parameters)\n",
               adapter, layers.size(), first.rank(), first.options().alpha, first.scaling(),
               model->num_parameters(true));
    const std::vector<float> adapter_logits = tools::probe_logits(*model);

    // Merge: W += s B A in every adapted layer (one at a time, so one copy of a weight is held at most);
    // report how far each weight moved (Frobenius norms).
    fmt::print("\n{:<34} {:<10} {:>12} {:>14}\n", "layer", "slices", "|s B A|", "|s B A| / |W|");
    bool all_zero = true;
    for (const auto& [path, layer] : layers) {
      const Tensor before = layer->base_layer->weight.clone();
      layer->merge();
      const double w = frobenius(before), delta = frobenius(layer->base_layer->weight - before);
      all_zero = all_zero && delta == 0.0;
      fmt::print("{:<34} {:<10} {:>12.4e} {:>14.4e}\n", path, slice_names(*layer), delta, w > 0 ? delta / w : 0.0);
    }
    if (all_zero) {
      fmt::print(
          stderr,
          "notice: the adapter's B matrices are zero (an untrained adapter?): the merged model equals the base\n");
    }

    const int64_t unwrapped = static_cast<int64_t>(nn::lora_layers(*model).size());
    nn::remove_lora(*model, /*keep_merged=*/true);
    LORA_CHECK(nn::lora_layers(*model).empty(), "internal: LoRA layers remain after unwrapping");

    // The merged, plain model must compute what base + adapter computed (up to float rounding).
    const std::vector<float> merged_logits = tools::probe_logits(*model);
    double scale = 0.0;
    for (float v : adapter_logits) scale = std::max(scale, double(std::abs(v)));
    const double diff = max_abs_diff(merged_logits, adapter_logits), moved = max_abs_diff(adapter_logits, base_logits);
    LORA_CHECK(diff <= 1e-3 * (1.0 + scale),
               "merged model's logits differ from the adapter's by {:.3e} (max |logit| {:.3e})", diff, scale);
    fmt::print("\nmerged {} layers and removed their LoRA wrappers\n", unwrapped);
    fmt::print(
        "check on {} tokens: merged logits match base + adapter within {:.2e} (the adapter moves them by up to "
        "{:.2e})\n",
        std::min<int64_t>(16, model->dims().context_length), diff, moved);

    // Write a plain model in Hugging Face's layout.
    if (to_file) {
      const fs::path file(out), dir = out_weights.parent_path().empty() ? fs::path(".") : out_weights.parent_path();
      fs::create_directories(dir);
      save_safetensors(file.string(), model->hf_state(), {{"format", "pt"}});
      const fs::path config_path = dir / "config.json";
      if (write_config) {
        write_file_atomically(config_path.string(), [&](std::ostream& o) { o << model->hf_config().dump(2) << "\n"; });
      }
      fmt::print("wrote {} ({}); {} {}\n", file.string(), tools::human_bytes(int64_t(fs::file_size(file))),
                 write_config ? "wrote" : "kept the existing (same shape)", config_path.string());
    } else {
      models::save_hf_checkpoint(*model, out);
      fmt::print("wrote {} ({}) and {}\n", out_weights.string(),
                 tools::human_bytes(int64_t(fs::file_size(out_weights))), (fs::path(out) / "config.json").string());
    }
    fmt::print("run it with: generate --weights {}\n", out);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
