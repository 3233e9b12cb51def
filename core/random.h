// Random numbers: a seeded sequential Generator for initialisation, and a counter-based hash for kernels
// (dropout) that must produce the same stream on any device and in backward without storing a mask.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LORA_HOST_DEVICE __host__ __device__
#else
#define LORA_HOST_DEVICE
#endif

namespace lora {

// splitmix64: a tiny, well-mixed bijection of 64-bit integers (used as the counter-based generator).
LORA_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform float in [0, 1) for element `counter` of the stream `seed`: the same on CPU and GPU.
LORA_HOST_DEVICE inline float counter_uniform(uint64_t seed, uint64_t counter) {
  const uint64_t bits = splitmix64(splitmix64(seed) ^ counter);
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);  // top 24 bits
}

// Everything a Generator's future output depends on, for checkpoints.
struct GeneratorState {
  uint64_t s[4] = {};
  bool has_spare_normal = false;
  double spare_normal = 0.0;
};

// Sequential generator (xoshiro256**) seeded through splitmix64. Not thread-safe: one per thread or use.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { this->seed(seed); }
  void seed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : state_) s = x = splitmix64(x);
    has_spare_normal_ = false;
  }
  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Standard normal (Box-Muller, both values used).
  double normal() {
    if (has_spare_normal_) {
      has_spare_normal_ = false;
      return spare_normal_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_normal_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_normal_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return next_u64() % n; }

  GeneratorState state() const {
    GeneratorState st;
    for (int i = 0; i < 4; ++i) st.s[i] = state_[i];
    st.has_spare_normal = has_spare_normal_;
    st.spare_normal = spare_normal_;
    return st;
  }
  void set_state(const GeneratorState& st) {
    for (int i = 0; i < 4; ++i) state_[i] = st.s[i];
    has_spare_normal_ = st.has_spare_normal;
    spare_normal_ = st.spare_normal;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
  bool has_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

}  // namespace lora
