// Shape and layout ops: reshape (shares storage), permute/transpose (copies), slice, split, concat.
// Without gradients (inference), a permute that keeps the elements in order (it moves only axes of size 1:
// a decode step's [B, 1, H, D] heads at B = 1) is a reshape, and a slice that is one contiguous block (nothing
// outside its axis but size 1) is a view: the decode step allocates nothing for them. Training keeps the
// copies, so what the tape saves is unchanged.
#include <numeric>

#include "autograd/ops.h"
#include "autograd/ops/op_utils.h"

namespace lora::ops {
namespace {
LORA_REGISTER_OP(reshape_op, "reshape");
LORA_REGISTER_OP(permute_op, "permute");
LORA_REGISTER_OP(slice_op, "slice");
LORA_REGISTER_OP(concat_op, "concat");
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  detail::check_defined(x, "reshape", "input");
  Tensor out = x.view(shape);
  if (OpRecord rec(reshape_op(), {x}); rec) {
    const Shape x_shape = x.shape();
    rec.finish(out, [x_shape](const Tensor& g, autograd::GradSink& grads) { grads.set(0, g.view(x_shape)); });
  }
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int>& dims) {
  detail::check_floating(x, "permute", "input");
  const int rank = x.rank();
  LORA_CHECK(static_cast<int>(dims.size()) == rank, "permute: {} axes given for input {}", dims.size(),
             x.shape().str());
  std::vector<int> normalized(rank), inverse(rank, -1);
  std::vector<int64_t> out_dims(rank);
  for (int i = 0; i < rank; ++i) {
    normalized[i] = x.shape().normalize_axis(dims[i]);
    LORA_CHECK(inverse[normalized[i]] < 0, "permute: axis {} appears twice", dims[i]);
    inverse[normalized[i]] = i;
    out_dims[i] = x.shape().dims()[normalized[i]];
  }
  if (!GradMode::is_enabled()) {
    int last = -1;  // the input axis of the last output axis of size > 1 so far
    bool in_order = true;
    for (int i = 0; i < rank && in_order; ++i) {
      if (out_dims[i] == 1) continue;
      in_order = normalized[i] > last;
      last = normalized[i];
    }
    if (in_order) return x.view(Shape(out_dims));
  }
  Tensor out = detail::empty_like(x, Shape(out_dims));
  backend_for(x).permute(x, out, normalized);
  if (OpRecord rec(permute_op(), {x}); rec) {
    const Shape x_shape = x.shape();
    rec.finish(out, [x_shape, inverse](const Tensor& g, autograd::GradSink& grads) {
      Tensor gx = detail::empty_like(g, x_shape);
      backend_for(g).permute(g, gx, inverse);
      grads.set(0, gx);
    });
  }
  return out;
}

Tensor transpose(const Tensor& x, int axis0, int axis1) {
  std::vector<int> dims(x.rank());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[x.shape().normalize_axis(axis0)], dims[x.shape().normalize_axis(axis1)]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int axis, int64_t start, int64_t end) {
  detail::check_floating(x, "slice", "input");
  const int a = x.shape().normalize_axis(axis);
  const int64_t n = x.shape()[a];
  LORA_CHECK(0 <= start && start <= end && end <= n, "slice: [{}, {}) is out of range for axis {} of {}", start, end,
             axis, x.shape().str());
  const int64_t outer = x.shape().outer(a), inner = x.shape().inner(a), count = end - start;
  std::vector<int64_t> dims = x.shape().dims();
  dims[a] = count;
  if (!GradMode::is_enabled() && outer == 1 && count > 0) {
    return x.view({n, inner}).narrow_rows(start, count).view(Shape(dims));
  }
  Tensor out = detail::empty_like(x, Shape(dims));
  backend_for(x).copy_block(x, out, outer, n, count, inner, start, 0, count, false);
  if (OpRecord rec(slice_op(), {x}); rec) {
    const Shape x_shape = x.shape();
    rec.finish(out, [=](const Tensor& g, autograd::GradSink& grads) {
      Tensor gx = detail::zeros_like(g, x_shape);
      backend_for(g).copy_block(g, gx, outer, count, n, inner, 0, start, count, false);
      grads.set(0, gx);
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int axis, const std::vector<int64_t>& sizes) {
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  LORA_CHECK(total == x.shape()[axis], "split: sizes add up to {}, but axis {} of {} has {}", total, axis,
             x.shape().str(), x.shape()[axis]);
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(x, axis, start, start + s));
    start += s;
  }
  return parts;
}

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  LORA_CHECK(!xs.empty(), "concat: no inputs");
  const Tensor& first = xs[0];
  detail::check_floating(first, "concat", "input 0");
  const int a = first.shape().normalize_axis(axis);
  std::vector<int64_t> dims = first.shape().dims();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    detail::check_same_device_dtype(first, xs[i], "concat");
    LORA_CHECK(xs[i].rank() == first.rank(), "concat: input {} has shape {}, input 0 has {}", i, xs[i].shape().str(),
               first.shape().str());
    for (int d = 0; d < first.rank(); ++d) {
      LORA_CHECK(d == a || xs[i].shape().dims()[d] == dims[d],
                 "concat: input {} has shape {}, which differs from input 0 {} outside axis {}", i, xs[i].shape().str(),
                 first.shape().str(), axis);
    }
    total += xs[i].shape()[a];
  }
  dims[a] = total;
  const int64_t outer = first.shape().outer(a), inner = first.shape().inner(a);
  Tensor out = detail::empty_like(first, Shape(dims));
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    const int64_t n = x.shape()[a];
    backend_for(x).copy_block(x, out, outer, n, total, inner, 0, offset, n, false);
    offsets.push_back(offset);
    offset += n;
  }
  if (OpRecord rec(concat_op(), xs); rec) {
    std::vector<Shape> shapes;
    for (const Tensor& x : xs) shapes.push_back(x.shape());
    rec.finish(out, [=](const Tensor& g, autograd::GradSink& grads) {
      for (size_t i = 0; i < shapes.size(); ++i) {
        if (!grads.needs_grad(i)) continue;
        const int64_t n = shapes[i][a];
        Tensor gi = detail::empty_like(g, shapes[i]);
        backend_for(g).copy_block(g, gi, outer, total, n, inner, offsets[i], 0, n, false);
        grads.set(i, gi);
      }
    });
  }
  return out;
}

}  // namespace lora::ops
