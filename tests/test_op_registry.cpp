// The op registry against the registered test cases: every differentiable op (autograd/op_registry.h) has a
// float64 gradcheck case and a parity case (tests/op_cases.h), every op file registers its ops, and every
// case runs here: gradcheck in float64, float32 against float64, and CUDA against the CPU where a device is.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>
#include <string>

#include "autograd/op_registry.h"
#include "lora_source_dir.h"
#include "tests/op_cases.h"
#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#endif

using namespace lora;
using namespace lora::testing;

namespace {

template <typename Case>
std::set<std::string> ops_with_cases(const std::vector<Case>& cases) {
  std::set<std::string> ops;
  for (const Case& c : cases) ops.insert(c.op);
  return ops;
}

}  // namespace

TEST_CASE("registry: every registered op has a float64 gradcheck case and a parity case", "[registry]") {
  const std::vector<const autograd::OpDef*> ops = autograd::registered_ops();
  REQUIRE_FALSE(ops.empty());
  const std::set<std::string> gradchecked = ops_with_cases(gradcheck_cases());
  const std::set<std::string> compared = ops_with_cases(parity_cases());
  for (const autograd::OpDef* op : ops) {
    INFO("op '" << op->name() << "' (registered in " << op->file() << ")");
    CHECK(gradchecked.count(std::string(op->name())) == 1);
    CHECK(compared.count(std::string(op->name())) == 1);
  }
}

TEST_CASE("registry: every case names a registered op", "[registry]") {
  for (const GradcheckCase& c : gradcheck_cases()) {
    INFO("gradcheck case '" << c.what << "' names op '" << c.op << "'");
    CHECK(autograd::find_op(c.op) != nullptr);
  }
  for (const ParityCase& c : parity_cases()) {
    INFO("parity case '" << c.what << "' names op '" << c.op << "'");
    CHECK(autograd::find_op(c.op) != nullptr);
  }
}

// Read from the source tree, not from a list kept here: an op file whose registration the linker dropped,
// or that records without registering, shows up as a file with no op.
TEST_CASE("registry: every file of autograd/ops/ registered its ops in this program", "[registry]") {
  std::set<std::string> registering;
  for (const autograd::OpDef* op : autograd::registered_ops()) {
    registering.insert(std::filesystem::path(std::string(op->file())).filename().string());
  }
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LORA_SOURCE_DIR) + "/autograd/ops")) {
    if (entry.path().extension() != ".cpp") continue;
    ++files;
    INFO("autograd/ops/" << entry.path().filename().string() << " registers no op");
    CHECK(registering.count(entry.path().filename().string()) == 1);
  }
  REQUIRE(files > 0);
}

TEST_CASE("gradcheck: every registered case, in float64", "[gradcheck]") {
  // Central differences with the case's GradcheckOptions (default eps 1e-6, |analytic - numeric| <= 1e-7 +
  // 1e-5 |numeric|).
  for (const GradcheckCase& c : gradcheck_cases()) {
    INFO(c.op << ": " << c.what);
    const std::string failure = run_gradcheck_case(c);
    INFO(failure);
    CHECK(failure.empty());
  }
}

TEST_CASE("parity: every registered case, float32 against float64 on the CPU", "[parity]") {
  for (const ParityCase& c : parity_cases()) {
    INFO(c.op << ": " << c.what);
    const std::string failure = run_f32_vs_f64(c);
    INFO(failure);
    CHECK(failure.empty());
  }
}

TEST_CASE("cuda parity: every registered case, CUDA against the CPU", "[cuda]") {
#if defined(LORA_HAVE_CUDA)
  if (!cuda_device_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  for (const ParityCase& c : parity_cases()) {
    INFO(c.op << ": " << c.what);
    const std::string failure = run_cuda_vs_cpu(c);
    INFO(failure);
    CHECK(failure.empty());
  }
#else
  WARN("this build has no CUDA backend: skipped");
#endif
}
