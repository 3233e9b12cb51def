// The thread's default device for tensor factories, and the guard that changes it.
#include "core/device.h"

namespace lora {
namespace {

thread_local Device g_default_device = Device::cpu();

}  // namespace

Device default_device() {
  return g_default_device;
}

DefaultDeviceGuard::DefaultDeviceGuard(Device device) : previous_(g_default_device) {
  g_default_device = device;
}
DefaultDeviceGuard::~DefaultDeviceGuard() {
  g_default_device = previous_;
}

}  // namespace lora
