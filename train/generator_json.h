// A Generator's state as JSON (for the data positions kept in training checkpoints), and back.
#pragma once

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/random.h"

namespace lora::train {

inline nlohmann::json generator_to_json(const GeneratorState& g) {
  return {{"s", {g.s[0], g.s[1], g.s[2], g.s[3]}},
          {"has_spare_normal", g.has_spare_normal},
          {"spare_normal", g.spare_normal}};
}

// Throws lora::Error on anything but what generator_to_json wrote.
inline GeneratorState generator_from_json(const nlohmann::json& j) {
  GeneratorState g;
  try {
    LORA_CHECK(j.at("s").is_array() && j.at("s").size() == 4, "expected 4 state words");
    for (size_t i = 0; i < 4; ++i) g.s[i] = j.at("s").at(i).get<uint64_t>();
    g.has_spare_normal = j.at("has_spare_normal").get<bool>();
    g.spare_normal = j.at("spare_normal").get<double>();
  } catch (const nlohmann::json::exception& e) {
    LORA_FAIL("a random generator's state is malformed ({})", e.what());
  }
  return g;
}

}  // namespace lora::train
