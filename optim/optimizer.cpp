// Optimizer base: parameter bookkeeping, the shared step loop with lazy state, zero_grad, and state save/load.
#include "optim/optimizer.h"

#include <nlohmann/json.hpp>

#include <set>
#include <utility>

#include "autograd/grad_mode.h"
#include "backends/finite.h"
#include "core/error.h"
#include "core/json.h"
#include "core/safetensors.h"

namespace lora::optim {

using json = nlohmann::json;

Optimizer::Optimizer(std::vector<Tensor> params, double lr, std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)), state_(params_.size()) {
  set_lr(lr);
  if (names_.empty()) {
    for (size_t i = 0; i < params_.size(); ++i) names_.push_back(std::to_string(i));
  }
  LORA_CHECK(names_.size() == params_.size(), "Optimizer: {} parameter names for {} parameters", names_.size(),
             params_.size());
  std::set<std::string> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    LORA_CHECK(params_[i].defined(), "Optimizer: parameter {} ('{}') is undefined", i, names_[i]);
    LORA_CHECK(params_[i].is_leaf(), "Optimizer: parameter '{}' is not a leaf tensor", names_[i]);
    LORA_CHECK(!names_[i].empty(), "Optimizer: parameter {} has an empty name", i);
    LORA_CHECK(seen.insert(names_[i]).second, "Optimizer: parameter name '{}' appears twice", names_[i]);
  }
}

void Optimizer::set_lr(double lr) {
  LORA_CHECK(lr >= 0.0, "Optimizer: learning rate must be >= 0, got {}", lr);
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.set_grad(Tensor());  // drops the reference: the gradient's memory is freed
}

size_t Optimizer::state_bytes() const {
  size_t bytes = 0;
  for (const ParamState& s : state_)
    for (const Tensor& b : s.buffers) bytes += b.nbytes();
  return bytes;
}

// ---------------------------------------------------------------------------------------------------
// The step loop

void Optimizer::for_each_update(const UpdateFn& update) {
  NoGradGuard no_grad;
  const size_t num_buffers = buffer_names().size();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor grad = p.grad();
    if (!p.requires_grad() || !grad.defined()) continue;  // frozen, or no gradient this step: untouched
    LORA_CHECK(grad.device() == p.device() && grad.dtype() == p.dtype(),
               "{}: the gradient of '{}' is {} on {}, the parameter {} on {}", kind(), names_[i],
               dtype_name(grad.dtype()), grad.device().str(), dtype_name(p.dtype()), p.device().str());
    ParamState& s = state_[i];
    if (s.buffers.size() != num_buffers) {  // first update: zeros beside the parameter, charged as state
      s.buffers.clear();
      for (size_t b = 0; b < num_buffers; ++b) {
        Tensor t = Tensor::empty(p.shape(), p.dtype(), p.device(), MemoryCategory::OptimizerState);
        t.zero_();
        s.buffers.push_back(std::move(t));
      }
    }
    s.step += 1;
    update(p, grad, s);
  }
}

// ---------------------------------------------------------------------------------------------------
// Save / load

namespace {

std::string tensor_key(const std::string& param_name, const std::string& buffer) {
  return "state." + param_name + "." + buffer;
}

// A metadata entry parsed as JSON, with a clear error when it is absent or malformed.
json metadata_json(const SafeTensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  LORA_CHECK(it != file.metadata().end(), "optimizer state '{}': no '{}' in __metadata__", file.path(), key);
  return parse_json(it->second, fmt::format("optimizer state '{}': __metadata__ '{}'", file.path(), key));
}

}  // namespace

void Optimizer::save_state(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  json steps = json::array();
  const std::vector<std::string> buffers = buffer_names();
  for (size_t i = 0; i < params_.size(); ++i) {
    steps.push_back(state_[i].step);
    for (size_t b = 0; b < state_[i].buffers.size(); ++b)
      tensors.emplace_back(tensor_key(names_[i], buffers[b]), state_[i].buffers[b]);
  }
  json hyper = hyperparameters();
  hyper["lr"] = lr_;
  const std::map<std::string, std::string> metadata{{"optimizer", kind()},
                                                    {"hyperparameters", hyper.dump()},
                                                    {"param_names", json(names_).dump()},
                                                    {"steps", steps.dump()}};
  save_safetensors(path, tensors, metadata);
}

void Optimizer::load_state(const std::string& path) {
  const SafeTensorsFile file = SafeTensorsFile::open(path);
  const auto kind_entry = file.metadata().find("optimizer");
  LORA_CHECK(kind_entry != file.metadata().end(),
             "optimizer state '{}': no 'optimizer' in __metadata__ (not an optimizer state?)", path);
  LORA_CHECK(kind_entry->second == kind(), "optimizer state '{}' was saved by {}, not {}", path, kind_entry->second,
             kind());
  std::vector<std::string> names;
  std::vector<int64_t> steps;
  double saved_lr = 0.0;
  try {
    names = metadata_json(file, "param_names").get<std::vector<std::string>>();
    steps = metadata_json(file, "steps").get<std::vector<int64_t>>();
    saved_lr = metadata_json(file, "hyperparameters").at("lr").get<double>();
  } catch (const json::exception& e) {
    LORA_FAIL("optimizer state '{}': malformed __metadata__ ({})", path, e.what());
  }
  LORA_CHECK(saved_lr >= 0.0, "optimizer state '{}': negative learning rate {}", path, saved_lr);
  LORA_CHECK(names.size() == params_.size() && steps.size() == names.size(),
             "optimizer state '{}' holds {} parameters ({} step counts), this optimizer has {}", path, names.size(),
             steps.size(), params_.size());

  // Everything is read into `loaded` first, so a failure leaves this optimizer as it was.
  std::vector<ParamState> loaded(params_.size());
  const std::vector<std::string> buffers = buffer_names();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    LORA_CHECK(names[i] == names_[i], "optimizer state '{}': parameter {} is '{}' in the file but '{}' here", path, i,
               names[i], names_[i]);
    LORA_CHECK(steps[i] >= 0, "optimizer state '{}': negative step count {} for '{}'", path, steps[i], names_[i]);
    loaded[i].step = steps[i];
    if (steps[i] == 0) continue;  // never updated: no buffers
    for (const std::string& buffer : buffers) {
      const std::string key = tensor_key(names_[i], buffer);
      const TensorInfo& info = file.info(key);  // throws naming the closest keys when absent
      LORA_CHECK(info.shape == p.shape(), "optimizer state '{}': '{}' has shape {}, parameter '{}' has shape {}", path,
                 key, info.shape.str(), names_[i], p.shape().str());
      loaded[i].buffers.push_back(file.load(key, p.dtype(), p.device(), MemoryCategory::OptimizerState));
      LORA_CHECK(all_finite(loaded[i].buffers.back()), "optimizer state '{}': '{}' holds inf or nan values", path, key);
    }
  }
  size_t expected = 0;
  for (const ParamState& s : loaded) expected += s.buffers.size();
  LORA_CHECK(file.size() == expected, "optimizer state '{}' holds {} tensors, {} expects {} ({} per updated parameter)",
             path, file.size(), kind(), expected, buffers.size());
  state_ = std::move(loaded);
  lr_ = saved_lr;
}

}  // namespace lora::optim
