// Remote spawn's frames on cluster channel `spawn` (private to the registry).
//
// Every frame is a msgpack array [version, op, request id, ...]. Later versions append fields
// (a global name, its epoch): a reader takes the fields it knows and ignores the rest, and a
// field absent from an older sender's frame reads as its default, so a version bump is only
// for incompatible changes.
//   request: [1, 1, id, caller serial (0: none), behaviour, args (any), link, monitor ref (0:
//             none), local name, global name (""), global epoch (0: none)]
//   reply:   [1, 2, id, status, child serial (0 on error), reason]
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <msgpack.hpp>

#include "otpp/result.hpp"

namespace otpp::spawn_wire {

inline constexpr std::uint32_t version = 1;

enum class op : std::uint8_t { request = 1, reply = 2 };

// Pinned wire values (never errc numbers: those may be renumbered, these may not).
enum class status : std::uint8_t {
  ok = 0,
  unknown_behaviour = 1,
  bad_args = 2,
  init_failed = 3,
  already_registered = 4,
  not_authorised = 5,
  node_stopped = 6,
  malformed_request = 7,
  nodedown = 8,
  invalid_argument = 9,
  unsupported_version = 10,
  timeout = 11,      // the global name's claim was not answered in time
  stale_epoch = 12,  // the global name's epoch is below its highest registered one
  other = 255,       // an error this version cannot name: the reason text carries it
};

struct request {
  std::uint64_t id = 0;
  std::uint64_t caller_serial = 0;
  std::string behaviour;
  msgpack::object args;  // points into the decoded frame's zone
  bool link = false;
  std::uint64_t monitor_ref = 0;
  std::string local_name;
  std::string global_name;         // index 9 (absent from older senders: none)
  std::uint64_t global_epoch = 0;  // index 10 (absent from older senders: 0, none)
};

struct reply {
  std::uint64_t id = 0;
  status code = status::ok;
  std::uint64_t child_serial = 0;
  std::string reason;
};

// A decoded frame: its zone owns `args`. id_known: the request id was readable (a malformed
// request is then answered).
struct decoded {
  msgpack::object_handle frame;
  op kind = op::request;
  request req;
  reply rep;
};
struct decode_error {
  failure why;
  std::uint64_t id = 0;
  bool id_known = false;
  status code = status::malformed_request;
};

// Unpacks untrusted bytes with limits bounded by the frame size; never throws.
result<decoded> decode(std::span<const std::uint8_t> bytes, decode_error& error);
msgpack::sbuffer encode(const request& r, std::span<const char> packed_args);
msgpack::sbuffer encode(const reply& r);

status to_status(const std::error_code& e);
failure to_failure(status s, std::string reason);

}  // namespace otpp::spawn_wire
