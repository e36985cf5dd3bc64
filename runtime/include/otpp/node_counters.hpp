// Node-wide counters for monitoring (otpp::health's metrics), monotonic since the node was
// made. Kept off the message path: spawns and exits count once per process, messages are
// summed from the processes' own counters (plus those of processes that ended) when read, and
// a completed call adds one relaxed count to a per-thread stripe.
#pragma once

#include <array>
#include <cstdint>

namespace otpp {

class node;

struct node_counters {
  std::uint64_t spawned = 0;           // processes started
  std::uint64_t exited = 0;            // processes ended
  std::uint64_t messages_handled = 0;  // calls, casts and infos handled, ended processes included
  // Calls made from this node (otpp::call, local and remote) that completed, by outcome:
  // [0] success, [e] a failure with otpp::errc e, [other_outcome] a failure of another
  // error category (or an errc past the table).
  static constexpr std::size_t other_outcome = 63;
  std::array<std::uint64_t, other_outcome + 1> calls{};
};

// A moment's reading (a process exiting meanwhile may be counted in both parts or neither:
// readers that need monotonic figures keep the largest seen).
node_counters counters(node& n);

}  // namespace otpp
