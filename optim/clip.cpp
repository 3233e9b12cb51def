// Gradient clipping: the global norm through backend sum_squares, the scaling through unary MulScalar in place.
#include "optim/clip.h"

#include <cmath>

#include "backends/backend.h"
#include "core/error.h"

namespace lora::optim {

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  LORA_CHECK(max_norm >= 0.0, "clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  double sum_squares = 0.0;  // in double: sum over all gradients of g^2
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (g.defined()) sum_squares += backend_for(g).sum_squares(g);
  }
  const double norm = std::sqrt(sum_squares);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double scale = max_norm / (norm + 1e-6);  // PyTorch's clip coefficient
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) backend_for(g).unary(UnaryOp::MulScalar, g, g, scale);
  }
  return norm;
}

}  // namespace lora::optim
