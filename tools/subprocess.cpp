// run_program: posix_spawn and wait, with an argument vector and an extended environment.
#include "tools/subprocess.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

extern char** environ;

namespace lora::tools {

int run_program(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env) {
  LORA_CHECK(!argv.empty(), "run_program: no program given");
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& extra : extra_env) replaced = replaced || extra.substr(0, extra.find('=')) == name;
    if (!replaced) env.push_back(entry);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = 0;
  const int err = argv[0].find('/') == std::string::npos
                      ? posix_spawnp(&pid, argv[0].c_str(), nullptr, nullptr, args.data(), envp.data())
                      : posix_spawn(&pid, argv[0].c_str(), nullptr, nullptr, args.data(), envp.data());
  LORA_CHECK(err == 0, "cannot start '{}': {}", argv[0], std::strerror(err));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    LORA_CHECK(errno == EINTR, "waiting for '{}' failed: {}", argv[0], std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string self_executable() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

}  // namespace lora::tools
