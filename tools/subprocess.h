// Running a program as a child process without a shell: the arguments are passed as they are, so no
// character in a path or flag can be interpreted as a command.
#pragma once

#include <string>
#include <vector>

namespace lora::tools {

// Runs argv[0] with argv (searched on PATH when it has no '/'), with this process's environment plus
// `extra_env` entries ("NAME=value", replacing any of the same name), waits, and returns its exit status
// (128 + signal when it was killed). Throws lora::Error when it cannot be started.
int run_program(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {});

// The path of the running executable (/proc/self/exe).
std::string self_executable();

}  // namespace lora::tools
