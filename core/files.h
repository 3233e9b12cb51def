// Path checks that never throw (a symlink loop or a permission error reads as "not there", so the caller's
// own error names the flag), and whole-file reads whose errors name the file and what it was for.
#pragma once

#include <cstdint>
#include <string>

namespace lora {

bool path_exists(const std::string& path);
bool is_regular_file(const std::string& path);  // following symlinks
bool is_directory(const std::string& path);     // following symlinks
// Why `path` is not a regular file, for an error after the flag and path: "no such file", "is a folder; expected
// a file", "not a regular file"; empty when it is one.
std::string not_a_file_reason(const std::string& path);

// The bytes of a regular file. `what` names it in errors ("--data", "config"): "<what> '<path>': no such
// file", "...: is a folder", "...: larger than <max_bytes> bytes", "...: read failed: <reason>".
std::string read_file(const std::string& path, const std::string& what, uint64_t max_bytes = uint64_t(1) << 40);

}  // namespace lora
