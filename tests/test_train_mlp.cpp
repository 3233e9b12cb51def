// End-to-end training: a 2-layer MLP (Linear -> tanh -> Linear) fitted with optim::SGD to a nonlinear function.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "nn/linear.h"
#include "optim/sgd.h"

using namespace lora;

TEST_CASE("a 2-layer MLP trained with SGD fits a nonlinear function", "[train]") {
  // Data: 256 points x ~ U[-1, 1]^2, target y = sin(3 x0) x1.
  // y has zero correlation with x0, x1 and the constant (sin(3 x0) is odd, x1 has mean 0), so the best
  // affine predictor, and the best constant (what training only the output bias would reach), explains
  // essentially none of its variance: their loss stays near var(y). Getting below 10% of var(y) needs the
  // hidden layer to learn features, i.e. correct gradients through both Linears and the tanh.
  Generator gen(42);
  const int64_t n = 256, hidden = 32;
  const Tensor x = Tensor::uniform({n, 2}, gen, -1.0, 1.0);  // [n, 2]
  std::vector<float> xs = x.to_vector<float>(), ys(static_cast<size_t>(n));
  double y_mean = 0.0, y_var = 0.0;
  for (int64_t i = 0; i < n; ++i) y_mean += ys[i] = std::sin(3.0f * xs[2 * i]) * xs[2 * i + 1];
  y_mean /= double(n);
  for (float v : ys) y_var += (v - y_mean) * (v - y_mean) / double(n);
  const Tensor y = Tensor::from_vector(ys, {n, 1});  // [n, 1]

  auto fc1 = std::make_shared<nn::Linear>(2, hidden, true, gen);
  auto fc2 = std::make_shared<nn::Linear>(hidden, 1, true, gen);
  std::vector<Tensor> params = fc1->parameters();
  for (const Tensor& p : fc2->parameters()) params.push_back(p);
  optim::SGD sgd(params, {.lr = 0.1, .momentum = 0.9});

  auto loss_fn = [&] { return ops::mean(ops::square(fc2->forward(ops::tanh(fc1->forward(x))) - y)); };
  double initial = 0.0;
  {
    NoGradGuard no_grad;
    initial = loss_fn().item();
  }
  double final_loss = initial;
  for (int step = 0; step < 600; ++step) {  // full batch
    sgd.zero_grad();
    Tensor loss = loss_fn();
    final_loss = loss.item();
    backward(loss);
    sgd.step();
  }
  INFO("initial loss " << initial << ", final loss " << final_loss << ", var(y) " << y_var);
  REQUIRE(std::isfinite(final_loss));
  REQUIRE(final_loss < 0.1 * y_var);
  REQUIRE(final_loss < 0.1 * initial);
}
