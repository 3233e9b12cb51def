// embedding: a row lookup into weight [V, C], and its backward, a scatter-add into a zero gradient; and
// quantized_embedding, the lookup into a frozen compact table (forward only: nothing to differentiate).
#include "backends/kernels/embedding.h"
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"
#include "autograd/ops/quantized_embedding.h"
#include "backends/kernels/quantized_linear.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(embedding_op, "embedding");
}  // namespace

// out[..., :] = weight[ids[...], :]: ids [...] (I32/I64) -> [..., C]. Only the weight can have a gradient,
// and it needs only the ids (not the weight or the output).
Tensor embedding(const Tensor& weight, const Tensor& ids) {
  constexpr const char* op = "embedding";
  detail::check_floating(weight, op, "weight");
  detail::check_integer(ids, op, "ids");
  LORA_CHECK(weight.rank() == 2, "embedding: weight has shape {}, expected [V, C]", weight.shape().str());
  LORA_CHECK(ids.device() == weight.device(), "embedding: ids are on {} but the weight is on {}", ids.device().str(),
             weight.device().str());
  const int64_t vocab = weight.size(0), cols = weight.size(1), n = ids.numel();

  std::vector<int64_t> out_dims = ids.shape().dims();
  out_dims.push_back(cols);
  Tensor out = detail::empty_like(weight, Shape(out_dims));  // [..., C]
  Tensor ids_flat = ids.view({n});                           // [N]
  Tensor out2 = out.view({n, cols});
  kernels::run<kernels::EmbeddingForward>(weight.device(), weight, ids_flat, out2);

  if (OpRecord rec(embedding_op(), {weight}); rec) {
    Tensor ids_saved = rec.save(ids_flat);
    rec.finish(out, [ids_saved, vocab, cols, n](const Tensor& grad_out, GradSink& g) {
      Tensor grad_w = detail::zeros_like(grad_out, {vocab, cols});  // [V, C]: rows never looked up stay 0
      kernels::run<kernels::EmbeddingBackward>(grad_out.device(), ids_saved, grad_out.view({n, cols}), grad_w);
      g.set(0, grad_w);
    });
  }
  return out;
}

Tensor quantized_embedding(const std::shared_ptr<const QuantizedWeight>& weight, const Tensor& ids) {
  constexpr const char* op = "quantized_embedding";
  LORA_CHECK(weight != nullptr, "{}: no table", op);
  const QuantizedWeight& w = *weight;
  detail::check_integer(ids, op, "ids");
  LORA_CHECK(ids.device() == w.device(), "{}: ids are on {} but the table is on {}", op, ids.device().str(),
             w.device().str());
  const int64_t n = ids.numel();
  std::vector<int64_t> dims = ids.shape().dims();
  dims.push_back(w.cols);
  Tensor out = Tensor::empty(Shape(dims), DType::F32, ids.device());  // [..., C]
  Tensor out2 = out.view({n, w.cols});
  kernels::run<kernels::QuantizedGatherRows>(ids.device(), w, ids.view({n}), out2);
  return out;
}

}  // namespace lora::ops
