// Broadcast indexing for the CPU elementwise and reduction kernels: maps an output element to the
// elements of inputs broadcast to the output's shape (numpy rules). Only the general fallback paths use it.
#pragma once

#include <array>
#include <cstdint>

#include "core/shape.h"

namespace lora::cpu {

constexpr int kMaxBroadcastRank = 8;

// Strides (in elements) of `input` seen through the output shape: 0 along broadcast axes.
struct BroadcastStrides {
  int rank = 0;
  std::array<int64_t, kMaxBroadcastRank> out_dims{};
  std::array<int64_t, kMaxBroadcastRank> strides{};

  BroadcastStrides(const Shape& input, const Shape& out);
  // Offset into the input of the output element with flat index `i`.
  int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t idx = i % out_dims[d];
      i /= out_dims[d];
      off += idx * strides[d];
    }
    return off;
  }
};

// True when `small` broadcasts to `big` by repetition along leading axes only: big = [outer..., small...].
bool is_trailing_broadcast(const Shape& small, const Shape& big);

}  // namespace lora::cpu
