// Fault injection for tests of crash safety: LORA_FAULT_INJECT="<point>:<n>" makes the process kill itself
// with SIGKILL the n-th time it reaches fault_point("<point>") (counted from 1). Unset, a fault point costs
// one comparison. Points: "checkpoint-commit" (a checkpoint's files are written, not yet committed),
// "train-step" (between backward and the optimizer update).
#pragma once

namespace lora::train {

void fault_point(const char* name);

}  // namespace lora::train
