// Matrix products: batched matmul with transpose flags, and linear (x W^T + b), forward and backward.
//
// For C = op(A) op(B):   dA = dC op(B)^T   and   dB = op(A)^T dC.
// B is saved only when A needs a gradient, and A only when B needs one: a frozen weight costs no saved
// activation and no weight-gradient gemm.
#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {

LORA_REGISTER_OP(matmul_op, "matmul");
LORA_REGISTER_OP(linear_op, "linear");

using detail::empty_like;

// Leading ("batch") dimensions of a tensor of rank >= 2.
Shape batch_dims(const Tensor& t) {
  return Shape(std::vector<int64_t>(t.shape().dims().begin(), t.shape().dims().end() - 2));
}

struct MatmulPlan {
  int64_t batch, m, n, k;
  bool shared_b;  // b is one matrix used for every batch entry
  Shape out_shape;
};

MatmulPlan plan_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  LORA_CHECK(a.rank() >= 2 && b.rank() >= 2, "matmul: inputs need at least 2 axes, got {} and {}", a.shape().str(),
             b.shape().str());
  MatmulPlan p;
  p.m = ta ? a.size(-1) : a.size(-2);
  const int64_t ka = ta ? a.size(-2) : a.size(-1);
  p.k = tb ? b.size(-1) : b.size(-2);
  p.n = tb ? b.size(-2) : b.size(-1);
  LORA_CHECK(ka == p.k, "matmul: inner dimensions differ: {}{} x {}{}", a.shape().str(), ta ? "^T" : "",
             b.shape().str(), tb ? "^T" : "");
  p.shared_b = b.rank() == 2;
  const Shape a_batch = batch_dims(a);
  if (!p.shared_b && batch_dims(b) != a_batch) {
    LORA_FAIL("matmul: batch dimensions differ: {} and {} (b must be 2-D or have a's leading dimensions)",
              a.shape().str(), b.shape().str());
  }
  p.batch = a_batch.numel();
  std::vector<int64_t> dims = a_batch.dims();
  dims.push_back(p.m);
  dims.push_back(p.n);
  p.out_shape = Shape(std::move(dims));
  return p;
}

// C = alpha op(A) op(B) + beta C, batched with the given strides.
void run_gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool ta,
              bool tb, int64_t stride_a, int64_t stride_b, double beta = 0.0) {
  GemmShape s;
  s.batch = batch, s.m = m, s.n = n, s.k = k, s.trans_a = ta, s.trans_b = tb;
  s.stride_a = stride_a, s.stride_b = stride_b, s.stride_c = m * n, s.beta = beta;
  backend_for(a).gemm(a, b, c, s);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  detail::check_floating(a, "matmul", "a");
  detail::check_floating(b, "matmul", "b");
  detail::check_same_device_dtype(a, b, "matmul");
  const MatmulPlan p = plan_matmul(a, b, ta, tb);
  Tensor out = empty_like(a, p.out_shape);
  const int64_t sb = p.shared_b ? 0 : p.k * p.n;
  run_gemm(a, b, out, p.batch, p.m, p.n, p.k, ta, tb, p.m * p.k, sb);

  if (OpRecord rec(matmul_op(), {a, b}); rec) {
    Tensor a_saved = rec.needs_grad(1) ? rec.save(a) : Tensor();
    Tensor b_saved = rec.needs_grad(0) ? rec.save(b) : Tensor();
    const Shape a_shape = a.shape(), b_shape = b.shape();
    rec.finish(out, [=](const Tensor& g, autograd::GradSink& grads) {
      // g: [batch..., m, n]
      if (grads.needs_grad(0)) {
        Tensor ga = empty_like(g, a_shape);
        if (!ta) {  // dA[m,k] = dC[m,n] op(B)^T[n,k]
          run_gemm(g, b_saved, ga, p.batch, p.m, p.k, p.n, false, !tb, p.m * p.n, sb);
        } else {  // dA stored [k,m] = op(B)[k,n] dC^T[n,m]
          run_gemm(b_saved, g, ga, p.batch, p.k, p.m, p.n, tb, true, sb, p.m * p.n);
        }
        grads.set(0, ga);
      }
      if (grads.needs_grad(1)) {
        Tensor gb = empty_like(g, b_shape);
        if (p.shared_b && !ta) {
          // Every batch entry multiplies the same B: fold the batch into the rows (one gemm).
          const int64_t rows = p.batch * p.m;
          if (!tb)
            run_gemm(a_saved, g, gb, 1, p.k, p.n, rows, true, false, 0, 0);  // dB[k,n] = A^T dC
          else
            run_gemm(g, a_saved, gb, 1, p.n, p.k, rows, true, false, 0, 0);  // dB[n,k] = dC^T A
        } else if (p.shared_b) {
          // Sum over the batch with beta = 1 after the first entry.
          for (int64_t i = 0; i < p.batch; ++i) {
            const Tensor ai = a_saved.view({p.batch, p.m * p.k}).narrow_rows(i, 1);
            const Tensor gi = g.view({p.batch, p.m * p.n}).narrow_rows(i, 1);
            const double beta = i == 0 ? 0.0 : 1.0;
            if (!tb)
              run_gemm(ai, gi, gb, 1, p.k, p.n, p.m, !ta, false, 0, 0, beta);
            else
              run_gemm(gi, ai, gb, 1, p.n, p.k, p.m, true, ta, 0, 0, beta);
          }
        } else if (!tb) {  // dB[k,n] = op(A)^T[k,m] dC[m,n]
          run_gemm(a_saved, g, gb, p.batch, p.k, p.n, p.m, !ta, false, p.m * p.k, p.m * p.n);
        } else {  // dB stored [n,k] = dC^T[n,m] op(A)[m,k]
          run_gemm(g, a_saved, gb, p.batch, p.n, p.k, p.m, true, ta, p.m * p.n, p.m * p.k);
        }
        grads.set(1, gb);
      }
    });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  detail::check_floating(x, "linear", "input");
  detail::check_floating(weight, "linear", "weight");
  detail::check_same_device_dtype(x, weight, "linear");
  LORA_CHECK(weight.rank() == 2, "linear: weight must be [out, in], got {}", weight.shape().str());
  LORA_CHECK(x.rank() >= 1 && x.size(-1) == weight.size(1),
             "linear: input {} does not match weight {} (expected [..., {}])", x.shape().str(), weight.shape().str(),
             weight.size(1));
  const int64_t in = weight.size(1), out_features = weight.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  if (bias.defined()) {
    detail::check_same_device_dtype(x, bias, "linear");
    LORA_CHECK(bias.rank() == 1 && bias.size(0) == out_features,
               "linear: bias {} does not match weight {} (expected [{}])", bias.shape().str(), weight.shape().str(),
               out_features);
  }
  std::vector<int64_t> dims = x.shape().dims();
  dims.back() = out_features;
  Tensor y = empty_like(x, Shape(dims));
  // y = b (broadcast over rows), then y += x W^T in the gemm (beta = 1).
  if (bias.defined()) backend_for(x).expand(bias, y, /*accumulate=*/false);
  run_gemm(x, weight, y, 1, rows, out_features, in, false, true, 0, 0, bias.defined() ? 1.0 : 0.0);

  if (OpRecord rec(linear_op(), {x, weight, bias}); rec) {
    Tensor x_saved = rec.needs_grad(1) ? rec.save(x) : Tensor();       // for dW only
    Tensor w_saved = rec.needs_grad(0) ? rec.save(weight) : Tensor();  // for dx only
    const Shape x_shape = x.shape(), w_shape = weight.shape();
    rec.finish(y, [=](const Tensor& g, autograd::GradSink& grads) {
      // g: [rows, out]
      if (grads.needs_grad(0)) {  // dx[rows,in] = g[rows,out] W[out,in]
        Tensor gx = empty_like(g, x_shape);
        run_gemm(g, w_saved, gx, 1, rows, in, out_features, false, false, 0, 0);
        grads.set(0, gx);
      }
      if (grads.needs_grad(1)) {  // dW[out,in] = g^T[out,rows] x[rows,in]
        Tensor gw = empty_like(g, w_shape);
        run_gemm(g, x_saved, gw, 1, out_features, in, rows, true, false, 0, 0);
        grads.set(1, gw);
      }
      if (grads.size() > 2 && grads.needs_grad(2)) {  // db = sum over rows of g
        grads.set(2, detail::reduce_to_shape(g, Shape{out_features}));
      }
    });
  }
  return y;
}

}  // namespace lora::ops
