// Wall-clock timing for progress lines and benchmarks: seconds since a steady-clock time point.
#pragma once

#include <chrono>

namespace lora {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace lora
