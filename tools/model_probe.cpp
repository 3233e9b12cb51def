// A model's logits on a fixed short token sequence.
#include "tools/model_probe.h"

#include <algorithm>

#include "autograd/grad_mode.h"

namespace lora::tools {

std::vector<float> probe_logits(models::CausalLM& model) {
  NoGradGuard no_grad;
  const int64_t T = std::min<int64_t>(16, model.dims().context_length), V = model.dims().vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = static_cast<int32_t>((i * 7919 + 13) % V);
  return model.forward(Tensor::from_vector(ids, {1, T})).to_vector<float>();
}

}  // namespace lora::tools
