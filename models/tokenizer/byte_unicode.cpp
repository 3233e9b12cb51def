// GPT-2's bytes_to_unicode table and strict UTF-8 validation, encoding and decoding.
#include "models/tokenizer/byte_unicode.h"

#include <array>
#include <cstring>

namespace lora::tokenizer {

namespace {

constexpr int kTableEnd = 0x144;  // every mapped code point is below U+0144

struct ByteTable {
  std::array<char32_t, 256> to_unicode{};
  std::array<int16_t, kTableEnd> to_byte{};  // -1 where the code point stands for no byte

  constexpr ByteTable() {
    for (auto& b : to_byte) b = -1;
    // The same construction as GPT-2's encoder.py: printable bytes keep their value, the rest are
    // numbered from 256 upwards in byte order.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : next++;
      to_unicode[b] = static_cast<char32_t>(cp);
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

constexpr ByteTable kTable;
static_assert(kTable.to_unicode[' '] == 0x120 && kTable.to_unicode['\n'] == 0x10A);
static_assert(kTable.to_unicode[0xAD] == 0x143);  // the last byte numbered from 256

}  // namespace

char32_t byte_to_unicode(uint8_t byte) {
  return kTable.to_unicode[byte];
}

int unicode_to_byte(char32_t cp) {
  return cp < static_cast<char32_t>(kTableEnd) ? kTable.to_byte[cp] : -1;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Fast path: skip 8 ASCII bytes at a time (most text is mostly ASCII).
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates U+D800..U+DFFF
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;  // a continuation byte, C0/C1 (always overlong) or F5..FF
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

char32_t next_code_point(std::string_view s, size_t& pos) {
  const auto c = static_cast<unsigned char>(s[pos]);
  int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + k]) & 0x3F);
  pos += static_cast<size_t>(len);
  return cp;
}

void append_utf8_lossy(std::string& out, std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0, clean = 0;  // bytes[clean, i) are valid and not yet copied
  auto replace = [&](size_t skip) {
    out.append(bytes.data() + clean, i - clean);
    out += "\xEF\xBF\xBD";
    i += skip;
    clean = i;
  };
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      replace(1);
      continue;
    }
    // The maximal subpart: the lead byte and the continuation bytes that could still complete it.
    size_t k = 1;
    if (i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi) {
      k = 2;
      while (k < len && i + k < n && (p[i + k] & 0xC0) == 0x80) ++k;
    }
    if (k < len) {
      replace(k);
      continue;
    }
    i += len;
  }
  out.append(bytes.data() + clean, n - clean);
}

}  // namespace lora::tokenizer
