// How much of a file's memory mapping is resident in this process: for the tests that check a loader drops
// the pages of a file it has read (one tensor, or one chunk of a tensor, held at a time; not the file whole).
#pragma once

#include <cctype>
#include <cstdint>
#include <fstream>
#include <string>

namespace lora::testing {

// The resident bytes of this process's mappings of `path` (the Rss lines of /proc/self/smaps), in KiB.
inline int64_t resident_kib_of_mapping(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  int64_t kib = 0;
  bool in_file = false;
  for (std::string line; std::getline(smaps, line);) {
    if (line.find('-') != std::string::npos && line.find(' ') != std::string::npos && line.ends_with(path)) {
      in_file = true;
    } else if (line.starts_with("Rss:") && in_file) {
      kib += std::stoll(line.substr(4));
      in_file = false;
    } else if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < 16) {
      in_file = false;  // another mapping's header
    }
  }
  return kib;
}

}  // namespace lora::testing
