// Private: a worker thread's scheduling slot (see scheduler.cpp).
#pragma once

#include <atomic>
#include <cstdint>

#include "otpp/process.hpp"

namespace otpp::detail {

struct worker_slot {
  // The wake-up deferred by the current turn of this worker (holds its own reference).
  alignas(64) std::atomic<process*> deferred{nullptr};
  std::atomic<std::uint32_t> epoch{0};
  std::atomic<std::uint64_t> turns{0};  // turns ended on this worker (written by it alone)
};

}  // namespace otpp::detail
