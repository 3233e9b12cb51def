// MultiLoRALinear: packing the resident adapters, and the forward pass.
#include "serve/multi_lora.h"

#include <cstring>

#include "autograd/grad_mode.h"
#include "backends/kernels/lora_gather.h"
#include "nn/quantized_linear.h"

namespace lora::serve {
namespace {

// The dtype and device the adapters are held in: the base weight's, or for a compact (quantized) base,
// whose f32 weight does not exist, float32 on the quantized weight's device.
DType adapter_dtype(const nn::Linear& base) {
  return base.weight.defined() ? base.weight.dtype() : DType::F32;
}
Device adapter_device(const nn::Linear& base) {
  if (base.weight.defined()) return base.weight.device();
  const auto* q = dynamic_cast<const nn::QuantizedLinear*>(&base);
  LORA_CHECK(q != nullptr && q->quantized != nullptr, "MultiLoRALinear: the base layer holds no weight");
  return q->quantized->device();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// MultiLoRALinear

MultiLoRALinear::MultiLoRALinear(std::shared_ptr<nn::Linear> base, std::shared_ptr<nn::RowAdapters> rows)
    : base_layer(std::move(base)), rows_(std::move(rows)) {
  LORA_CHECK(base_layer != nullptr && rows_ != nullptr, "MultiLoRALinear: no base layer or row selection");
  adapters_.resize(static_cast<size_t>(rows_->slots()));
  register_module("base_layer", base_layer);
  repack();
}

bool MultiLoRALinear::holds(int32_t slot) const {
  return slot >= 0 && slot < static_cast<int32_t>(adapters_.size()) && adapters_[static_cast<size_t>(slot)].has_value();
}

void MultiLoRALinear::set(int32_t slot, Adapter a) {
  LORA_CHECK(slot >= 0 && slot < static_cast<int32_t>(adapters_.size()), "MultiLoRALinear: slot {} outside [0, {})",
             slot, adapters_.size());
  const int64_t in = base_layer->in_features(), out = base_layer->out_features();
  const int64_t S = static_cast<int64_t>(a.slices.size()), r = a.rank;
  LORA_CHECK(S > 0 && r > 0 && r <= kernels::kLoraGatherMaxRank, "MultiLoRALinear: rank {} outside [1, {}]", r,
             kernels::kLoraGatherMaxRank);
  const int64_t size = a.slices[0].size;
  for (const nn::OutputSlice& s : a.slices) {
    LORA_CHECK(s.size == size && s.offset >= 0 && s.offset <= out - s.size,
               "MultiLoRALinear: slice {} + {} does not fit {} outputs", s.offset, s.size, out);
  }
  LORA_CHECK(a.A.shape() == (Shape{S * r, in}) && a.B.shape() == (Shape{S * size, r}),
             "MultiLoRALinear: A {} and B {} are not [{}, {}] and [{}, {}]", a.A.shape().str(), a.B.shape().str(),
             S * r, in, S * size, r);
  a.A = a.A.to(Device::cpu()).to(adapter_dtype(*base_layer));
  a.B = a.B.to(Device::cpu()).to(adapter_dtype(*base_layer));
  adapters_[static_cast<size_t>(slot)] = std::move(a);
  repack();
}

void MultiLoRALinear::clear(int32_t slot) {
  if (!holds(slot)) return;
  adapters_[static_cast<size_t>(slot)].reset();
  repack();
}

// Concatenates every resident adapter into the kernel's packed buffers: slot s's pieces are its slices, in
// order; A_p are rows of a_pack, B_p [size, r] blocks of b_pack.
void MultiLoRALinear::repack() {
  const int64_t in = base_layer->in_features();
  const DType dtype = adapter_dtype(*base_layer);
  std::vector<int64_t> slot_pieces{0}, pieces;
  std::vector<double> scales;
  int64_t a_rows = 0, b_elems = 0;
  for (const auto& a : adapters_) {
    if (a) {
      const int64_t size = a->slices[0].size;
      for (const nn::OutputSlice& s : a->slices) {
        pieces.insert(pieces.end(), {a_rows, a->rank, b_elems, s.offset, s.size});
        scales.push_back(a->scale);
        a_rows += a->rank;
        b_elems += size * a->rank;
      }
    }
    slot_pieces.push_back(static_cast<int64_t>(scales.size()));
  }
  const Device device = adapter_device(*base_layer);
  Tensor a_pack = Tensor::zeros({std::max<int64_t>(a_rows, 1), in}, dtype);
  Tensor b_pack = Tensor::zeros({std::max<int64_t>(b_elems, 1)}, dtype);
  const size_t elem = dtype_size(dtype);
  int64_t a_at = 0, b_at = 0;
  for (const auto& a : adapters_) {
    if (!a) continue;
    // A [S r, in] and B [S size, r] are already stacked slice by slice, as the pieces are.
    std::memcpy(static_cast<char*>(a_pack.raw_data()) + a_at * in * elem, a->A.raw_data(), a->A.nbytes());
    std::memcpy(static_cast<char*>(b_pack.raw_data()) + b_at * elem, a->B.raw_data(), a->B.nbytes());
    a_at += a->A.size(0);
    b_at += a->B.numel();
  }
  const int64_t P = static_cast<int64_t>(scales.size());
  slot_pieces_ = Tensor::from_vector(slot_pieces, {static_cast<int64_t>(slot_pieces.size())}).to(device);
  pieces_ = Tensor::from_vector(pieces, {P, 5}).to(device);
  scales_ = Tensor::from_vector(scales, {P}).to(device);
  a_pack_ = a_pack.to(device);
  b_pack_ = b_pack.to(device);
}

Tensor MultiLoRALinear::forward(const Tensor& x) {
  Tensor y = base_layer->forward(x);                    // [..., out]: one matmul for every row, whatever its adapter
  if (pieces_.size(0) == 0 || !rows_->any()) return y;  // no adapter resident here, or none asked for
  LORA_CHECK(!GradMode::is_enabled() || !x.requires_grad(),
             "MultiLoRALinear: mixed-adapter batches are for inference (use NoGradGuard)");
  const int64_t in = base_layer->in_features(), out = base_layer->out_features(), n = x.numel() / in;
  const Tensor& slots = rows_->token_slots(n, x.device());
  Tensor y2 = y.view({n, out});
  kernels::run<kernels::LoraGather>(x.device(), x.view({n, in}), slots, slot_pieces_, pieces_, scales_, a_pack_,
                                    b_pack_, y2);
  return y;
}

}  // namespace lora::serve
