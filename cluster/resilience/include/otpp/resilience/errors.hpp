// Error classification for policies: is a failure worth another try (transient) or will the
// same call fail the same way (permanent)?
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <system_error>

#include "otpp/clock.hpp"
#include "otpp/result.hpp"

namespace otpp::resilience {

enum class error_class {
  none,       // no error
  transient,  // the peer or the path may recover: timeout, nodedown, connection lost,
              // mailbox_full, overloaded, exit (a supervisor restarts it), circuit_open,
              // bulkhead_full, rate_limited; system errors such as ECONNRESET, ETIMEDOUT
  permanent,  // the same call fails again: bad_message, unknown_behaviour, not_authorised,
              // noproc, invalid_argument, not_serializable, no_reply, node_stopped (this
              // node is going away), operation_aborted, operation_canceled (the caller gave
              // up), domain_error (the handler answered: the same call gets the same answer),
              // and any error it does not know
};

error_class classify(std::error_code ec) noexcept;
inline bool is_transient(std::error_code ec) noexcept {
  return classify(ec) == error_class::transient;
}
inline bool is_transient(errc e) noexcept {
  return is_transient(make_error_code(e));
}
inline bool is_transient(const failure& f) noexcept {
  return is_transient(f.code);
}

// circuit_open failures say when the breaker lets a trial call through: their reason reads
// "circuit '<name>' open: retry after <n>ms". The wait, or nothing for another failure.
std::optional<std::chrono::milliseconds> retry_after(const failure& f);
// The reason text of a circuit_open failure (what retry_after parses).
std::string circuit_open_reason(const std::string& name, clock_type::duration wait);

}  // namespace otpp::resilience
