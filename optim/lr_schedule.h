// Learning-rate schedules: constant, warm-up + cosine decay, warm-up + linear decay; lr_at(step), step from 0.
#pragma once

#include <cstdint>
#include <string_view>

namespace lora::optim {

enum class ScheduleKind { Constant, Cosine, Linear };

// "constant" | "cosine" | "linear"; throws lora::Error listing the valid names otherwise.
ScheduleKind parse_schedule(std::string_view name);
std::string_view schedule_name(ScheduleKind kind);

// Every kind warms up linearly over the first `warmup_steps` steps: lr_at(s) = lr (s + 1) / warmup_steps.
// After warm-up, with progress = (s - warmup_steps) / (total_steps - warmup_steps) clamped to [0, 1]:
//   constant: lr
//   cosine:   min_lr + 0.5 (lr - min_lr) (1 + cos(pi progress))
//   linear:   min_lr + (lr - min_lr) (1 - progress)
// so the decaying kinds reach min_lr (default 0) at total_steps and stay there.
struct LRSchedule {
  ScheduleKind kind = ScheduleKind::Constant;
  double lr = 1e-3;  // the peak learning rate
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // needed (> 0) by cosine and linear
  double min_lr = 0.0;

  // Throws lora::Error on a negative lr or step count, min_lr > lr, or a decaying kind without total_steps.
  void validate() const;
  double lr_at(int64_t step) const;
};

}  // namespace lora::optim
