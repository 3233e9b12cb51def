// Kernel contract of the grouped LoRA branch for mixed-adapter batches (serve/multi_lora.cpp): every token
// row gathers its own adapter's A and B (Punica's BGMV, S-LoRA), so one batch serves many adapters while
// the base matmul runs once for all rows. Implemented by backends/cpu/lora_gather.cpp and
// backends/cuda/lora_gather.cu.
#pragma once

#include "backends/kernels/dispatch.h"
#include "core/tensor.h"

namespace lora::kernels {

// The adapters resident on one layer, packed. An adapter (a slot) is a list of pieces; a piece adapts rows
// [out_offset, out_offset + out_size) of the layer's output with its own rank r (adapters differ in rank
// and in which slices of a fused projection they adapt):
//   slot_pieces  I64 [slots + 1]  slot s owns pieces [slot_pieces[s], slot_pieces[s + 1])
//   pieces       I64 [P, 5]       (a_row, rank, b_offset, out_offset, out_size) of each piece
//   scales       F64 [P]          alpha / r (or alpha / sqrt(r)) of each piece
//   a_pack       [sum r, in]      A_p is rows [a_row, a_row + r)
//   b_pack       [sum out_size r] B_p [out_size, r] starts at element b_offset
//
// For token row i of x [N, in] with slot s = token_slot[i] (I32 [N]; -1: the base model only), and every
// piece p of s:
//   y[i, out_offset : out_offset + out_size] += scale_p * B_p (A_p x_i)          (y [N, out], accumulated)
struct LoraGather {
  static constexpr const char* name = "lora_gather";
  LORA_DEVICE_KERNELS(const Tensor& x, const Tensor& token_slot, const Tensor& slot_pieces, const Tensor& pieces,
                      const Tensor& scales, const Tensor& a_pack, const Tensor& b_pack, Tensor& y);
};

// The largest rank a piece may have: the kernels keep A_p x_i for one row in on-chip memory.
constexpr int64_t kLoraGatherMaxRank = 1024;

}  // namespace lora::kernels
