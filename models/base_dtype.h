// --base-dtype: the format a program holds its frozen base's linear weights in. Besides the formats of
// core/quantized.h, "auto": a GGUF file's own (models/gguf/base_blocks.h: Q8_0 blocks stay q8_0, Q4_0 stay
// q4_0, K-quants go to the nearest of the two), a compact checkpoint's as stored (models/compact_checkpoint.h),
// and f32 for anything else.
#pragma once

#include <string>

#include "core/quantized.h"

namespace lora::models {

struct BaseDtype {
  bool automatic = false;
  QuantFormat format = QuantFormat::F32;  // when not automatic

  // "auto" or a format name; anything else is a lora::Error naming `flag` and the choices.
  static BaseDtype parse(const std::string& text, const std::string& flag = "--base-dtype") {
    if (text == "auto") return {true, QuantFormat::F32};
    try {
      return {false, parse_quant_format(text, flag)};
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (or auto: a GGUF file's or compact checkpoint's own formats)");
    }
  }
  // Whether the frozen base may differ from f32 (so a program freezes it and quantizes what loading left).
  bool compact() const { return automatic || format != QuantFormat::F32; }
  std::string name() const { return automatic ? "auto" : std::string(quant_format_name(format)); }
};

// The one format a --base-dtype stands for with these --weights (and --config): itself, or for auto the format
// most of a GGUF file's or a compact checkpoint's linear weights take (f32 for a float checkpoint or none). What
// the step's memory is predicted with, and what is applied after loading to the layers loading left in f32
// (none, for those files).
QuantFormat resolved_base_format(const BaseDtype& base, const std::string& weights, const std::string& config_arg = "");

// The formats a compact base holds the token embedding and an untied output head in: a GGUF file's quantized
// tables stay compact (models/gguf/base_blocks.h, table_format), a compact checkpoint's as stored; everything
// else is f32 (dense).
struct CompactTables {
  QuantFormat embedding = QuantFormat::F32, head = QuantFormat::F32;
};
CompactTables compact_tables(const BaseDtype& base, const std::string& weights, const std::string& config_arg = "");

}  // namespace lora::models
