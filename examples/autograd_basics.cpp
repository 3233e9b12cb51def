// autograd_basics: rung 1 of the ladder. A few tensors through the tape: the graph it records (each node's
// op, input and output shapes, what it saved for backward and in which memory category), the gradients
// backward() leaves in .grad, and one gradient checked twice: by the chain rule written out by hand, and
// by finite differences. Then the same graph with the weight frozen, to see what the tape stops saving.
//
//   autograd_basics                      # float64, 4 rows, seed 0
//   autograd_basics --rows 8 --seed 3
//
// Exits non-zero when autograd, the hand-written chain rule and finite differences disagree.
//
// Read next: autograd/tape.h (OpRecord, Node, backward), autograd/ops/matmul.cpp (what linear saves and
// why), autograd/ops/unary.cpp (tanh saves its output), then examples/train_mlp.cpp (rung 2) and
// docs/training-step.md (the same tape on a GPT-2).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/ops.h"

using namespace lora;

namespace {

// Names for the tensors of this example, by tape id and by storage (a saved tensor may be a view).
struct Names {
  std::map<uint64_t, std::string> by_id;
  std::map<const Storage*, std::string> by_storage;
  void add(const Tensor& t, const std::string& name) {
    by_id[t.impl()->id] = name;
    by_storage[t.storage().get()] = name;
  }
  std::string of(uint64_t id) const { return by_id.count(id) ? by_id.at(id) : "?"; }
  std::string of(const Tensor& t) const {
    return by_storage.count(t.storage().get()) ? by_storage.at(t.storage().get()) : "?";
  }
};

// The tape as a table: one row per node, in the order the ops ran.
void print_tape(const Names& names) {
  const auto& nodes = autograd::Tape::current().nodes();
  size_t total = 0;
  for (const auto& n : nodes) total += n.saved_bytes();
  fmt::print("The tape: {} nodes, {} B saved for backward\n", nodes.size(), total);
  fmt::print("  {:<3} {:<8} {:<46} {:<12} {:>6}  {}\n", "#", "op", "inputs (shape, needs grad?)", "output", "saved",
             "what it saved (memory category)");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const autograd::Node& n = nodes[i];
    std::string inputs, saved;
    for (const auto& in : n.inputs) {
      if (in.id == 0) continue;  // an undefined optional input (no bias)
      inputs += fmt::format("{}{} {}{}", inputs.empty() ? "" : ", ", names.of(in.id), in.shape.str(),
                            in.needs_grad ? " grad" : "");
    }
    for (const Tensor& t : n.saved) {
      saved += fmt::format("{}{} ({})", saved.empty() ? "" : ", ", names.of(t), category_name(t.storage()->category()));
    }
    fmt::print("  {:<3} {:<8} {:<46} {:<12} {:>4} B  {}\n", i, n.op->name(), inputs,
               names.of(n.output_id) + " " + n.output_shape.str(), n.saved_bytes(), saved.empty() ? "nothing" : saved);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Autograd basics: a few tensors through the tape, the graph, the gradients, one checked by hand."};
  int64_t rows = 4;
  uint64_t seed = 0;
  double eps = 1e-6;
  app.add_option("--rows", rows, "rows of the input x [rows, 3]")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--seed", seed, "seed of the random tensors")->capture_default_str();
  app.add_option("--eps", eps, "finite-difference step")->check(CLI::Range(1e-10, 1e-2))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    // ---- The tensors: float64, so that finite differences agree with the chain rule to ~1e-10.
    Generator gen(seed);
    const int64_t N = rows, in = 3, out = 2;
    Tensor x = Tensor::uniform({N, in}, gen, -1, 1, DType::F64);    // [N, 3] input: no gradient wanted
    Tensor W = Tensor::uniform({out, in}, gen, -1, 1, DType::F64);  // [2, 3] weight
    Tensor b = Tensor::uniform({out}, gen, -1, 1, DType::F64);      // [2]    bias
    Tensor y = Tensor::uniform({N, out}, gen, -1, 1, DType::F64);   // [N, 2] targets
    W.set_requires_grad(true);
    b.set_requires_grad(true);
    Names names;
    names.add(x, "x"), names.add(W, "W"), names.add(b, "b"), names.add(y, "y");

    // ---- Forward: every op below records one node on this thread's tape (autograd/tape.h).
    //   z = x W^T + b     h = tanh(z)     d = h - y     L = mean(d^2) = (1 / (N 2)) sum_ij d_ij^2
    auto forward = [&] {
      Tensor z = ops::linear(x, W, b);  // [N, 2]
      Tensor h = ops::tanh(z);          // [N, 2]
      Tensor d = h - y;                 // [N, 2]
      Tensor sq = ops::square(d);       // [N, 2]
      Tensor L = ops::mean(sq);         // []
      names.add(z, "z"), names.add(h, "h"), names.add(d, "d"), names.add(sq, "d^2"), names.add(L, "L");
      return std::pair{L, h};
    };
    auto [L, h] = forward();
    fmt::print("Forward: L = mean((tanh(x W^T + b) - y)^2) = {:.10f}\n\n", L.item());
    print_tape(names);
    fmt::print(
        "\n  linear saved x (for dL/dW = g^T x) but not W: x needs no gradient, so dL/dx is never computed.\n"
        "  tanh saved its output h (tanh' = 1 - h^2); square saved its input d ((d^2)' = 2 d); sub and mean\n"
        "  save nothing (their derivatives are constants). What the tape saves is charged to 'activations'.\n\n");

    // ---- Backward: walks the nodes in reverse, leaves dL/dW and dL/db in .grad, empties the tape.
    backward(L);
    fmt::print("backward(L): the tape now holds {} nodes.\n", autograd::Tape::current().size());
    fmt::print("  dL/dW = {}\n  dL/db = {}\n  x.grad defined? {} (x does not require a gradient)\n\n", W.grad().str(),
               b.grad().str(), x.grad().defined() ? "yes" : "no");

    // ---- dL/dW by hand. With g_ij = dL/dz_ij:
    //   dL/dd_ij = 2 d_ij / (2N)             (mean over N*2 elements of d^2)
    //   dL/dz_ij = dL/dd_ij * (1 - h_ij^2)   (tanh' = 1 - tanh^2)
    //   dL/dW_jk = sum_i dL/dz_ij * x_ik     (z_ij = sum_k x_ik W_jk + b_j)
    const std::vector<double> xs = x.to_vector<double>(), ys = y.to_vector<double>(), hs = h.to_vector<double>();
    const std::vector<double> autograd_dW = W.grad().to_vector<double>();
    std::vector<double> hand(static_cast<size_t>(out * in), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t j = 0; j < out; ++j) {
        const double hij = hs[i * out + j], dij = hij - ys[i * out + j];
        const double g = 2.0 * dij / static_cast<double>(N * out) * (1.0 - hij * hij);
        for (int64_t k = 0; k < in; ++k) hand[j * in + k] += g * xs[i * in + k];
      }
    }
    // ---- And by central finite differences: dL/dW_jk ~ (L(W + eps e_jk) - L(W - eps e_jk)) / (2 eps).
    auto loss_at = [&](int64_t jk, double delta) {
      NoGradGuard no_grad;  // nothing recorded
      Tensor Wd = W.detach().clone();
      Wd.set({jk / in, jk % in}, Wd.at({jk / in, jk % in}) + delta);
      return ops::mean(ops::square(ops::tanh(ops::linear(x, Wd, b)) - y)).item();
    };
    fmt::print("dL/dW checked: autograd vs the chain rule by hand vs finite differences (eps {:g})\n", eps);
    fmt::print("  {:<7} {:>16} {:>16} {:>16} {:>10} {:>10}\n", "element", "autograd", "by hand", "finite diff",
               "|a - h|", "|a - fd|");
    double worst_hand = 0, worst_fd = 0;
    for (int64_t jk = 0; jk < out * in; ++jk) {
      const double a = autograd_dW[jk], fd = (loss_at(jk, eps) - loss_at(jk, -eps)) / (2 * eps);
      worst_hand = std::max(worst_hand, std::abs(a - hand[jk]));
      worst_fd = std::max(worst_fd, std::abs(a - fd));
      fmt::print("  W[{},{}]  {:>16.10f} {:>16.10f} {:>16.10f} {:>10.1e} {:>10.1e}\n", jk / in, jk % in, a, hand[jk],
                 fd, std::abs(a - hand[jk]), std::abs(a - fd));
    }

    // ---- The same graph with W frozen: linear no longer needs x, so it saves nothing.
    W.set_requires_grad(false);
    W.set_grad(Tensor());
    b.set_grad(Tensor());
    auto frozen = forward();
    fmt::print("\nThe same forward with W frozen (requires_grad false): only b trains.\n");
    print_tape(names);
    fmt::print(
        "\n  linear now saves nothing: dL/db = sum over rows of g needs neither x nor W. This is where LoRA's\n"
        "  savings come from: a frozen weight costs no gradient, no optimizer state, no saved input.\n");
    autograd::Tape::current().clear();  // no backward wanted: drop the nodes and what they saved
    (void)frozen;

    // Both checks must agree to ~1e-9: the hand formula exactly, finite differences to O(eps^2) + rounding.
    const bool ok = worst_hand < 1e-12 && worst_fd < 1e-7;
    fmt::print("\nlargest difference: {:.1e} from the hand-written chain rule, {:.1e} from finite differences: {}\n",
               worst_hand, worst_fd, ok ? "agree" : "DISAGREE");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
