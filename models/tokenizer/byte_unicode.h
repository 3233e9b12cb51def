// GPT-2's byte <-> unicode table (bytes_to_unicode) and the strict UTF-8 helpers the tokenizer uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lora::tokenizer {

// ---------------------------------------------------------------------------------------------------
// bytes_to_unicode: GPT-2 writes every byte 0..255 as one printable code point in U+0021..U+0143, so
// that vocabulary strings never hold whitespace or control characters. Printable Latin-1 bytes
// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the other 68 bytes map, in order, to U+0100.. .
// Example: space 0x20 -> 'Ġ' U+0120, newline 0x0A -> 'Ċ' U+010A.

// The code point that stands for `byte`.
char32_t byte_to_unicode(uint8_t byte);

// The byte that `cp` stands for, or -1 when `cp` is not in the table.
int unicode_to_byte(char32_t cp);

// ---------------------------------------------------------------------------------------------------
// UTF-8 (strict, RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).

// Byte offset of the first byte that starts an invalid or truncated sequence, or npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

// Append the UTF-8 encoding of `cp` (a valid scalar value) to `out`.
void append_utf8(std::string& out, char32_t cp);

// Decode the code point that starts at s[pos] and advance pos past it. `s` must be valid UTF-8.
char32_t next_code_point(std::string_view s, size_t& pos);

// Append `bytes` to `out` as valid UTF-8: each maximal ill-formed subsequence becomes one U+FFFD (the
// Unicode recommendation, as Rust's String::from_utf8_lossy and Python's errors="replace" do).
void append_utf8_lossy(std::string& out, std::string_view bytes);

}  // namespace lora::tokenizer
