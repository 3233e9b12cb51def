// The op registry: a list of OpDefs that lives as long as the program.
#include "autograd/op_registry.h"

#include <algorithm>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace lora::autograd {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<std::unique_ptr<OpDef>> ops;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: ops may record while other statics are torn down
  return *r;
}

}  // namespace

const OpDef& register_op(const char* name, const char* file) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const auto& op : r.ops) {
    LORA_CHECK(op->name() != name, "register_op: op '{}' is registered twice ({} and {})", name, op->file(), file);
  }
  r.ops.push_back(std::unique_ptr<OpDef>(new OpDef(name, file)));
  return *r.ops.back();
}

std::vector<const OpDef*> registered_ops() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<const OpDef*> out;
  for (const auto& op : r.ops) out.push_back(op.get());
  std::sort(out.begin(), out.end(), [](const OpDef* a, const OpDef* b) { return a->name() < b->name(); });
  return out;
}

const OpDef* find_op(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const auto& op : r.ops) {
    if (op->name() == name) return op.get();
  }
  return nullptr;
}

}  // namespace lora::autograd
