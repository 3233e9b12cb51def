// Wall-clock timing for progress lines and benchmarks: seconds since a steady-clock time point, the seconds a
// call takes, and the median of repeated timings (what benchmarks report: robust to one slow repeat).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace lora {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Seconds one call of f() takes.
template <class F>
double seconds_of(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return seconds_since(start);
}

// The middle value; the mean of the two middle ones for an even count; 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace lora
