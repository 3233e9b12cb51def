// LoRALinear: construction, the forward pass, merge and unmerge.
#include "nn/lora/lora_linear.h"

#include <cmath>

#include "backends/backend.h"
#include "nn/quantized_linear.h"

namespace lora::nn {

double LoRAOptions::scaling() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

void LoRAOptions::validate() const {
  LORA_CHECK(rank > 0, "LoRA: rank {} must be positive", rank);
  LORA_CHECK(alpha > 0, "LoRA: alpha {} must be positive", alpha);
  LORA_CHECK(dropout >= 0 && dropout < 1, "LoRA: dropout {} is outside [0, 1)", dropout);
}

LoRALinear::LoRALinear(std::shared_ptr<Linear> base, const LoRAOptions& options, std::vector<OutputSlice> slices)
    : base_layer(std::move(base)), options_(options), slices_(std::move(slices)) {
  options_.validate();
  LORA_CHECK(base_layer != nullptr, "LoRALinear: no base layer");
  // A compact base (a QuantizedLinear a loader built from a file's blocks) is wrapped as it is: it is frozen.
  const auto compact = std::dynamic_pointer_cast<QuantizedLinear>(base_layer);
  LORA_CHECK(base_layer->has_dense_weight() || (compact && compact->quantized),
             "LoRALinear: the base layer has no weight");
  const int64_t out = base_layer->out_features(), in = base_layer->in_features(), r = options_.rank;
  if (slices_.empty()) slices_.push_back({0, out});
  for (size_t i = 0; i < slices_.size(); ++i) {
    const OutputSlice& s = slices_[i];
    LORA_CHECK(s.size == slices_[0].size, "LoRALinear: adapted slices must have equal sizes");
    // offset <= out - size rather than offset + size <= out: no overflow on hostile metadata.
    LORA_CHECK(s.offset >= 0 && s.size > 0 && s.size <= out && s.offset <= out - s.size,
               "LoRALinear: slice at offset {} of size {} is outside the layer's {} outputs", s.offset, s.size, out);
    for (size_t j = 0; j < i; ++j) {
      LORA_CHECK(s.offset >= slices_[j].offset + slices_[j].size || slices_[j].offset >= s.offset + s.size,
                 "LoRALinear: slices at offsets {} and {} overlap", slices_[j].offset, s.offset);
    }
  }
  LORA_CHECK(r <= std::min(in, slices_[0].size), "LoRA: rank {} exceeds the layer's size ({} x {})", r, slices_[0].size,
             in);
  const int64_t S = static_cast<int64_t>(slices_.size());
  const Device device = compact ? compact->quantized->device() : base_layer->weight.device();

  // The base layer is frozen: its weights cost no gradient, no optimizer state, no saved input.
  base_layer->freeze();
  register_module("base_layer", base_layer);

  Generator gen(options_.seed);
  if (options_.gaussian_init) {
    lora_A = Tensor::randn({S * r, in}, gen, 0.0, 1.0 / static_cast<double>(r), DType::F32, device);
  } else {
    // Kaiming-uniform with a = sqrt(5), as nn.Linear (and so PEFT and loralib): bound = 1 / sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    lora_A = Tensor::uniform({S * r, in}, gen, -bound, bound, DType::F32, device);
  }
  lora_B = Tensor::zeros({S * slices_[0].size, r}, DType::F32, device);
  register_parameter("lora_A", lora_A);
  register_parameter("lora_B", lora_B);
  dropout_ = std::make_shared<Dropout>(options_.dropout, splitmix64(options_.seed + 1));
  register_module("lora_dropout", dropout_);  // no parameters; its random stream is part of the state
}

Tensor LoRALinear::forward(const Tensor& x) {
  Tensor y = base_layer->forward(x);
  if (merged_) {
    LORA_CHECK(!GradMode::is_enabled() || !(lora_A.requires_grad() || lora_B.requires_grad()),
               "LoRALinear: the adapter is merged into the base weight; unmerge() before training");
    return y;
  }
  const int64_t r = options_.rank, size = slices_[0].size;
  const double s = scaling();
  Tensor z = ops::linear(dropout_->forward(x), lora_A);  // [..., S r]
  if (slices_.size() == 1 && slices_[0].size == out_features()) {
    return y + ops::linear(z, lora_B) * s;  // the whole output
  }
  for (size_t i = 0; i < slices_.size(); ++i) {
    const int64_t ri = static_cast<int64_t>(i);
    Tensor zi = slices_.size() == 1 ? z : ops::slice(z, -1, ri * r, (ri + 1) * r);  // [..., r]
    Tensor bi = ops::slice(lora_B, 0, ri * size, (ri + 1) * size);                  // [size, r]
    y = ops::add_columns(y, ops::linear(zi, bi), slices_[i].offset, s);
  }
  return y;
}

// W[slice] += sign * s * B_s A_s, without recording anything.
void LoRALinear::apply_delta(double sign) {
  LORA_CHECK(base_layer->has_dense_weight(),
             "LoRALinear: cannot merge into a quantized base weight (merge onto "
             "the f32 base: load it with --base-dtype f32)");
  NoGradGuard no_grad;
  const int64_t r = options_.rank, size = slices_[0].size, in = in_features(), out = out_features();
  Backend& be = backend_for(lora_A);
  for (size_t i = 0; i < slices_.size(); ++i) {
    const int64_t ri = static_cast<int64_t>(i);
    Tensor a = lora_A.narrow_rows(ri * r, r);        // [r, in]
    Tensor b = lora_B.narrow_rows(ri * size, size);  // [size, r]
    Tensor delta = Tensor::empty({size, in}, DType::F32, lora_A.device());
    GemmShape g;
    g.m = size, g.n = in, g.k = r, g.alpha = sign * scaling();
    be.gemm(b, a, delta, g);
    be.copy_block(delta, base_layer->weight, 1, size, out, in, 0, slices_[i].offset, size, /*accumulate=*/true);
  }
}

bool LoRALinear::merge() {
  if (merged_) return false;
  apply_delta(+1.0);
  merged_ = true;
  return true;
}

bool LoRALinear::unmerge() {
  if (!merged_) return false;
  apply_delta(-1.0);
  merged_ = false;
  return true;
}

}  // namespace lora::nn
