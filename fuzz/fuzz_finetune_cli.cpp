// Fuzzes finetune's command line: the input, split at NUL bytes, is argv; parsing and the checks between
// flags must end in a value set, a usage error, or a lora::Error, never a crash.
#include <cstdio>

#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/finetune_options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = lora::fuzz::split(data, size, std::string(1, '\0'));
  if (args.size() > 64) return 0;
  args.insert(args.begin(), "finetune");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  lora::tools::FinetuneOptions options;
  // CLI11 prints usage errors; a fuzzer run sends them nowhere (-close_fd_mask).
  if (lora::tools::parse_finetune_options(static_cast<int>(args.size()), argv.data(), options) >= 0) return 0;
  try {
    options.validate();
  } catch (const lora::Error&) {
  }
  return 0;
}
