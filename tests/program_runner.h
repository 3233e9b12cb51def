// Running the built programs from tests: where they are, a subprocess runner that captures stdout,
// stderr and the exit code, a scratch folder, and small file makers (llm.c token files).
//
// Programs are found beside the test binary's folder (BUILD/tests/lora_tests -> BUILD/<program>); a test
// whose program was not built (LORA_BUILD_EXAMPLES=OFF) warns and passes (REQUIRE_PROGRAM).
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lora::testing {

namespace fs = std::filesystem;

inline const std::string kTinyModel = std::string(LORA_TEST_DATA_DIR) + "/gpt2_tiny";

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// A scratch folder for this process's files, removed at exit.
inline const fs::path& scratch_dir() {
  struct Scratch {
    fs::path path;
    ~Scratch() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  };
  static const Scratch scratch{[] {
    const fs::path dir = fs::temp_directory_path() / ("lora_test_programs_" + std::to_string(getpid()));
    fs::create_directories(dir);
    return dir;
  }()};
  return scratch.path;
}

inline std::string quote(const std::string& s) {
  return "'" + s + "'";
}
inline std::string quote(const fs::path& p) {
  return quote(p.string());
}

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// The path of a built program, or empty when it was not built.
inline fs::path program_path(const std::string& name) {
  const fs::path build = fs::read_symlink("/proc/self/exe").parent_path().parent_path();
  const fs::path path = build / name;
  return fs::exists(path) ? path : fs::path();
}

// Runs `program args` with `input` on stdin; captures stdout, stderr and the exit code.
inline RunResult run(const fs::path& program, const std::string& args, const std::string& input = "") {
  const fs::path in = scratch_dir() / "stdin.txt", err = scratch_dir() / "stderr.txt";
  write_file(in, input);
  const std::string command = quote(program) + " " + args + " < " + quote(in) + " 2> " + quote(err);
  RunResult result;
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err_in(err, std::ios::binary);
  result.err.assign(std::istreambuf_iterator<char>(err_in), std::istreambuf_iterator<char>());
  return result;
}

// A program started without a shell, its output going to `log` (stdout and stderr), with `env` entries
// ("NAME=value") added to the environment: for tests that signal or kill it while it runs.
class Child {
 public:
  Child(const fs::path& program, const std::vector<std::string>& args, const fs::path& log,
        const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {program.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (auto& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    std::vector<std::string> environment = env;
    for (char** e = environ; *e; ++e) environment.push_back(*e);
    std::vector<char*> cenv;
    for (auto& e : environment) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, program.c_str(), &actions, nullptr, cargs.data(), cenv.data());
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE(rc == 0);
  }
  ~Child() {
    if (pid_ > 0 && !done_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  void signal(int sig) { ::kill(pid_, sig); }
  // Waits; the exit code, or 128 + the signal that ended it.
  int wait() {
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    done_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Whether it has ended (then `code` holds what wait() returns).
  bool finished(int& code) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    done_ = true;
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
};

// The JSON object on the last non-empty line of stdout.
inline nlohmann::json last_json_line(const std::string& out) {
  std::string text = out;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return nlohmann::json::parse(text.substr(text.find_last_of('\n') + 1));
}

// An llm.c token file: 256 int32 header (magic, version 1, count), then uint16 tokens.
inline std::string llmc_bin(const std::vector<int32_t>& tokens, int32_t magic = 20240520) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = 1;
  header[2] = static_cast<int32_t>(tokens.size());
  std::string bytes(reinterpret_cast<const char*>(header.data()), header.size() * sizeof(int32_t));
  for (int32_t t : tokens) {
    const uint16_t v = static_cast<uint16_t>(t);
    bytes.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  return bytes;
}

}  // namespace lora::testing

// Skips the rest of the test (with a warning) when the program was not built.
#define REQUIRE_PROGRAM(var, name)                                    \
  const auto var = ::lora::testing::program_path(name);               \
  if (var.empty()) {                                                  \
    WARN(name " was not built next to the tests: skipping its test"); \
    return;                                                           \
  }
