// Gradient norms and clipping: the norm through backend sum_squares, the scaling through unary MulScalar.
#include "optim/clip.h"

#include <cmath>

#include "backends/backend.h"
#include "core/error.h"

namespace lora::optim {

double grad_norm(const std::vector<Tensor>& params) {
  double sum_squares = 0.0;  // in double: sum over all gradients of g^2 (finite for any finite float32 values)
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (g.defined()) sum_squares += backend_for(g).sum_squares(g);
  }
  return std::sqrt(sum_squares);
}

int64_t first_nonfinite_gradient(const std::vector<Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].grad();
    if (g.defined() && !std::isfinite(backend_for(g).sum_squares(g))) return static_cast<int64_t>(i);
  }
  return -1;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, bool error_if_nonfinite,
                      const std::vector<std::string>& names) {
  LORA_CHECK(max_norm >= 0.0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) {
    if (!error_if_nonfinite) return norm;
    const int64_t i = first_nonfinite_gradient(params);
    const std::string which = i < 0                                    ? "?"
                              : i < static_cast<int64_t>(names.size()) ? "'" + names[i] + "'"
                                                                       : std::to_string(i);
    LORA_FAIL("clip_grad_norm: the gradient norm is {}: the gradient of parameter {} is not finite", norm, which);
  }
  if (norm <= max_norm) return norm;
  const double scale = max_norm / (norm + 1e-6);  // PyTorch's clip coefficient
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) backend_for(g).unary(UnaryOp::MulScalar, g, g, scale);
  }
  return norm;
}

}  // namespace lora::optim
