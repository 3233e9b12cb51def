// A GGUF model's frozen linear weights in a compact base format (core/quantized.h), built tensor by tensor
// from the memory-mapped file with no float32 copy of the model:
//   Q8_0 -> q8_0, Q4_0 -> q4_0: the file's blocks are the base's blocks (the same bytes, core/quant_blocks.h);
//     rows are copied whole, so undoing llama.cpp's q/k row permutation moves each row's blocks with it;
//   any other type (K-quants, Q4_1, Q5_x, F16, ...) -> dequantized a row at a time and re-quantized, with the
//     relative RMS error of that conversion measured against the file's own values.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/gguf.h"
#include "core/quantized.h"

namespace lora::models::gguf_io {

// --base-dtype auto for one tensor type: Q8_0 -> q8_0, Q4_0 -> q4_0 (kept); Q6_K, Q5_K, Q5_0, Q5_1 -> q8_0 and
// Q4_K, Q4_1 -> q4_0 (the nearest base format that does not lose more bits); F32, F16, BF16 -> f32.
QuantFormat auto_base_format(gguf::TensorType type);

// The format a compact base holds a quantized token embedding or output head in: auto's, whatever the body's
// (as llama.cpp keeps them); f32 for a float tensor, or rows that are not whole blocks of 32.
QuantFormat table_format(const gguf::TensorInfo& t);

// The format auto gives most of the file's linear weights (by element count): what a program predicts
// memory with and quantizes the rest with. f32 when the file is all float.
QuantFormat dominant_auto_format(const gguf::File& file);

// One weight of the file in a base format, its rows in the model's order.
struct BaseWeight {
  QuantizedWeight weight;
  bool kept_blocks = false;         // the file's own blocks (no conversion)
  double relative_rms_error = 0.0;  // of a conversion: ||W_file - W_base|| / ||W_file|| (0 when kept)
};

// Tensor `t` of `file` (2-D, ne = {in, out}) as a weight [out, in] of `format` (not f32) on the host.
// heads > 0 undoes llama.cpp's q/k row permutation for that many heads (models/gguf/arch.h). Refused with a
// lora::Error naming the file and the tensor: not 2-D, rows that are not whole blocks of 32 for q8_0/q4_0,
// data whose size is not that of its shape, scales or values that are inf or nan, heads that do not divide
// the rows into pairs.
BaseWeight base_weight_from_gguf(const gguf::File& file, const gguf::TensorInfo& t, QuantFormat format, int64_t heads);

// What an import did to the frozen linear weights: one summary line.
struct BaseImportReport {
  int64_t kept = 0, converted = 0;
  std::map<std::string, int64_t> layers_by_format;  // "q8_0" -> count
  size_t bytes = 0;                                 // of the weights held
  double worst_error = 0.0;                         // relative RMS, over converted tensors
  std::string worst_tensor, worst_conversion;       // "blk.3.ffn_down.weight", "q6_K -> q8_0"
  void add(const gguf::TensorInfo& t, const BaseWeight& w);
  // The token embedding (`also_head`: the tied output head too) or an untied output head, held compact.
  std::vector<std::string> tables;  // "token_embd.weight q4_0 (also the output head, 21.1 MiB)"
  size_t table_bytes = 0;
  void add_table(const gguf::TensorInfo& t, const BaseWeight& w, bool also_head);
  bool empty() const { return kept + converted == 0 && tables.empty(); }
  // "48 linear layers kept quantized from the file (36 q4_0, 12 q8_0: 52.1 MiB): 36 as the file's blocks,
  //  12 converted, worst relative RMS error 0.0123 (blk.0.ffn_down.weight, q6_K -> q8_0); held compact too:
  //  token_embd.weight as q4_0 (the tied output head too), 21.1 MiB"
  std::string str() const;
};

}  // namespace lora::models::gguf_io
