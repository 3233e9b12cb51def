// Learning-rate schedules: parsing the kind and the formulas of lr_at (see lr_schedule.h).
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace lora::optim {

ScheduleKind parse_schedule(std::string_view name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "cosine") return ScheduleKind::Cosine;
  if (name == "linear") return ScheduleKind::Linear;
  LORA_FAIL("unknown learning-rate schedule '{}' (expected constant, cosine or linear)", std::string(name));
}

std::string_view schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Constant:
      return "constant";
    case ScheduleKind::Cosine:
      return "cosine";
    case ScheduleKind::Linear:
      return "linear";
  }
  return "?";
}

void LRSchedule::validate() const {
  LORA_CHECK(lr >= 0.0, "lr schedule: lr must be >= 0, got {}", lr);
  LORA_CHECK(min_lr >= 0.0 && min_lr <= lr, "lr schedule: min_lr must be in [0, lr = {}], got {}", lr, min_lr);
  LORA_CHECK(warmup_steps >= 0, "lr schedule: warmup_steps must be >= 0, got {}", warmup_steps);
  LORA_CHECK(kind == ScheduleKind::Constant || total_steps > 0, "lr schedule '{}': total_steps must be > 0, got {}",
             schedule_name(kind), total_steps);
}

double LRSchedule::lr_at(int64_t step) const {
  validate();
  LORA_CHECK(step >= 0, "lr schedule: step must be >= 0, got {}", step);
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::Constant) return lr;
  // progress in [0, 1] over the decay phase; a decay phase of no steps is over at once.
  const int64_t decay_steps = total_steps - warmup_steps;
  const double progress =
      decay_steps <= 0 ? 1.0 : std::clamp(static_cast<double>(step - warmup_steps) / decay_steps, 0.0, 1.0);
  if (kind == ScheduleKind::Cosine) return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
  return min_lr + (lr - min_lr) * (1.0 - progress);  // Linear
}

}  // namespace lora::optim
