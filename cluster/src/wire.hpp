// The cluster's frames (kinds >= transport::kind::first_app) and its stable status codes.
#pragma once

#include <cstdint>
#include <string>
#include <system_error>

#include "otpp/error.hpp"

namespace otpp::cluster::wire {

inline constexpr std::uint32_t protocol_version = 1;

// Control frames go to the membership strand; data frames are handled on the connection's I/O
// thread and pushed straight into the target's inbox.
namespace kind {
inline constexpr std::uint8_t hello = 0x10;    // [version, hidden, state]
inline constexpr std::uint8_t gossip = 0x11;   // [state]
inline constexpr std::uint8_t leave = 0x12;    // []: graceful leave follows
inline constexpr std::uint8_t blocked = 0x13;  // [reason]: your incarnation was downed
inline constexpr std::uint8_t send =
    0x20;  // [to serial, to creation, from serial, info, tag, body]
inline constexpr std::uint8_t call =
    0x21;  // [to serial, to creation, from serial, call id, tag, body]
inline constexpr std::uint8_t reply = 0x22;  // [call id, status, body | reason (, category, value)]
inline constexpr std::uint8_t signal =
    0x23;  // [signal, to serial, to creation, from serial, reason, ref, from link]
inline constexpr std::uint8_t down = 0x24;  // [to serial, to creation, ref, who, reason]
}  // namespace kind

// Signals on the wire (never the runtime's enum values: those may change).
enum class signal_code : std::uint8_t {
  exit = 0,
  link = 1,
  unlink = 2,
  monitor = 3,
  demonitor = 4,
  stop = 5
};

// Reply status: pinned numbers, independent of otpp::errc.
enum class status : std::uint8_t {
  ok = 0,
  timeout = 1,
  noproc = 2,
  nodedown = 3,
  bad_message = 4,
  exit = 5,
  unknown_behaviour = 6,
  not_authorised = 7,
  already_registered = 8,
  mailbox_full = 9,
  node_stopped = 10,
  no_reply = 11,
  not_serializable = 12,
  calling_self = 13,
  init_failed = 14,
  invalid_argument = 15,
  overloaded = 16,
  other = 254,         // another otpp errc: reason text carries it
  foreign_error = 255  // a user's error category: category name and value follow
};

status to_status(const std::error_code& ec) noexcept;
errc to_errc(status s) noexcept;

}  // namespace otpp::cluster::wire
