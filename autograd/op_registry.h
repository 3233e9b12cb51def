// The op registry: every differentiable op, registered where it is defined. OpRecord (tape.h) takes an
// OpDef, and only register_op makes one, so an op that records on the tape is in the registry; the
// registry tests (tests/test_op_registry.cpp) require a float64 gradcheck case and a parity case for each.
//
// In an op file, at namespace scope (in an anonymous namespace):
//   LORA_REGISTER_OP(layer_norm_op, "layer_norm");   // defines `const OpDef& layer_norm_op()`
//   ... OpRecord rec(layer_norm_op(), {x, weight, bias}); ...
// The registration runs when the program starts (programs and tests link the library whole-archive, so no
// op file is left out), and on first use in any case.
#pragma once

#include <string_view>
#include <vector>

namespace lora::autograd {

class OpDef {
 public:
  std::string_view name() const { return name_; }
  std::string_view file() const { return file_; }  // the source file that registered it (__FILE__)
  OpDef(const OpDef&) = delete;
  OpDef& operator=(const OpDef&) = delete;

 private:
  friend const OpDef& register_op(const char* name, const char* file);
  OpDef(const char* name, const char* file) : name_(name), file_(file) {}
  const char* name_;
  const char* file_;
};

// Adds an op to the registry and returns its definition (which lives as long as the program). Registering
// a name twice is a lora::Error.
const OpDef& register_op(const char* name, const char* file);
// Every registered op, sorted by name.
std::vector<const OpDef*> registered_ops();
// The op registered under `name`, or nullptr.
const OpDef* find_op(std::string_view name);

}  // namespace lora::autograd

#define LORA_REGISTER_OP(fn, name)                                                             \
  const ::lora::autograd::OpDef& fn() {                                                        \
    static const ::lora::autograd::OpDef& def = ::lora::autograd::register_op(name, __FILE__); \
    return def;                                                                                \
  }                                                                                            \
  [[maybe_unused]] const ::lora::autograd::OpDef& fn##_at_startup = fn()
