// Quantized frozen weights: parsing the format, the reference quantizer and dequantizer (host).
#include "core/quantized.h"

#include <cmath>
#include <limits>

namespace lora {
namespace {

// A tensor of `bytes` bytes (int32 elements read as bytes), charged to FrozenParameter. The bytes past
// `bytes` in its last element are zero, so that whatever reads the whole tensor (a fingerprint) sees the same.
Tensor byte_tensor(int64_t bytes, Device device) {
  Tensor t = Tensor::empty({(bytes + 3) / 4}, DType::I32, device, MemoryCategory::FrozenParameter);
  if (device.is_cpu() && bytes > 0) t.data<int32_t>()[t.numel() - 1] = 0;
  return t;
}

Tensor f32_tensor(int64_t n, Device device) {
  return Tensor::empty({n}, DType::F32, device, MemoryCategory::FrozenParameter);
}

uint8_t* bytes_of(const Tensor& t) {
  return static_cast<uint8_t*>(t.raw_data());
}

// The nearest NF4 code to x in [-1, 1]: the codes are ascending, so compare with the midpoints.
int nearest_nf4(float x) {
  int code = 0;
  while (code < 15 && x > 0.5f * (kNf4Codes[code] + kNf4Codes[code + 1])) ++code;
  return code;
}

// The weight as f32 on the host: checkpoints' bf16 and f16 widened exactly, f64 rounded.
Tensor f32_on_host(const Tensor& weight) {
  const Tensor host = weight.to(Device::cpu());
  if (host.dtype() != DType::BF16 && host.dtype() != DType::F16) return host.to(DType::F32);
  Tensor out = Tensor::empty(host.shape(), DType::F32, Device::cpu());
  const uint16_t* in = static_cast<const uint16_t*>(host.raw_data());
  float* o = out.data<float>();
  const bool bf16 = host.dtype() == DType::BF16;
  for (int64_t i = 0; i < host.numel(); ++i) o[i] = bf16 ? bfloat16_to_float(in[i]) : half_to_float(in[i]);
  return out;
}

int8_t round_to_int8(float x) {
  return static_cast<int8_t>(std::lround(std::clamp(x, -127.0f, 127.0f)));
}

}  // namespace

QuantFormat parse_quant_format(const std::string& name, const std::string& flag) {
  if (name == "f32" || name == "float32") return QuantFormat::F32;
  if (name == "bf16" || name == "bfloat16") return QuantFormat::BF16;
  if (name == "q8_0" || name == "int8") return QuantFormat::Q8_0;
  if (name == "q4_0") return QuantFormat::Q4_0;
  if (name == "nf4") return QuantFormat::NF4;
  LORA_FAIL("{} '{}': expected one of f32, bf16, q8_0 (or int8), q4_0, nf4", flag, name);
}

std::string_view quant_format_name(QuantFormat format) {
  switch (format) {
    case QuantFormat::F32:
      return "f32";
    case QuantFormat::BF16:
      return "bf16";
    case QuantFormat::Q8_0:
      return "q8_0";
    case QuantFormat::Q4_0:
      return "q4_0";
    case QuantFormat::NF4:
      return "nf4";
  }
  return "?";
}

size_t QuantizedWeight::nbytes() const {
  size_t n = 0;
  for (const Tensor* t : {&data, &scale, &absmax_codes, &absmax_scale}) n += t->defined() ? t->nbytes() : 0;
  return n;
}

QuantizedWeight empty_block_weight(QuantFormat format, int64_t rows, int64_t cols) {
  LORA_CHECK(format == QuantFormat::Q8_0 || format == QuantFormat::Q4_0,
             "empty_block_weight: {} is not a block format (q8_0, q4_0 are)", quant_format_name(format));
  LORA_CHECK(rows > 0 && cols > 0 && cols % kQuantBlock == 0,
             "empty_block_weight: a {} weight of {} x {} is not rows of whole blocks of {}", quant_format_name(format),
             rows, cols, kQuantBlock);
  const int64_t row_bytes = format == QuantFormat::Q8_0 ? q8_0_row_bytes(cols) : q4_0_row_bytes(cols);
  LORA_CHECK(rows <= std::numeric_limits<int64_t>::max() / row_bytes, "empty_block_weight: {} x {} overflows", rows,
             cols);
  QuantizedWeight q;
  q.format = format, q.rows = rows, q.cols = cols;
  q.data = byte_tensor(rows * row_bytes, Device::cpu());
  return q;
}

int64_t quantized_data_bytes(QuantFormat format, int64_t rows, int64_t cols) {
  switch (format) {
    case QuantFormat::BF16:
      return rows * cols * 2;
    case QuantFormat::Q8_0:
      return rows * q8_0_row_bytes(cols);
    case QuantFormat::Q4_0:
      return rows * q4_0_row_bytes(cols);
    case QuantFormat::NF4:
      return (rows * cols + 1) / 2;
    case QuantFormat::F32:
      break;
  }
  LORA_FAIL("quantized_data_bytes: f32 is not a compact format");
}

QuantizedWeight empty_quantized_weight(QuantFormat format, int64_t rows, int64_t cols, bool double_quant) {
  if (format == QuantFormat::Q8_0 || format == QuantFormat::Q4_0) return empty_block_weight(format, rows, cols);
  LORA_CHECK(format == QuantFormat::BF16 || format == QuantFormat::NF4,
             "empty_quantized_weight: f32 is not a compact format");
  LORA_CHECK(!double_quant || format == QuantFormat::NF4, "empty_quantized_weight: double quantization is nf4's");
  // Both below 2^31 keeps every size here (elements, blocks, bytes) far from overflowing.
  LORA_CHECK(rows > 0 && cols > 0 && rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31),
             "empty_quantized_weight: a {} weight of {} x {}", quant_format_name(format), rows, cols);
  QuantizedWeight q;
  q.format = format, q.rows = rows, q.cols = cols, q.double_quant = double_quant;
  if (format == QuantFormat::BF16) {
    q.data = Tensor::empty({rows, cols}, DType::BF16, Device::cpu(), MemoryCategory::FrozenParameter);
    return q;
  }
  const int64_t blocks = q.blocks(), outer_blocks = (blocks + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock;
  q.data = byte_tensor(quantized_data_bytes(format, rows, cols), Device::cpu());
  if (double_quant)
    q.absmax_codes = byte_tensor(blocks, Device::cpu()), q.absmax_scale = f32_tensor(outer_blocks, Device::cpu());
  else
    q.scale = f32_tensor(blocks, Device::cpu());
  return q;
}

QuantizedWeight quantize_weight(const Tensor& weight, QuantFormat format, bool double_quant) {
  LORA_CHECK(weight.defined() && weight.rank() == 2, "quantize: expected a 2-D weight [out, in], got {}",
             weight.defined() ? weight.shape().str() : "an undefined tensor");
  LORA_CHECK(format != QuantFormat::F32, "quantize: f32 is not a quantized format (keep the weight as it is)");
  LORA_CHECK(weight.dtype() == DType::F32 || weight.dtype() == DType::F64 || weight.dtype() == DType::BF16 ||
                 weight.dtype() == DType::F16,
             "quantize: weight holds {}; expected float32, float64, bfloat16 or float16", dtype_name(weight.dtype()));
  LORA_CHECK(!double_quant || format == QuantFormat::NF4, "quantize: double quantization applies to nf4 only, not {}",
             quant_format_name(format));
  LORA_CHECK((format != QuantFormat::Q8_0 && format != QuantFormat::Q4_0) || weight.size(1) % kQuantBlock == 0,
             "quantize: {} stores rows in blocks of {} weights, but this weight {} has {} columns (bf16 and nf4 "
             "take any shape)",
             quant_format_name(format), kQuantBlock, weight.shape().str(), weight.size(1));
  QuantizedWeight q;
  q.format = format, q.rows = weight.size(0), q.cols = weight.size(1), q.double_quant = double_quant;
  const int64_t n = q.rows * q.cols, blocks = q.blocks();
  const int64_t outer_blocks = (blocks + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock;
  const Device device = weight.device();
  const Device host = device.is_meta() ? device : Device::cpu();

  // Allocated where they are built (the host, or meta for a dry run), then moved.
  switch (format) {
    case QuantFormat::BF16:
      q.data = Tensor::empty({q.rows, q.cols}, DType::BF16, host, MemoryCategory::FrozenParameter);
      break;
    case QuantFormat::Q8_0:
      q.data = byte_tensor(q.rows * q8_0_row_bytes(q.cols), host);
      break;
    case QuantFormat::Q4_0:
      q.data = byte_tensor(q.rows * q4_0_row_bytes(q.cols), host);
      break;
    case QuantFormat::NF4:
      q.data = byte_tensor((n + 1) / 2, host);
      if (double_quant)
        q.absmax_codes = byte_tensor(blocks, host), q.absmax_scale = f32_tensor(outer_blocks, host);
      else
        q.scale = f32_tensor(blocks, host);
      break;
    case QuantFormat::F32:
      break;
  }
  if (device.is_meta()) return q;  // shapes only

  const Tensor w32 = f32_on_host(weight);
  const float* w = w32.data<float>();
  switch (format) {
    case QuantFormat::BF16: {
      uint16_t* out = reinterpret_cast<uint16_t*>(q.data.raw_data());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_bfloat16(w[i]);
      break;
    }
    case QuantFormat::Q8_0: {  // ggml's reference quantizer, one row at a time
      auto* blocks = reinterpret_cast<BlockQ8_0*>(q.data.raw_data());
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < q.rows; ++r)
        quantize_row_q8_0(w + r * q.cols, blocks + r * (q.cols / kQuantBlock), q.cols);
      break;
    }
    case QuantFormat::Q4_0: {
      auto* blocks = reinterpret_cast<BlockQ4_0*>(q.data.raw_data());
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < q.rows; ++r)
        quantize_row_q4_0(w + r * q.cols, blocks + r * (q.cols / kQuantBlock), q.cols);
      break;
    }
    case QuantFormat::NF4: {
      std::vector<float> absmax(static_cast<size_t>(blocks));
      uint8_t* packed = bytes_of(q.data);
      std::fill(packed, packed + (n + 1) / 2, 0);
      // Blocks of 64 are 32 whole bytes, so blocks can be packed in parallel.
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t begin = b * kNf4Block, end = std::min(n, begin + kNf4Block);
        float m = 0.0f;
        for (int64_t i = begin; i < end; ++i) m = std::max(m, std::fabs(w[i]));
        absmax[b] = m;
        const float inv = m > 0 ? 1.0f / m : 0.0f;
        for (int64_t i = begin; i < end; ++i) {
          const uint8_t code = static_cast<uint8_t>(nearest_nf4(w[i] * inv));
          packed[i >> 1] |= (i & 1) ? static_cast<uint8_t>(code << 4) : code;
        }
      }
      if (!double_quant) {
        std::copy(absmax.begin(), absmax.end(), q.scale.data<float>());
        break;
      }
      // Double quantization: c ~ mean + q2 scale2, per block of 256 absmaxes.
      double sum = 0.0;
      for (float a : absmax) sum += a;
      q.absmax_mean = static_cast<float>(sum / static_cast<double>(blocks));
      int8_t* codes = reinterpret_cast<int8_t*>(q.absmax_codes.raw_data());
      float* scale2 = q.absmax_scale.data<float>();
      for (int64_t o = 0; o < outer_blocks; ++o) {
        const int64_t begin = o * kNf4AbsmaxBlock, end = std::min(blocks, begin + kNf4AbsmaxBlock);
        float m = 0.0f;
        for (int64_t b = begin; b < end; ++b) m = std::max(m, std::fabs(absmax[b] - q.absmax_mean));
        scale2[o] = m / 127.0f;
        const float inv = m > 0 ? 127.0f / m : 0.0f;
        for (int64_t b = begin; b < end; ++b) codes[b] = round_to_int8((absmax[b] - q.absmax_mean) * inv);
      }
      break;
    }
    case QuantFormat::F32:
      break;
  }
  return quantized_to(q, device);
}

QuantizedWeight quantized_to(const QuantizedWeight& w, Device device) {
  QuantizedWeight out = w;
  for (Tensor* t : {&out.data, &out.scale, &out.absmax_codes, &out.absmax_scale}) {
    if (t->defined()) *t = t->to(device);
  }
  return out;
}

QuantizedView host_view(const QuantizedWeight& w) {
  LORA_CHECK(w.device().is_cpu(), "quantized weight: expected it on the CPU, it is on {}", w.device().str());
  QuantizedView v{w.format, w.rows,  w.cols,  static_cast<const uint8_t*>(w.data.raw_data()),
                  nullptr,  nullptr, nullptr, w.absmax_mean};
  if (w.scale.defined()) v.scale = w.scale.data<float>();
  if (w.absmax_codes.defined()) v.absmax_codes = static_cast<const int8_t*>(w.absmax_codes.raw_data());
  if (w.absmax_scale.defined()) v.absmax_scale = w.absmax_scale.data<float>();
  return v;
}

Tensor dequantize_weight(const QuantizedWeight& w, int64_t row0, int64_t count) {
  LORA_CHECK(row0 >= 0 && count >= 0 && row0 <= w.rows - count,
             "dequantize: rows [{}, {}) outside the weight's {} rows", row0, row0 + count, w.rows);
  const QuantizedWeight host = quantized_to(w, Device::cpu());
  Tensor out = Tensor::empty({count, w.cols}, DType::F32, Device::cpu());
  dequantize_span(host_view(host), row0 * w.cols, (row0 + count) * w.cols, out.data<float>());
  return out;
}

}  // namespace lora
