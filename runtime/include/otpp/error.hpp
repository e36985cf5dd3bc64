// otpp error values: one error category for the whole project (DESIGN section 3).
#pragma once

#include <string>
#include <system_error>

namespace otpp {

enum class errc {
  ok = 0,
  timeout = 1,         // call did not complete in time
  noproc,              // no such process or name
  nodedown,            // node not reachable / connection lost
  bad_message,         // payload does not decode to the handler's type, or no handler for it
  exit,                // callee exited during the call (reason carried in the result)
  unknown_behaviour,   // remote spawn of a behaviour name nobody registered
  not_authorised,      // authentication failed
  already_registered,  // name taken
  mailbox_full,        // bounded mailbox or outgoing queue over its limit
  node_stopped,        // the node is stopping or stopped
  init_failed,         // gen_server init refused to start
  invalid_argument,    // malformed input (node id, option)
  // transport / wire
  frame_too_large,
  malformed_frame,
  bad_mac,
  version_mismatch,
  connection_closed,
  handshake_failed,
  unknown_frame_kind,
  heartbeat_timeout,
  tls_error,
  cookie_error,
  // supervisor
  not_found,   // no such child
  running,     // child already running
  restarting,  // child is being restarted
  reached_max_restart_intensity,
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
