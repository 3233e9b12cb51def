// Broadcast indexing helpers.
#include "backends/cpu/broadcast.h"

#include "core/error.h"

namespace lora::cpu {

BroadcastStrides::BroadcastStrides(const Shape& input, const Shape& out) {
  rank = out.rank();
  LORA_CHECK(rank <= kMaxBroadcastRank, "broadcast: rank {} is above the supported {}", rank, kMaxBroadcastRank);
  LORA_CHECK(input.rank() <= rank, "broadcast: input shape {} has more axes than output shape {}", input.str(),
             out.str());
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    out_dims[d] = out.dims()[d];
    const int id = input.rank() - rank + d;
    const int64_t in_dim = id >= 0 ? input.dims()[id] : 1;
    LORA_CHECK(in_dim == out_dims[d] || in_dim == 1, "broadcast: shape {} cannot be broadcast to {}", input.str(),
               out.str());
    strides[d] = in_dim == 1 ? 0 : stride;
    stride *= in_dim;
  }
}

bool is_trailing_broadcast(const Shape& small, const Shape& big) {
  // Strip leading 1s of small, then it must equal the trailing dims of big.
  int start = 0;
  while (start < small.rank() && small.dims()[start] == 1) ++start;
  const int n = small.rank() - start;
  if (n > big.rank()) return false;
  for (int i = 0; i < n; ++i) {
    if (small.dims()[start + i] != big.dims()[big.rank() - n + i]) return false;
  }
  return true;
}

}  // namespace lora::cpu
