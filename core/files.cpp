// Non-throwing path checks and whole-file reads with errors that name the file.
#include "core/files.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "core/error.h"

namespace lora {
namespace fs = std::filesystem;

bool path_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec) && !ec;
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && !ec;
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && !ec;
}

std::string not_a_file_reason(const std::string& path) {
  if (is_regular_file(path)) return "";
  if (is_directory(path)) return "is a folder; expected a file";
  return path_exists(path) ? "not a regular file" : "no such file";
}

std::string read_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    LORA_FAIL("{} '{}': no such file{}", what, path,
              ec && ec != std::errc::no_such_file_or_directory ? " (" + ec.message() + ")" : "");
  }
  LORA_CHECK(!fs::is_directory(status), "{} '{}': is a folder, expected a file", what, path);
  LORA_CHECK(fs::is_regular_file(status), "{} '{}': not a regular file", what, path);
  const uintmax_t size = fs::file_size(path, ec);
  LORA_CHECK(!ec, "{} '{}': cannot read its size: {}", what, path, ec.message());
  LORA_CHECK(size <= max_bytes, "{} '{}': {} bytes, more than the {} accepted", what, path, size, max_bytes);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "{} '{}': cannot open: {}", what, path, std::strerror(errno));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  LORA_CHECK(static_cast<uintmax_t>(in.gcount()) == size, "{} '{}': read failed after {} of {} bytes", what, path,
             in.gcount(), size);
  return bytes;
}

}  // namespace lora
