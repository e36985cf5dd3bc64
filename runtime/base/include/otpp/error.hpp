// otpp error values: one error category for the whole project.
#pragma once

#include <string>
#include <system_error>

namespace otpp {

// Values are pinned: they are stable across releases (logs, persisted codes). The wire does
// not carry them: the transport and the cluster have their own status enums mapped at the edge.
enum class errc {
  ok = 0,
  timeout = 1,             // call did not complete in time
  noproc = 2,              // no such process or name
  nodedown = 3,            // node not reachable / connection lost
  bad_message = 4,         // payload does not decode to the handler's type, or no handler for it
  exit = 5,                // callee exited during the call (reason carried in the result)
  unknown_behaviour = 6,   // remote spawn of a behaviour name nobody registered
  not_authorised = 7,      // authentication failed
  already_registered = 8,  // name taken
  mailbox_full = 9,        // bounded mailbox or outgoing queue over its limit
  node_stopped = 10,       // the node is stopping or stopped
  init_failed = 11,        // gen_server init refused to start
  invalid_argument = 12,   // malformed input (node id, option)
  // transport / wire
  frame_too_large = 13,
  malformed_frame = 14,
  bad_mac = 15,
  version_mismatch = 16,
  connection_closed = 17,
  handshake_failed = 18,
  unknown_frame_kind = 19,
  heartbeat_timeout = 20,
  tls_error = 21,
  cookie_error = 22,
  // supervisor
  not_found = 23,   // no such child
  running = 24,     // child already running
  restarting = 25,  // child is being restarted
  reached_max_restart_intensity = 26,
  // runtime
  calling_self = 27,  // a process called itself (it would wait out its own timeout)
  would_block = 28,   // a blocking wait from a process thread (it could deadlock the node)
  not_started = 29,   // the node has not been started (nothing would ever run the call)
  no_reply = 30,      // the callee dropped the reply without answering
  // a message or reply type without msgpack mapping cannot leave the node
  not_serializable = 31,
  // transport
  write_stalled = 32,  // a peer that does not read: no write progress within the stall timeout
  weak_secret = 33,    // a secret (or cookie) under 128 bits
  overloaded = 34,     // refused to protect the node (too many pending handshakes, ...)
  // cluster
  graceful_shutdown = 35,  // the node left the cluster on purpose (node.stop())
  downed = 36,    // removed by the downing rule (silence, a split): its incarnation is blocked
  minority = 37,  // this node is on the losing side of a split: not a member any more
  // transport
  connection_refused = 38,  // nothing listens at the address (TCP connect refused)
  // registry
  stale_epoch = 39,  // a registration's epoch (fencing token) is below one already registered
  // resilience policies (cluster/resilience): refused before the call was tried
  circuit_open = 40,   // a circuit breaker is open (the reason says when to retry)
  bulkhead_full = 41,  // no free slot in a bulkhead, and its wait queue full or waited out
  rate_limited = 42,   // no permit of a rate limiter within its wait timeout
  // a handler's answer, not a system failure: code, message and details in the reason
  // (otpp/domain_error.hpp reads them)
  domain_error = 43,
  operation_canceled = 44,  // the caller cancelled the operation (Asio cancellation slot)
  // transport: the two ends accept no record protection in common (config::record_protections)
  protection_mismatch = 45,
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

namespace detail {
class otpp_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "otpp"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok:
        return "ok";
      case errc::timeout:
        return "timeout";
      case errc::noproc:
        return "noproc: no such process or name";
      case errc::nodedown:
        return "nodedown: node not reachable";
      case errc::bad_message:
        return "bad_message: payload does not match any handler";
      case errc::exit:
        return "exit: callee exited during the call";
      case errc::unknown_behaviour:
        return "unknown_behaviour";
      case errc::not_authorised:
        return "not_authorised";
      case errc::already_registered:
        return "already_registered";
      case errc::mailbox_full:
        return "mailbox_full: queue over its bound";
      case errc::node_stopped:
        return "node_stopped";
      case errc::init_failed:
        return "init_failed";
      case errc::invalid_argument:
        return "invalid_argument";
      case errc::frame_too_large:
        return "frame_too_large";
      case errc::malformed_frame:
        return "malformed_frame";
      case errc::bad_mac:
        return "bad_mac: frame authentication failed";
      case errc::version_mismatch:
        return "version_mismatch";
      case errc::connection_closed:
        return "connection_closed";
      case errc::handshake_failed:
        return "handshake_failed";
      case errc::unknown_frame_kind:
        return "unknown_frame_kind";
      case errc::heartbeat_timeout:
        return "heartbeat_timeout";
      case errc::tls_error:
        return "tls_error";
      case errc::cookie_error:
        return "cookie_error";
      case errc::not_found:
        return "not_found";
      case errc::running:
        return "running";
      case errc::restarting:
        return "restarting";
      case errc::reached_max_restart_intensity:
        return "reached_max_restart_intensity";
      case errc::calling_self:
        return "calling_self: a process cannot call itself";
      case errc::would_block:
        return "would_block: blocking wait on a process thread";
      case errc::not_started:
        return "not_started: the node was not started";
      case errc::no_reply:
        return "no_reply: the callee dropped the reply";
      case errc::not_serializable:
        return "not_serializable: type has no msgpack mapping";
      case errc::write_stalled:
        return "write_stalled: the peer does not read";
      case errc::weak_secret:
        return "weak_secret: at least 16 random bytes are required";
      case errc::overloaded:
        return "overloaded: refused to protect the node";
      case errc::graceful_shutdown:
        return "graceful_shutdown: the node left the cluster";
      case errc::downed:
        return "downed: removed from the cluster by the downing rule";
      case errc::minority:
        return "minority: this node is on the losing side of a split";
      case errc::connection_refused:
        return "connection_refused: nothing listens at that address";
      case errc::stale_epoch:
        return "stale_epoch: a newer epoch of that name was registered";
      case errc::circuit_open:
        return "circuit_open: calls refused while the circuit breaker is open";
      case errc::bulkhead_full:
        return "bulkhead_full: too many concurrent calls";
      case errc::rate_limited:
        return "rate_limited: call rate over its limit";
      case errc::domain_error:
        return "domain_error";
      case errc::operation_canceled:
        return "operation_canceled: cancelled by the caller";
      case errc::protection_mismatch:
        return "protection_mismatch: no record protection in common with the peer";
    }
    return "otpp error " + std::to_string(value);
  }
};
}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::otpp_category category;
  return category;
}

}  // namespace otpp

template <>
struct std::is_error_code_enum<otpp::errc> : std::true_type {};
