// Private: a worker thread's scheduling slot (see scheduler.cpp).
#pragma once

#include <atomic>
#include <cstdint>

#include "otpp/process.hpp"

namespace otpp::detail {

// Written by its worker alone (plain relaxed stores), read by the watchman.
struct worker_slot {
  // The wake-up deferred by the current turn: the process's serial (0: none) and epoch.
  alignas(64) std::atomic<std::uint64_t> serial{0};
  std::atomic<std::uint32_t> epoch{0};
  std::atomic<std::uint64_t> turns{0};  // turns started or ended on this worker
};

}  // namespace otpp::detail
