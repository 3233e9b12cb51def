// GPT-2 checkpoints in Hugging Face's layout: a folder with config.json + model.safetensors, as
// published for openai-community/gpt2 and as written by transformers' save_pretrained.
//
// HF's GPT-2 uses Conv1D layers whose weights are stored [in, out]; lora.cpp's Linear is [out, in], so
// those four weights per block (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed on load
// and on save. The causal-mask buffers (attn.bias, attn.masked_bias) are ignored, lm_head.weight is tied
// to transformer.wte.weight, and keys may come with or without the "transformer." prefix.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/gpt2/model.h"

namespace lora::gpt2 {

// True for the names of weights HF stores in Conv1D [in, out] layout.
bool is_conv1d_weight(const std::string& name);

// The config for --weights PATH [--config NAME]: PATH/config.json for a folder; for a file, the
// config.json beside it if there is one, else the preset NAME (which must then be given).
GPT2Config resolve_config(const std::string& weights_path, const std::string& preset_name);
// The model.safetensors for a folder, or the file itself.
std::string resolve_weights_file(const std::string& weights_path);

// Copies a HF GPT-2 model.safetensors into `model` (shapes must match its config). Errors name the file
// and list missing, unexpected and mis-shaped tensors.
void load_hf_weights(GPT2& model, const std::string& safetensors_path);
// Builds the model described by --weights/--config and loads its weights.
std::shared_ptr<GPT2> load_pretrained(const std::string& weights_path, const std::string& preset_name = "");

// The model's base weights under HF names and in HF layout. A LoRA-wrapped layer contributes its base
// layer's weight as it is now: the original weight when the adapter is unmerged, W + s B A when it is
// merged. The adapters' own A and B are not included (save them with nn::save_adapter).
std::vector<std::pair<std::string, Tensor>> hf_state(const GPT2& model);
// Writes DIR/config.json and DIR/model.safetensors (each atomically) that transformers loads as GPT-2.
void save_hf_checkpoint(const GPT2& model, const std::string& dir);

}  // namespace lora::gpt2
