// GGUF models and adapters: import (memory-mapped, dequantized tensor by tensor), export (streamed tensor by
// tensor), and the GGUF LoRA adapter.
#include "models/gguf/model_io.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "backends/finite.h"
#include "core/files.h"
#include "core/gguf_quants.h"
#include "models/gguf/arch.h"
#include "models/quantize_base.h"
#include "models/registry.h"
#include "nn/layers.h"
#include "nn/lora/apply_lora.h"
#include "nn/quantized_linear.h"

namespace lora::models::gguf_io {
namespace {

std::string list(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 10; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > 10) s += fmt::format(", ... ({} in all)", v.size());
  return s;
}

std::string counts(const std::map<std::string, int64_t>& by_type) {
  std::string s;
  for (const auto& [type, n] : by_type) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", n, type);
  return s;
}

// The parameter each Hugging Face name loads into, with its shape, for the model's own tensors.
std::map<std::string, Tensor> parameters_by_hf_name(const CausalLM& model) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, param] : model.named_parameters()) {
    if (name.find(".lora_") != std::string::npos) continue;
    const std::string hf = model.hf_name(name);
    if (!hf.empty()) out[hf] = param;
  }
  return out;
}

// GGUF ne (fastest first) as a PyTorch shape.
Shape torch_shape(const std::vector<int64_t>& ne) {
  std::vector<int64_t> dims(ne.rbegin(), ne.rend());
  return Shape(dims);
}

// Checks that the file holds exactly the model's tensors; returns GGUF name -> HF name.
std::map<std::string, std::string> match_tensors(const gguf::File& f, const CausalLM& model, const std::string& arch) {
  const auto params = parameters_by_hf_name(model);
  std::map<std::string, std::string> hf_of;
  std::vector<std::string> unexpected, misshaped, missing, unreadable;
  std::set<std::string> found;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string hf = hf_tensor_name(arch, t.name);
    auto it = hf.empty() ? params.end() : params.find(hf);
    if (it == params.end()) {
      unexpected.push_back(t.name);
      continue;
    }
    found.insert(hf);
    hf_of[t.name] = hf;
    if (torch_shape(t.ne) != it->second.shape()) {
      misshaped.push_back(
          fmt::format("{} (file {}, model expects {})", t.name, torch_shape(t.ne).str(), it->second.shape().str()));
    }
    if (!gguf::type_traits(t.type).dequantizable)
      unreadable.push_back(fmt::format("{} ({})", t.name, gguf::type_name(t.type)));
  }
  for (const auto& [hf, p] : params) {
    if (!found.count(hf)) missing.push_back(gguf_tensor_name(model.model_type(), hf) + " (" + hf + ")");
  }
  std::string problems;
  if (!missing.empty()) problems += "\n  missing tensors: " + list(missing);
  if (!misshaped.empty()) problems += "\n  mis-shaped tensors: " + list(misshaped);
  if (!unexpected.empty()) problems += "\n  unexpected tensors: " + list(unexpected);
  if (!unreadable.empty()) problems += "\n  tensors of a type lora.cpp does not read: " + list(unreadable);
  LORA_CHECK(problems.empty(), "GGUF file '{}' does not match the {} model its metadata describes:{}", f.path(), arch,
             problems);
  return hf_of;
}

}  // namespace

bool is_gguf_path(const std::string& path) {
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.ends_with(".gguf")) return true;
  if (!is_regular_file(path)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

std::string ImportReport::str() const {
  return fmt::format("{} model, tensors: {}{}", architecture, counts(tensors_by_type),
                     base.empty() ? "" : "; " + base.str());
}
std::string ExportSummary::str() const {
  return fmt::format("{} tensors ({}), {:.1f} MB", tensors, counts(tensors_by_type), static_cast<double>(bytes) / 1e6);
}

nlohmann::json gguf_model_config(const gguf::File& file) {
  return config_from_gguf(file);
}

namespace {

// Decodes tensor `t` into `param` (float32, on any device), undoing llama.cpp's q/k permutation.
void load_float_tensor(const gguf::File& f, const gguf::TensorInfo& t, Tensor param, int64_t heads) {
  const int64_t row = t.ne[0], rows = t.rows();
  const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(rows == 0 ? 1 : rows);
  Tensor host = param.device().is_cpu() ? param : Tensor::empty(param.shape(), DType::F32, Device::cpu());
  float* out = host.data<float>();
  // A chunk of the tensor's pages in the mapping at a time, released once converted.
  f.for_each_row_chunk(t, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t dest = heads > 0 ? hf_row_of_gguf_row(r, rows, heads) : r;  // undo llama.cpp's q/k permutation
      gguf::dequantize_row(t.type, t.data + static_cast<uint64_t>(r) * row_bytes, out + dest * row, row);
    }
  });
  LORA_CHECK(all_finite(host), "GGUF file '{}': tensor '{}' holds inf or nan values", f.path(), t.name);
  if (!param.device().is_cpu()) param.copy_from(host.to(param.device()));
}

// What a compact base holds compact: module path -> GGUF tensor name and format. Empty when every weight
// stays float32.
using CompactPlan = std::map<std::string, std::pair<std::string, QuantFormat>>;

// The body's linear layers, in the format the base asks for; and the token embedding and an untied output
// head when the file holds them quantized, in table_format's (a float embedding stays f32).
CompactPlan compact_plan(const gguf::File& f, const CausalLM& model, const BaseDtype& base) {
  CompactPlan plan;
  if (!base.compact()) return plan;
  const auto tensor_of = [&](const std::string& path) -> const gguf::TensorInfo* {
    const std::string hf = model.hf_name(path + ".weight");
    const std::string name = hf.empty() ? "" : gguf_tensor_name(model.model_type(), hf);
    return name.empty() ? nullptr : f.find_tensor(name);  // null: no weight of its own (match_tensors checked)
  };
  for (const std::string& path : base_linear_paths(model)) {
    const gguf::TensorInfo* t = tensor_of(path);
    if (!t) continue;
    const QuantFormat format = base.automatic ? auto_base_format(t->type) : base.format;
    if (format != QuantFormat::F32) plan[path] = {t->name, format};
  }
  for (const std::string& path : {model.token_embedding_path(), model.output_head_path()}) {
    const gguf::TensorInfo* t = path.empty() ? nullptr : tensor_of(path);
    const QuantFormat format = t ? table_format(*t) : QuantFormat::F32;
    if (format != QuantFormat::F32) plan[path] = {t->name, format};
  }
  return plan;
}

}  // namespace

std::shared_ptr<CausalLM> load_gguf_model(const gguf::File& f, uint64_t seed, ImportReport* report,
                                          const BaseDtype& base) {
  const nlohmann::json config_json = config_from_gguf(f);
  const ModelConfig config{config_json, "GGUF file '" + f.path() + "'"};
  const std::string arch = f.get_string("general.architecture");
  CompactPlan plan;
  {
    // Shapes only: a file the metadata contradicts is refused before the model is allocated.
    DefaultDeviceGuard shapes_only(Device::meta());
    const auto shapes = create_model(config, seed);
    match_tensors(f, *shapes, arch);
    plan = compact_plan(f, *shapes, base);
  }
  ImportReport local;
  local.architecture = arch;
  NoGradGuard no_grad;
  std::shared_ptr<CausalLM> model;
  std::map<std::string, std::string> hf_of;
  if (plan.empty()) {
    model = create_model(config, seed);
    hf_of = match_tensors(f, *model, arch);
  } else {
    // Built with shapes only: the compact layers replace their linear layers before anything is allocated.
    {
      DefaultDeviceGuard shapes_only(Device::meta());
      model = create_model(config, seed);
    }
    hf_of = match_tensors(f, *model, arch);
    for (const auto& [path, entry] : plan) {
      const auto& [name, format] = entry;
      const gguf::TensorInfo& t = *f.find_tensor(name);
      BaseWeight w = base_weight_from_gguf(f, t, format, permuted_heads(config_json, model->hf_name(path + ".weight")));
      f.release(t);
      ++local.tensors_by_type[std::string(gguf::type_name(t.type))];
      const bool embedding = path == model->token_embedding_path(), head = path == model->output_head_path();
      if (embedding || head)  // counted before the weight moves into the model
        local.base.add_table(t, w, /*also_head=*/embedding && model->output_head_path().empty());
      else
        local.base.add(t, w);
      auto weight = std::make_shared<const QuantizedWeight>(std::move(w.weight));
      if (embedding)
        replace_embedding_with_compact(*model, std::move(weight));
      else
        replace_with_compact(*model, path, std::move(weight));
    }
    // Everything else (norms, biases, float embeddings and heads) is allocated now, on the host, and read below.
    allocate_meta_parameters(*model);
  }
  const auto params = parameters_by_hf_name(*model);
  std::set<std::string> held;
  for (const auto& [path, entry] : plan) held.insert(entry.first);
  for (const gguf::TensorInfo& t : f.tensors()) {
    if (held.count(t.name)) continue;
    const std::string& hf = hf_of.at(t.name);
    load_float_tensor(f, t, params.at(hf), permuted_heads(config_json, hf));
    ++local.tensors_by_type[std::string(gguf::type_name(t.type))];
  }
  if (!plan.empty() && !default_device().is_cpu()) model->to(default_device());
  if (report) *report = local;
  return model;
}

std::shared_ptr<CausalLM> load_gguf_model(const std::string& path, uint64_t seed, const BaseDtype& base) {
  // The model needs no tokenizer: its arrays are validated but not held while the tensors load.
  const gguf::File file = gguf::File::open(path, gguf::MetadataArrays::LengthOnly);
  ImportReport report;
  auto model = load_gguf_model(file, seed, &report, base);
  if (!report.base.empty()) fmt::print(stderr, "GGUF base: {}\n", report.base.str());
  return model;
}

// ---------------------------------------------------------------------------------------------------
// Export

namespace {

// llama_ftype for general.file_type.
uint32_t file_type(gguf::TensorType type) {
  switch (type) {
    case gguf::TensorType::F32:
      return 0;
    case gguf::TensorType::F16:
      return 1;
    case gguf::TensorType::Q4_0:
      return 2;
    case gguf::TensorType::Q8_0:
      return 7;
    case gguf::TensorType::BF16:
      return 32;
    default:
      LORA_FAIL("GGUF export: --type {} is not written (f32, f16, bf16, q8_0, q4_0 are)", gguf::type_name(type));
  }
}

// A tensor's rows in GGUF order, on the host: rows of a permuted q/k are reordered as llama.cpp's converter does.
std::vector<float> gguf_rows(const Tensor& value, int64_t heads) {
  const Tensor host = value.to(Device::cpu());
  const float* p = host.data<float>();
  const int64_t rows = host.rank() == 0 ? 1 : host.size(0), row = host.numel() / std::max<int64_t>(rows, 1);
  std::vector<float> out(static_cast<size_t>(host.numel()));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = heads > 0 ? hf_row_of_gguf_row(r, rows, heads) : r;
    std::copy(p + src * row, p + (src + 1) * row, out.begin() + r * row);
  }
  return out;
}

void write_rows(const std::vector<float>& values, int64_t row, gguf::TensorType type, std::string& out) {
  for (size_t at = 0; at < values.size(); at += static_cast<size_t>(row))
    gguf::quantize_row(type, values.data() + at, row, out);
}

void add_general(gguf::Writer& w, const CausalLM& model, const std::string& name) {
  w.set("general.architecture", gguf::Value::string(gguf_architecture(model.model_type())));
  w.set("general.name", gguf::Value::string(name.empty() ? model.model_type() : name));
}

uint64_t file_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  return static_cast<uint64_t>(in.tellg());
}

}  // namespace

ExportSummary export_gguf(const CausalLM& model, const TokenizerFiles& tokenizer, gguf::TensorType type,
                          const std::string& out, const std::string& name) {
  const nlohmann::json config = model.hf_config();
  const std::string arch = gguf_architecture(model.model_type());
  gguf::Writer w;
  add_general(w, model, name);
  w.set("general.file_type", gguf::Value::u32(file_type(type)));
  if (type == gguf::TensorType::Q8_0 || type == gguf::TensorType::Q4_0)
    w.set("general.quantization_version", gguf::Value::u32(2));
  for (auto& [key, value] : hparams_to_gguf(config)) w.set(key, std::move(value));
  for (auto& [key, value] : tokenizer_to_gguf(tokenizer, config, model.dims().vocab_size)) w.set(key, std::move(value));

  ExportSummary summary;
  bool tied = true;  // no lm_head of its own: token_embd is the output head too
  for (const auto& [param_name, param] : model.named_parameters())
    tied = tied && model.hf_name(param_name) != "lm_head.weight";
  for (const auto& [param_name, param] : model.named_parameters()) {
    if (param_name.find(".lora_") != std::string::npos) continue;
    const std::string hf = model.hf_name(param_name);
    if (hf.empty()) continue;  // a tied head: llama.cpp reuses token_embd
    const std::string gguf_name = gguf_tensor_name(model.model_type(), hf);
    LORA_CHECK(!gguf_name.empty(), "GGUF export: the {} tensor '{}' has no GGUF name", model.model_type(), hf);
    std::vector<int64_t> ne(param.shape().dims().rbegin(), param.shape().dims().rend());
    // Norms and biases stay f32; q8_0/q4_0 need rows of whole blocks (else f16, as the converter falls back).
    gguf::TensorType t = param.rank() < 2 ? gguf::TensorType::F32 : type;
    // The output head in a 4-bit file stays 8-bit: it decides every logit, and llama-quantize keeps it at
    // 6 bits (Q6_K) for the same reason.
    const bool head = gguf_name == "output.weight" || (gguf_name == "token_embd.weight" && tied);
    if (t == gguf::TensorType::Q4_0 && head) t = gguf::TensorType::Q8_0;
    if (gguf::type_traits(t).block_size > 1 && ne[0] % gguf::type_traits(t).block_size != 0) t = gguf::TensorType::F16;
    const int64_t heads = permuted_heads(config, hf);
    const Tensor value = param;
    w.add_tensor(gguf_name, ne, t, [value, heads, t, row = ne[0]](std::string& bytes) {
      const std::vector<float> rows = gguf_rows(value, heads);
      LORA_CHECK(std::all_of(rows.begin(), rows.end(), [](float v) { return std::isfinite(v); }),
                 "GGUF export: tensor '{}' holds inf or nan values", value.name());
      write_rows(rows, row, t, bytes);
    });
    ++summary.tensors;
    ++summary.tensors_by_type[std::string(gguf::type_name(t))];
  }
  w.write(out);
  summary.bytes = file_size(out);
  return summary;
}

ExportSummary export_gguf_adapter(const CausalLM& model, const std::string& out, const std::string& name) {
  const auto layers = nn::lora_layers(model);
  LORA_CHECK(!layers.empty(), "GGUF adapter export: the model has no LoRA layers");
  const nlohmann::json config = model.hf_config();
  // One alpha for the file: llama.cpp scales each tensor by alpha / rank(tensor); B absorbs the rest.
  const double alpha = layers.front().second->options().alpha;
  LORA_CHECK(alpha > 0, "GGUF adapter export: alpha must be positive");
  gguf::Writer w;
  add_general(w, model, name);
  w.set("general.type", gguf::Value::string("adapter"));
  w.set("adapter.type", gguf::Value::string("lora"));
  w.set("adapter.lora.alpha", gguf::Value::f32(static_cast<float>(alpha)));
  ExportSummary summary;
  for (const auto& [path, layer] : layers) {
    LORA_CHECK(!layer->merged(), "GGUF adapter export: '{}' is merged into its base weight; unmerge it first", path);
    const std::string hf = path + ".weight";
    const std::string base = gguf_tensor_name(model.model_type(), hf);
    LORA_CHECK(!base.empty(), "GGUF adapter export: the adapted layer '{}' has no GGUF tensor", path);
    const int64_t in = layer->in_features(), out_features = layer->out_features(), r = layer->rank();
    std::vector<nn::OutputSlice> slices = layer->slices();
    const bool whole = slices.empty();
    if (whole) slices.push_back({0, out_features});
    const int64_t S = static_cast<int64_t>(slices.size()), rank = S * r;
    // A [S r, in] as it is; B [out, S r] block-diagonal over the slices, times s * rank / alpha.
    const Tensor A = layer->lora_A.to(Device::cpu());
    const Tensor B = layer->lora_B.to(Device::cpu());
    const double fold = layer->scaling() * static_cast<double>(rank) / alpha;
    std::vector<float> a(A.data<float>(), A.data<float>() + A.numel());
    std::vector<float> b(static_cast<size_t>(out_features * rank), 0.0f);
    const float* pb = B.data<float>();
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t i = 0; i < slices[s].size; ++i) {
        for (int64_t k = 0; k < r; ++k) {
          b[(slices[s].offset + i) * rank + s * r + k] =
              static_cast<float>(pb[(s * slices[s].size + i) * r + k] * fold);
        }
      }
    }
    // Llama's q/k: B's rows are the output rows llama.cpp permuted.
    const int64_t heads = permuted_heads(config, hf);
    if (heads > 0) {
      std::vector<float> permuted(b.size());
      for (int64_t row = 0; row < out_features; ++row) {
        const int64_t src = hf_row_of_gguf_row(row, out_features, heads);
        std::copy(b.begin() + src * rank, b.begin() + (src + 1) * rank, permuted.begin() + row * rank);
      }
      b = std::move(permuted);
    }
    w.add_tensor(base + ".lora_a", {in, rank}, gguf::TensorType::F32, [a = std::move(a)](std::string& bytes) {
      bytes.append(reinterpret_cast<const char*>(a.data()), a.size() * sizeof(float));
    });
    w.add_tensor(base + ".lora_b", {rank, out_features}, gguf::TensorType::F32, [b = std::move(b)](std::string& bytes) {
      bytes.append(reinterpret_cast<const char*>(b.data()), b.size() * sizeof(float));
    });
    summary.tensors += 2;
    summary.tensors_by_type["f32"] += 2;
  }
  w.write(out);
  summary.bytes = file_size(out);
  return summary;
}

}  // namespace lora::models::gguf_io
