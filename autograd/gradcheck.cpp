// gradcheck: analytic vector-Jacobian products against central finite differences.
#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"

namespace lora::autograd {
namespace {

// L = sum(y * r), evaluated on the host in double.
double projected(const Tensor& y, const std::vector<double>& r) {
  const std::vector<double> values = y.to_vector<double>();
  double total = 0.0;
  for (size_t i = 0; i < values.size(); ++i) total += values[i] * r[i];
  return total;
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
  GradcheckResult result;
  for (const Tensor& t : inputs) {
    LORA_CHECK(!t.requires_grad() || t.is_leaf(), "gradcheck: inputs must be leaves");
  }

  // Analytic: backward with seed r.
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) const_cast<Tensor&>(t).set_grad(Tensor());
  }
  Tensor y = f(inputs);
  LORA_CHECK(y.requires_grad(), "gradcheck: the output does not depend on any input that requires grad");
  Generator gen(options.seed + 12345);
  Tensor r = Tensor::uniform(y.shape(), gen, -1.0, 1.0, y.dtype(), y.device());
  const std::vector<double> r_host = r.to_vector<double>();
  backward(y, r);

  int failures = 0;
  for (size_t which = 0; which < inputs.size(); ++which) {
    const Tensor& x = inputs[which];
    if (!x.requires_grad()) continue;
    const std::vector<double> analytic =
        x.grad().defined() ? x.grad().to_vector<double>() : std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
    // Numeric: perturb one element at a time (through a host round trip so any device works).
    for (int64_t i = 0; i < x.numel(); ++i) {
      Tensor flat = x.view({x.numel()});
      const double original = flat.at({i});
      double plus, minus;
      {
        NoGradGuard no_grad;
        flat.set({i}, original + options.eps);
        plus = projected(f(inputs), r_host);
        flat.set({i}, original - options.eps);
        minus = projected(f(inputs), r_host);
        flat.set({i}, original);
      }
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double error = std::abs(analytic[i] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (error > options.atol + options.rtol * std::abs(numeric)) {
        result.ok = false;
        if (++failures <= 5) {
          result.report += fmt::format("input {} element {}: analytic {:.10g}, numeric {:.10g}, error {:.3g}\n", which,
                                       i, analytic[i], numeric, error);
        }
      }
    }
  }
  if (failures > 5) result.report += fmt::format("... {} failing elements in all\n", failures);
  if (result.ok) result.report = fmt::format("ok (max abs error {:.3g})", result.max_abs_error);
  return result;
}

}  // namespace lora::autograd
