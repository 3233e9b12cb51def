// CausalLM: the one interface every causal language model implements, and the only one programs,
// LoRA, checkpoints, generation and the memory report see. A model is an nn::Module whose parameters
// carry Hugging Face's names, so that checkpoints and PEFT adapters are read and written as published.
//
// A forward pass is described by its ForwardBatch (models/forward_batch.h) and run by the one non-virtual
// forward(), which validates the batch once and hands it to the shared layer runner
// (models/layer_runner.h). An architecture is a folder under models/ with its config (read from
// config.json), its block (a DecoderBlock), the hooks below (embedding, blocks, final norm, head), its
// weights' names, and one line in models/registry.cpp (docs/models.md, "Adding an architecture").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/quantized.h"
#include "models/forward_batch.h"
#include "models/layer_runner.h"
#include "nn/attention.h"
#include "nn/lora/apply_lora.h"
#include "nn/module.h"
#include "nn/rotary.h"
#include "nn/row_adapters.h"

namespace lora::models {

// The sizes programs and reports need, whatever the architecture.
struct ModelDims {
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // positions the model was built for
  int64_t n_layer = 0;
  int64_t hidden = 0;  // the residual stream's width
  int64_t n_head = 0, n_kv_head = 0, head_dim = 0;
};

class CausalLM : public nn::Module {
 public:
  // ---- What it is
  virtual std::string model_type() const = 0;  // config.json's model_type: "gpt2", "llama", "qwen2", ...
  virtual ModelDims dims() const = 0;
  // The config.json that describes this model to transformers (and back to lora.cpp).
  virtual nlohmann::json hf_config() const = 0;
  virtual int64_t bos_token_id() const { return -1; }  // -1: none
  virtual int64_t eos_token_id() const { return -1; }
  // Every token that ends a sequence (Llama 3 has several); generation stops at any of them.
  virtual std::vector<int64_t> eos_token_ids() const;
  Device device() const;  // where its parameters live

  // ---- Computing
  // The forward pass the batch describes: logits [B, T, V] for every position, [B, V] for the last of
  // each row, [N, V] for given positions, or none (models/forward_batch.h). With a KV cache the rows'
  // tokens are appended to their slots, which advance when the pass succeeds. The batch is validated
  // before anything runs (lora::Error names what is wrong).
  Tensor forward(const ForwardBatch& batch);
  // ids [B, T] (I32/I64) -> logits [B, T, vocab]: forward(ForwardBatch(ids)).
  Tensor forward(const Tensor& ids) { return forward(ForwardBatch(ids)); }
  // Mean next-token cross-entropy of targets [B, T] (-100: ignored, HF's convention after the shift) over
  // the batch's tokens. The head and the loss run fused (ops::linear_cross_entropy), and only on the
  // positions that are trained: a batch whose prompts are masked never computes their logits. The batch
  // asks for no logits of its own (LogitRows::All, the default) and has no KV cache.
  Tensor loss(const ForwardBatch& batch, const Tensor& targets);
  Tensor loss(const Tensor& ids, const Tensor& targets) { return loss(ForwardBatch(ids), targets); }
  // An empty cache of `slots` sequences of up to `capacity` tokens each (0: the context length).
  nn::KVCache make_kv_cache(int64_t slots, int64_t capacity = 0) const;

  // The per-row adapter slots of a model serving many adapters at once (nn/row_adapters.h): null until
  // serve::AdapterSet installs its layers, which read them; forward() sets them from batch.adapters.
  const std::shared_ptr<nn::RowAdapters>& row_adapters() const { return row_adapters_; }
  void set_row_adapters(std::shared_ptr<nn::RowAdapters> rows) { row_adapters_ = std::move(rows); }

  // For inference only: a quantized copy of the output head that forward() uses for logits (decoding reads
  // the head every token; in f32 it is GPT-2 small's largest tensor). The loss keeps the f32 head_weight().
  // models::quantize_base(..., /*inference_head=*/true) makes it; null: logits from the model's own head.
  const std::shared_ptr<const QuantizedWeight>& inference_head() const { return inference_head_; }
  // Quantizes the head's current weight into the inference head (F32: drops it, back to the f32 head). A head
  // that is compact already (compact_head()) is read as it is: no copy is made.
  void quantize_inference_head(QuantFormat format);
  // The output head when it is a frozen compact weight (a GGUF file's quantized output.weight, or its
  // quantized token_embd when the head is tied): logits and the loss read it through dequantizing matmuls, and
  // there is no f32 head. Null: the head is the dense head_weight().
  virtual std::shared_ptr<const QuantizedWeight> compact_head() const = 0;

  // ---- Hugging Face weight names and layout (what model.safetensors holds)
  // The parameters as saved: HF names, HF layout, tied weights once. A LoRA-wrapped layer contributes its
  // base weight as it is now (with the adapter folded in when merged); adapters are saved separately.
  std::vector<std::pair<std::string, Tensor>> hf_state() const;
  // The HF name of a parameter (the module path without LoRA's ".base_layer"), or "" when it is not saved
  // under a name of its own (a tied head).
  virtual std::string hf_name(const std::string& parameter_name) const;
  // Whether HF stores this weight transposed ([in, out]: GPT-2's Conv1D layers).
  virtual bool hf_transposed(const std::string& hf_name) const { return false; }
  // A key of a checkpoint file as the parameter name it loads into: "" for keys that are not parameters
  // (causal-mask buffers, rotary frequency tables, a tied head stored anyway), another spelling mapped to
  // the canonical one. Other keys are loaded by their own name.
  virtual std::string hf_key_to_name(const std::string& key) const { return key; }

  // ---- LoRA
  // The targets --targets may name besides layer paths: slices of fused projections the model declares
  // ("q", "k", "v" of GPT-2's c_attn), and "all-linear" (every linear layer but the output head).
  std::vector<nn::LoRATarget> lora_targets() const;
  // The output head's module path ("lm_head"), left out of "all-linear" as PEFT does; "" when tied.
  virtual std::string output_head_path() const { return ""; }
  // The token embedding's module path ("transformer.wte", "model.embed_tokens"): an nn::Embedding.
  virtual std::string token_embedding_path() const = 0;
  // PEFT's fan_in_fan_out: true when the adapted layers are HF Conv1D ([in, out] weights).
  virtual bool hf_fan_in_fan_out() const { return false; }

 protected:
  // ---- What an architecture provides; forward() and loss() do the rest (models/layer_runner.h)
  // Its input embeddings of ids [B, T] whose tokens sit at `positions`: [B, T, hidden] (GPT-2 adds its
  // learned position embeddings here; rotary architectures ignore the positions).
  virtual Tensor embed(const Tensor& ids, const TokenPositions& positions) = 0;
  // Its dims().n_layer blocks, in order.
  virtual DecoderBlock& block(int64_t layer) = 0;
  // The norm after the last block, on hidden states [N, hidden] or [B, T, hidden].
  virtual Tensor final_norm(const Tensor& h) = 0;
  // The output head's weight [vocab, hidden] (logits = h W^T): the token embedding when tied. Undefined when
  // the head is compact (compact_head()).
  virtual const Tensor& head_weight() const = 0;
  // The rotary embedding its blocks apply (the runner builds the tables once per pass); null: none.
  virtual const nn::RotaryEmbedding* rotary() const { return nullptr; }

  virtual std::vector<nn::LoRATarget> declared_lora_targets() const { return {}; }

 private:
  // Embedding, blocks (checkpointed when CheckpointMode is on; with the cache otherwise) before the final
  // norm: [B, T, hidden].
  Tensor run_blocks(const ForwardBatch& batch, const ForwardPlan& plan);
  ForwardPlan plan(const ForwardBatch& batch) const;
  // logits = x W_head^T through whichever head the model reads: the inference head, the compact head, the f32 one.
  Tensor head_logits(const Tensor& x) const;
  // The fused head and loss (ops::linear_cross_entropy) on the model's own head.
  Tensor head_loss(const Tensor& x, const Tensor& targets) const;

  std::shared_ptr<nn::RowAdapters> row_adapters_;
  std::shared_ptr<const QuantizedWeight> inference_head_;
};

}  // namespace lora::models
