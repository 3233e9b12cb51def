// A causal LM's frozen base in a compact format (--base-dtype): every linear layer but the output head
// (which stays f32 like the embeddings). Run it after LoRA is applied (LoRA wraps f32 layers; their base
// layers are then quantized) and after the model is on its device. A GGUF file's quantized token embedding
// and output head are the exception: the loader keeps them compact (make_tables_compact does the same to a
// model built on the meta device, for the memory prediction).
//
// With `inference_head` (programs that only decode: generate, bench_serve, serve), forward() also takes its
// logits from a quantized copy of the head, as llama.cpp's quantized files do: q8_0 for the 8- and 4-bit
// bases (llama.cpp keeps its output tensor above 4 bits too), bf16 for bf16 and for hidden sizes that are
// not whole blocks of 32. The f32 head stays for the embeddings (a tied head) and for the loss.
#pragma once

#include <set>

#include "core/allocator.h"
#include "models/base_dtype.h"
#include "models/causal_lm.h"
#include "nn/layers.h"
#include "nn/quantized_linear.h"

namespace lora::models {

// The module paths of the base's linear layers: "all-linear" names every linear layer but the head (LoRA's
// base layers aside).
inline std::set<std::string> base_linear_paths(const CausalLM& model) {
  std::set<std::string> body;
  for (const nn::LoRATarget& t : model.lora_targets()) {
    if (t.name != "all-linear") continue;
    for (const nn::LoRASite& site : t.sites) body.insert(site.module_path);
  }
  return body;
}

// For loaders that build the base compact while reading a file (models/gguf/model_io.h, models/hf_checkpoint.h):
// the layer at `path` replaced by a frozen nn::QuantizedLinear over `weight`, keeping the layer's bias tensor.
inline std::shared_ptr<nn::QuantizedLinear> replace_with_compact(CausalLM& model, const std::string& path,
                                                                 std::shared_ptr<const QuantizedWeight> weight) {
  auto linear = std::dynamic_pointer_cast<nn::Linear>(model.module_at(path));
  LORA_CHECK(linear != nullptr, "'{}' is not a linear layer", path);
  auto layer = std::make_shared<nn::QuantizedLinear>(std::move(weight), linear->bias);
  const size_t dot = path.rfind('.');
  nn::Module& parent = dot == std::string::npos ? model : *model.module_at(path.substr(0, dot));
  parent.replace_child(dot == std::string::npos ? path : path.substr(dot + 1), layer);
  return layer;
}

// The token embedding replaced by a frozen nn::Embedding over the compact `table` (no f32 weight).
inline void replace_embedding_with_compact(CausalLM& model, std::shared_ptr<const QuantizedWeight> table) {
  const std::string path = model.token_embedding_path();
  const size_t dot = path.rfind('.');
  nn::Module& parent = dot == std::string::npos ? model : *model.module_at(path.substr(0, dot));
  parent.replace_child(dot == std::string::npos ? path : path.substr(dot + 1),
                       std::make_shared<nn::Embedding>(std::move(table)));
}

// The token embedding and an untied output head quantized into the formats given (F32 leaves one dense), as
// a GGUF file's quantized tables are loaded: what the memory prediction does on the meta device for such a file.
inline void make_tables_compact(CausalLM& model, const CompactTables& tables) {
  if (tables.embedding != QuantFormat::F32) {
    const auto embedding = std::dynamic_pointer_cast<nn::Embedding>(model.module_at(model.token_embedding_path()));
    LORA_CHECK(embedding && embedding->has_dense_weight(), "'{}' is not a dense embedding",
               model.token_embedding_path());
    replace_embedding_with_compact(
        model, std::make_shared<const QuantizedWeight>(quantize_weight(embedding->weight, tables.embedding)));
  }
  const std::string head = model.output_head_path();
  if (!head.empty() && tables.head != QuantFormat::F32) {
    const auto linear = std::dynamic_pointer_cast<nn::Linear>(model.module_at(head));
    LORA_CHECK(linear && linear->has_dense_weight(), "'{}' is not a dense linear layer", head);
    replace_with_compact(model, head,
                         std::make_shared<const QuantizedWeight>(quantize_weight(linear->weight, tables.head)));
  }
}

// Every parameter of a model built on the meta device given host storage (uninitialised, for a loader to fill),
// in its memory category; parameters that have storage already are left alone.
inline void allocate_meta_parameters(nn::Module& model) {
  for (auto& [name, param] : model.named_parameters()) {
    if (!param.device().is_meta()) continue;
    const Tensor fresh = Tensor::empty(param.shape(), DType::F32, Device::cpu(), param.storage()->category());
    param.impl()->storage = fresh.storage();
    param.impl()->offset_bytes = 0;
  }
}

// QLoRA's nf4 keeps its absmaxes double-quantized; the other formats have no second level.
inline nn::QuantizeReport quantize_base(CausalLM& model, QuantFormat format, bool inference_head = false) {
  const std::set<std::string> body = base_linear_paths(model);
  const auto in_base = [&](const std::string& path) { return body.count(path) > 0 || path.ends_with(".base_layer"); };
  // Layers a loader already built compact (a GGUF file's own blocks, models/gguf/base_blocks.h) stay as they
  // are and are counted.
  nn::QuantizeReport held;
  for (const auto& [path, module] : model.named_modules()) {
    const auto compact = std::dynamic_pointer_cast<nn::QuantizedLinear>(module);
    if (!compact || !in_base(path)) continue;
    held.layers += 1;
    held.f32_bytes += static_cast<size_t>(compact->quantized->rows * compact->quantized->cols) * 4;
    held.quantized_bytes += compact->quantized->nbytes();
  }
  nn::QuantizeReport report = nn::quantize_frozen_linears(model, format, format == QuantFormat::NF4, in_base);
  report.layers += held.layers, report.f32_bytes += held.f32_bytes, report.quantized_bytes += held.quantized_bytes;
  if (inference_head && format != QuantFormat::F32) {
    const QuantFormat f =
        format == QuantFormat::BF16 || model.dims().hidden % kQuantBlock != 0 ? QuantFormat::BF16 : QuantFormat::Q8_0;
    model.quantize_inference_head(f);
    // Held beside the f32 head (none is made when the head is compact already: it is read as it is).
    if (model.inference_head()) {
      report.inference_head_bytes = model.inference_head()->nbytes();
      report.inference_head_format = std::string(quant_format_name(f));
    }
  }
  // The f32 weights just freed sit in the CPU allocator's cache, in sizes training will not ask for again:
  // give them back to the system, or the process keeps the f32 model's footprint after all.
  if (report.layers > held.layers) memory::trim_cache();
  return report;
}

}  // namespace lora::models
