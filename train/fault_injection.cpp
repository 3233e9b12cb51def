// fault_point: SIGKILL at the chosen hit of a named point (LORA_FAULT_INJECT="<point>:<n>").
#include "train/fault_injection.h"

#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace lora::train {

void fault_point(const char* name) {
  static const char* spec = std::getenv("LORA_FAULT_INJECT");
  if (!spec) return;
  static const std::string text(spec);
  static const size_t colon = text.rfind(':');
  static const std::string point = colon == std::string::npos ? text : text.substr(0, colon);
  static const long target = colon == std::string::npos ? 1 : std::strtol(text.c_str() + colon + 1, nullptr, 10);
  static long hits = 0;
  if (point != name) return;
  if (++hits == target) ::raise(SIGKILL);
}

}  // namespace lora::train
