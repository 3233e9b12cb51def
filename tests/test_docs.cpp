// The docs cannot rot: every command README.md and docs/*.md mark for CI runs against this build, quoted
// output and code are compared (scripts/check-docs.sh, convention in docs/ladder.md).
#include <catch2/catch.hpp>

#include "lora_source_dir.h"
#include "tests/program_runner.h"

using namespace lora::testing;

TEST_CASE("every command in the docs runs, and quoted output and code match", "[docs][slow]") {
  REQUIRE_PROGRAM(ladder_program, "autograd_basics");  // the docs run the example programs
  const fs::path build = ladder_program.parent_path();
  const RunResult r = run("bash", std::string(LORA_SOURCE_DIR) + "/scripts/check-docs.sh --build-dir " + quote(build));
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains(", 0 failed"));
}
