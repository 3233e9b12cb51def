// SHA-256 (FIPS 180-4): the digest of a byte string or of a file, as lowercase hex, for naming exactly which
// data a run trained on (training_settings.json) and for identifying data in checkpoints.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lora {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::string hex_digest();  // finishes the hash; call once

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed
};

std::string sha256_hex(std::string_view bytes);
// The file's digest, read in chunks; lora::Error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace lora
