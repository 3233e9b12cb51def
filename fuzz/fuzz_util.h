// What the fuzz targets share: handing fuzzer bytes to readers that take a path (an anonymous in-memory
// file, seen through /proc/self/fd), and splitting an input into parts.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lora::fuzz {

// An in-memory file holding `bytes`, closed on destruction; path() opens it like a file on disk.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size) : fd_(memfd_create("fuzz", MFD_CLOEXEC)) {
    for (size_t done = 0; fd_ >= 0 && done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  explicit MemoryFile(const std::string& bytes)
      : MemoryFile(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) {}
  ~MemoryFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

// Splits the input at every occurrence of `separator` (a byte sequence unlikely in real inputs).
inline std::vector<std::string> split(const uint8_t* data, size_t size, const std::string& separator) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t at; (at = text.find(separator, start)) != std::string::npos; start = at + separator.size()) {
    parts.push_back(text.substr(start, at - start));
  }
  parts.push_back(text.substr(start));
  return parts;
}

}  // namespace lora::fuzz
