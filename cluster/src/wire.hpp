// The cluster's frames (kinds >= transport::kind::first_app) and its stable status codes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <msgpack.hpp>

#include "otpp/cluster/membership.hpp"
#include "otpp/error.hpp"
#include "otpp/result.hpp"

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
inline constexpr std::uint8_t reply =
    0x22;  // [call id, status, body | reason (, category, value | , code, message, details)]
inline constexpr std::uint8_t signal =
    0x23;  // [signal, to serial, to creation, from serial, reason, ref, from link]
inline constexpr std::uint8_t down = 0x24;  // [to serial, to creation, ref, who, reason]
// An upper layer's frame: one byte of channel number, then that layer's own bytes.
inline constexpr std::uint8_t channel = 0x25;
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
  frame_too_large = 17,
  stale_epoch = 18,  // the registry's fencing refusal (a supervisor's host answers it)
  // Later additions: an older peer reads them as `other` (exit, with the reason text).
  not_found = 19,
  running = 20,
  restarting = 21,
  reached_max_restart_intensity = 22,
  would_block = 23,
  not_started = 24,
  circuit_open = 25,  // the resilience policies' refusals (a callee's own breaker, ...)
  bulkhead_full = 26,
  rate_limited = 27,
  // A handler's domain error: [id, status, text, code, message, details (bin, msgpack)]; an
  // older peer reads the text as an exit reason.
  domain_error = 28,
  operation_canceled = 29,
  other = 254,         // another otpp errc: reason text carries it
  foreign_error = 255  // a user's error category: category name and value follow
};

status to_status(const std::error_code& ec) noexcept;
errc to_errc(status s) noexcept;

// ---- parsing (everything that arrives from a peer goes through these; fuzzed)

// A frame's payload unpacked into a zone of its own (sized to the frame: msgpack's default
// 8 KiB chunk would cost more than most messages). Strings are copied into the zone, so views
// into it live as long as the zone.
struct decoded {
  std::unique_ptr<msgpack::zone> zone;
  msgpack::object root;
};
result<decoded> decode(const std::uint8_t* data, std::size_t size);

// send and call: a header array, then the body as its own msgpack object. The header is
// parsed on the I/O thread without allocating; the body stays bytes until the target's turn
// decodes it (decode_body), so the I/O thread allocates once per message (the envelope) and
// the body's zone is made and freed by the same thread.
struct message_frame {
  std::uint64_t to_serial = 0;
  std::uint32_t to_creation = 0;
  std::uint64_t from_serial = 0;
  bool info = false;                   // send: handle_info instead of handle_cast
  std::uint64_t call_id = 0;           // call
  std::string_view tag;                // valid until the next parse on this thread
  const std::uint8_t* body = nullptr;  // the rest of the payload: one msgpack object
  std::size_t body_size = 0;
};
struct reply_frame {
  std::uint64_t call_id = 0;
  status code = status::ok;
  const msgpack::object* body = nullptr;  // ok
  std::string reason;                     // errors
  std::string category;                   // foreign_error
  int value = 0;                          // foreign_error
  std::string domain_code;                // domain_error
  std::string domain_message;
  std::string details;  // domain_error: the details' msgpack bytes
};
struct signal_frame {
  signal_code code = signal_code::exit;
  std::uint64_t to_serial = 0;
  std::uint32_t to_creation = 0;
  std::uint64_t from_serial = 0;
  std::string reason;
  std::uint64_t ref = 0;
  bool from_link = false;
};
struct down_frame {
  std::uint64_t to_serial = 0;
  std::uint32_t to_creation = 0;
  std::uint64_t ref = 0;
  std::uint64_t who_serial = 0;  // the monitored process: always one of the sender's
  std::string reason;
};
struct state_frame {  // hello and gossip
  bool hidden = false;
  std::vector<gossip_entry> state;
};

// The header of a send or call frame (malformed_frame for a wrong shape or an empty body).
result<message_frame> parse_send(const std::uint8_t* data, std::size_t size);
result<message_frame> parse_call(const std::uint8_t* data, std::size_t size);
// A body (exactly one msgpack object) unpacked into `zone`: malformed_frame when it is not.
result<msgpack::object> decode_body(msgpack::zone& zone, const std::uint8_t* data,
                                    std::size_t size);

// Each answers malformed_frame (with what was wrong) for a payload of the wrong shape.
result<reply_frame> parse_reply(const msgpack::object& root);
result<signal_frame> parse_signal(const msgpack::object& root);
result<down_frame> parse_down(const msgpack::object& root);
result<state_frame> parse_hello(const msgpack::object& root);
result<state_frame> parse_gossip(const msgpack::object& root);
result<std::string> parse_blocked(const msgpack::object& root);

}  // namespace otpp::cluster::wire
