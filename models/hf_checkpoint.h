// Model weights in Hugging Face's layout, for every architecture: a folder with config.json and either
// model.safetensors or shards listed by model.safetensors.index.json, as transformers' save_pretrained
// writes them. Weights are converted to float32 on load (F32, BF16, F16 and F64 files are read).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/causal_lm.h"
#include "nn/quantized_linear.h"

namespace lora::models {

// The safetensors file(s) of one model, validated and mapped: one file, or the shards an index names.
class HFWeights {
 public:
  // `path`: a model folder (model.safetensors.index.json, else model.safetensors), an index .json, or one
  // .safetensors file. Errors name the path and what was looked for.
  static HFWeights open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> keys() const;  // every tensor, in a stable order
  bool contains(const std::string& key) const { return where_.count(key) != 0; }
  const TensorInfo& info(const std::string& key) const;
  Tensor load(const std::string& key, DType dtype = DType::F32) const;
  // Drops the pages of the mapping that tensor `key` lies on (whole pages only; they are read again on
  // access), so that a loader converting tensor by tensor keeps one tensor of the files resident, not all.
  void release(const std::string& key) const;
  // Copies tensor `key`'s bytes as stored (info(key).nbytes()) to `out`, releasing its pages as it goes.
  void copy_raw(const std::string& key, void* out) const;
  size_t num_files() const { return files_.size(); }
  const SafeTensorsFile& file(size_t i) const { return *files_.at(i); }

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, size_t> where_;  // key -> file
};

// Checks that the weights hold exactly the model's parameters (HF names, HF shapes) and lists what is
// missing, mis-shaped or unexpected. Touches no data: call it on a model that holds none yet.
void check_hf_weights(const CausalLM& model, const HFWeights& weights);
// check_hf_weights, then reads every parameter (converted to float32, transposed where HF's layout differs):
// a parameter on the meta device takes the host storage it was read into (a model built with shapes only is
// never initialised for nothing, and no weight is held twice); any other is copied onto its device. Keys the
// model maps to "" are skipped.
void load_hf_weights(CausalLM& model, const HFWeights& weights);
// Quantize while loading: `model` is built with shapes only (the meta device, nothing allocated). Each of the
// body's linear weights (every linear layer but the output head, models/quantize_base.h) is read alone in
// float32, quantized to `format` (not f32; nf4 double-quantized) and released before the next is read, and its
// layer becomes a frozen nn::QuantizedLinear; then the other parameters are allocated on the host and read as
// load_hf_weights reads them. No float32 copy of the body exists at once: the peak is the compact body, the
// float32 rest and one float32 weight. Returns what was quantized (QuantizeReport::str()).
nn::QuantizeReport load_hf_weights_compact(CausalLM& model, const HFWeights& weights, QuantFormat format);

// A compact checkpoint (models/compact_checkpoint.h: a base saved as it was held, quantized) read as it is stored:
// `model` built on the meta device; each compact weight's layer replaced (a linear layer by a frozen
// nn::QuantizedLinear, the token embedding by a compact nn::Embedding) over the file's bytes, no conversion;
// then the float parameters allocated and read. load_hf_weights and load_hf_weights_compact refuse such a
// checkpoint, naming its formats: its weights have no float32 form to load or quantize again.
nn::QuantizeReport load_hf_weights_as_stored(CausalLM& model, const HFWeights& weights);

// Writes DIR/config.json and the weights: DIR/model.safetensors, or, above `max_shard_bytes`, shards
// model-0000i-of-0000n.safetensors with model.safetensors.index.json (transformers' layout). The folder is
// written as one commit (core/atomic_file.h): a reader sees the old model or the new one, whole. Other files
// in DIR (a tokenizer, a README) are kept. Refuses to write a model holding inf or nan. A model whose base is
// held compact (quantized layers, a compact embedding) is written in models/compact_checkpoint.h's layout, its
// config.json with a "quantization_config" that names it.
void save_hf_checkpoint(const CausalLM& model, const std::string& dir, int64_t max_shard_bytes = int64_t(5) << 30);

}  // namespace lora::models
