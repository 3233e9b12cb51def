// GGUF tensors as compact base weights: the file's Q8_0/Q4_0 blocks kept, other types converted row by row.
#include "models/gguf/base_blocks.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/gguf_quants.h"
#include "core/half.h"
#include "models/gguf/arch.h"

namespace lora::models::gguf_io {
namespace {

bool is_block_format(QuantFormat f) {
  return f == QuantFormat::Q8_0 || f == QuantFormat::Q4_0;
}

// The file type whose blocks are the base format's, byte for byte.
bool same_blocks(gguf::TensorType type, QuantFormat format) {
  return (type == gguf::TensorType::Q8_0 && format == QuantFormat::Q8_0) ||
         (type == gguf::TensorType::Q4_0 && format == QuantFormat::Q4_0);
}

// Whether every block's fp16 scale is finite (the codes of Q8_0/Q4_0 are integers and always are).
bool scales_finite(const uint8_t* row, int64_t blocks, size_t block_bytes) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint16_t d;
    std::memcpy(&d, row + static_cast<size_t>(b) * block_bytes, sizeof d);
    if (!std::isfinite(half_to_float(d))) return false;
  }
  return true;
}

bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

QuantFormat auto_base_format(gguf::TensorType type) {
  using T = gguf::TensorType;
  switch (type) {
    case T::Q8_0:
    case T::Q6_K:
    case T::Q5_K:
    case T::Q5_0:
    case T::Q5_1:
      return QuantFormat::Q8_0;
    case T::Q4_0:
    case T::Q4_K:
    case T::Q4_1:
      return QuantFormat::Q4_0;
    default:
      return QuantFormat::F32;
  }
}

QuantFormat table_format(const gguf::TensorInfo& t) {
  if (t.ne.size() != 2 || t.ne[0] % kQuantBlock != 0) return QuantFormat::F32;
  return auto_base_format(t.type);
}

QuantFormat dominant_auto_format(const gguf::File& file) {
  std::map<QuantFormat, int64_t> elements;
  for (const gguf::TensorInfo& t : file.tensors()) {
    // The body's linear weights: 2-D tensors of the blocks (embeddings and the output head are not).
    if (t.ne.size() != 2 || !t.name.starts_with("blk.")) continue;
    elements[auto_base_format(t.type)] += t.elements();
  }
  QuantFormat best = QuantFormat::F32;
  int64_t most = -1;
  for (const auto& [format, n] : elements) {
    if (n > most) best = format, most = n;
  }
  return best;
}

BaseWeight base_weight_from_gguf(const gguf::File& file, const gguf::TensorInfo& t, QuantFormat format, int64_t heads) {
  LORA_CHECK(format != QuantFormat::F32, "GGUF file '{}': tensor '{}': f32 is not a compact format", file.path(),
             t.name);
  LORA_CHECK(t.ne.size() == 2 && t.ne[0] > 0 && t.ne[1] > 0,
             "GGUF file '{}': tensor '{}' is not a 2-D weight with rows (ne has {} dimensions)", file.path(), t.name,
             t.ne.size());
  const int64_t cols = t.ne[0], rows = t.ne[1];
  LORA_CHECK(!is_block_format(format) || cols % kQuantBlock == 0,
             "GGUF file '{}': tensor '{}' has rows of {} weights, not whole blocks of {}: the {} base needs them "
             "(--base-dtype bf16 or nf4 take any row length)",
             file.path(), t.name, cols, kQuantBlock, quant_format_name(format));
  const gguf::TypeTraits& traits = gguf::type_traits(t.type);
  LORA_CHECK(traits.dequantizable, "GGUF file '{}': tensor '{}' is {}, a type lora.cpp does not decode", file.path(),
             t.name, traits.name);
  // The parser checked the tensor's bytes lie in the file; these are the shape's bytes, overflow-checked.
  const uint64_t row_bytes = gguf::tensor_nbytes(t.type, {cols});
  LORA_CHECK(t.nbytes / static_cast<uint64_t>(rows) == row_bytes && t.nbytes % static_cast<uint64_t>(rows) == 0,
             "GGUF file '{}': tensor '{}' holds {} bytes, but {} rows of {} {} weights take {} bytes each", file.path(),
             t.name, t.nbytes, rows, cols, traits.name, row_bytes);
  LORA_CHECK(heads == 0 || (heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0),
             "GGUF file '{}': tensor '{}' has {} rows, which {} heads of an even size do not divide", file.path(),
             t.name, rows, heads);
  // Row r of the file is row dest(r) of the model (llama.cpp permutes q and k rows within each head).
  const auto dest = [&](int64_t r) { return heads > 0 ? hf_row_of_gguf_row(r, rows, heads) : r; };
  const auto source = [&](int64_t r) { return t.data + static_cast<uint64_t>(r) * row_bytes; };

  BaseWeight out;
  if (same_blocks(t.type, format)) {
    // The blocks as they are: a row of the file is a row of the base.
    out.kept_blocks = true;
    out.weight = empty_block_weight(format, rows, cols);
    uint8_t* base = static_cast<uint8_t*>(out.weight.data.raw_data());
    const size_t block_bytes = traits.type_size;
    file.for_each_row_chunk(t, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        LORA_CHECK(scales_finite(source(r), cols / kQuantBlock, block_bytes),
                   "GGUF file '{}': tensor '{}' row {} has a block scale that is inf or nan", file.path(), t.name, r);
        std::memcpy(base + static_cast<uint64_t>(dest(r)) * row_bytes, source(r), row_bytes);
      }
    });
    return out;
  }

  double err2 = 0.0, ref2 = 0.0;
  std::atomic<int64_t> bad_row{-1};
  if (is_block_format(format)) {
    // A row at a time: decode the file's row, quantize it, decode that back for the error.
    out.weight = empty_block_weight(format, rows, cols);
    uint8_t* base = static_cast<uint8_t*>(out.weight.data.raw_data());
    const int64_t base_row_bytes = format == QuantFormat::Q8_0 ? q8_0_row_bytes(cols) : q4_0_row_bytes(cols);
    file.for_each_row_chunk(t, [&](int64_t begin, int64_t end) {
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(cols)), back(static_cast<size_t>(cols));
#pragma omp for schedule(static) reduction(+ : err2, ref2)
        for (int64_t r = begin; r < end; ++r) {
          gguf::dequantize_row(t.type, source(r), row.data(), cols);
          if (!all_finite(row.data(), cols)) {
            bad_row = r;
            continue;
          }
          uint8_t* to = base + dest(r) * base_row_bytes;
          if (format == QuantFormat::Q8_0) {
            quantize_row_q8_0(row.data(), reinterpret_cast<BlockQ8_0*>(to), cols);
            dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(to), back.data(), cols);
          } else {
            quantize_row_q4_0(row.data(), reinterpret_cast<BlockQ4_0*>(to), cols);
            dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(to), back.data(), cols);
          }
          for (int64_t i = 0; i < cols; ++i) {
            const double e = static_cast<double>(row[i]) - back[i];
            err2 += e * e, ref2 += static_cast<double>(row[i]) * row[i];
          }
        }
      }
    });
  } else {
    // bf16 and nf4 (nf4's absmaxes are double-quantized over the whole weight): this one tensor in float32.
    Tensor host = Tensor::empty({rows, cols}, DType::F32, Device::cpu());
    float* values = host.data<float>();
    file.for_each_row_chunk(t, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = values + dest(r) * cols;
        gguf::dequantize_row(t.type, source(r), row, cols);
        if (!all_finite(row, cols)) bad_row = r;
      }
    });
    if (bad_row < 0) {
      out.weight = quantize_weight(host, format, format == QuantFormat::NF4);
      constexpr int64_t kChunk = 64;  // rows decoded back at a time
      for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
        const int64_t n = std::min(kChunk, rows - r0);
        const Tensor back = dequantize_weight(out.weight, r0, n);
        const float* b = back.data<float>();
        const float* a = values + r0 * cols;
        for (int64_t i = 0; i < n * cols; ++i) {
          const double e = static_cast<double>(a[i]) - b[i];
          err2 += e * e, ref2 += static_cast<double>(a[i]) * a[i];
        }
      }
    }
  }
  LORA_CHECK(bad_row < 0, "GGUF file '{}': tensor '{}' holds inf or nan values (row {})", file.path(), t.name,
             bad_row.load());
  out.relative_rms_error = ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;
  return out;
}

void BaseImportReport::add(const gguf::TensorInfo& t, const BaseWeight& w) {
  ++layers_by_format[std::string(quant_format_name(w.weight.format))];
  bytes += w.weight.nbytes();
  if (w.kept_blocks) {
    ++kept;
    return;
  }
  ++converted;
  if (w.relative_rms_error >= worst_error) {
    worst_error = w.relative_rms_error;
    worst_tensor = t.name;
    worst_conversion = fmt::format("{} -> {}", gguf::type_name(t.type), quant_format_name(w.weight.format));
  }
}

void BaseImportReport::add_table(const gguf::TensorInfo& t, const BaseWeight& w, bool also_head) {
  table_bytes += w.weight.nbytes();
  std::string what = fmt::format("{} as {}", t.name, quant_format_name(w.weight.format));
  if (!w.kept_blocks)
    what += fmt::format(" (from {}, relative RMS error {:.4g})", gguf::type_name(t.type), w.relative_rms_error);
  if (also_head) what += " (the tied output head too)";
  tables.push_back(what);
}

std::string BaseImportReport::str() const {
  std::string formats;
  for (const auto& [name, n] : layers_by_format)
    formats += fmt::format("{}{} {}", formats.empty() ? "" : ", ", n, name);
  std::string s = fmt::format("{} linear layers held compact from the file ({}: {:.1f} MiB): {} as the file's blocks",
                              kept + converted, formats, static_cast<double>(bytes) / kMiB, kept);
  if (converted > 0) {
    s += fmt::format(", {} converted, worst relative RMS error {:.4g} ({}, {})", converted, worst_error, worst_tensor,
                     worst_conversion);
  }
  if (!tables.empty()) {
    std::string list;
    for (const std::string& t : tables) list += (list.empty() ? "" : ", ") + t;
    s += fmt::format("; held compact too: {}, {:.1f} MiB", list, static_cast<double>(table_bytes) / kMiB);
  }
  return s;
}

}  // namespace lora::models::gguf_io
