// lora::Error: the one exception type of the framework, and the checks that throw it.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace lora {

// Thrown for bad input: a message that names the file, tensor, op or flag and what was expected.
// Programs catch it in main(), print what(), and exit non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// LORA_CHECK(cond, "fmt {}", args...): throw lora::Error with a formatted message when cond is false.
#define LORA_CHECK(cond, ...)                                     \
  do {                                                            \
    if (!(cond)) throw ::lora::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

// Throw unconditionally with a formatted message.
#define LORA_FAIL(...) throw ::lora::Error(::fmt::format(__VA_ARGS__))

}  // namespace lora
