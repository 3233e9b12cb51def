// Shape: the dimensions of a dense row-major tensor, with the helpers ops need to reason about them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace lora {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t numel() const;
  // Dimension i; negative i counts from the end (-1 is the last).
  int64_t operator[](int i) const { return dims_[normalize_axis(i)]; }
  int64_t& operator[](int i) { return dims_[normalize_axis(i)]; }
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape&) const = default;

  // Product of the dimensions before `axis` and after it: a tensor is [outer, dims[axis], inner].
  int64_t outer(int axis) const;
  int64_t inner(int axis) const;
  // Maps a possibly negative axis to [0, rank); throws lora::Error when out of range.
  int normalize_axis(int axis) const;

  std::string str() const;  // "[2, 3, 4]"

 private:
  std::vector<int64_t> dims_;
};

// The numpy broadcast of two shapes; throws lora::Error naming `op` and both shapes when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace lora
