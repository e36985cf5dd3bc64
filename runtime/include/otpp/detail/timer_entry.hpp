// An entry of a node's timer service (call timeouts, send_after, idle timeouts): intrusive,
// so arming and cancelling allocate nothing.
#pragma once

#include <cstdint>

#include "otpp/clock.hpp"

namespace otpp::detail {

struct timer_bucket;

class timer_entry {
 public:
  // Due: called once, outside the service's lock, after the entry left its list.
  virtual void expire() = 0;
  // The service is going away with the entry still listed (node destroyed).
  virtual void discard() = 0;

  // Owned by the timer service, under its lock.
  timer_entry* timer_prev = nullptr;
  timer_entry* timer_next = nullptr;
  time_point due{};
  timer_bucket* bucket = nullptr;  // non-null while listed
  std::uint64_t timer_id = 0;      // non-zero: cancellable by id (send_after)

 protected:
  timer_entry() = default;
  ~timer_entry() = default;
};

}  // namespace otpp::detail
