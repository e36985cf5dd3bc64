#include "otpp/resilience/errors.hpp"

#include <asio/error.hpp>
#include <charconv>

namespace otpp::resilience {

error_class classify(std::error_code ec) noexcept {
  if (!ec) return error_class::none;
  if (ec.category() == otpp::error_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::timeout:
      case errc::nodedown:
      case errc::exit:
      case errc::mailbox_full:
      case errc::connection_closed:
      case errc::heartbeat_timeout:
      case errc::write_stalled:
      case errc::overloaded:
      case errc::graceful_shutdown:  // the peer left on purpose: a restart may bring it back
      case errc::downed:             // its next incarnation may join
      case errc::minority:           // the split may heal
      case errc::connection_refused:
      case errc::handshake_failed:
      case errc::restarting:
      case errc::circuit_open:
      case errc::bulkhead_full:
      case errc::rate_limited:
        return error_class::transient;
      default:
        return error_class::permanent;
    }
  }
  if (ec == asio::error::operation_aborted) return error_class::permanent;  // cancelled on purpose
  // Network and resource errors from the OS (or Asio, whose system errors use the same values).
  if (ec == std::errc::timed_out || ec == std::errc::connection_reset ||
      ec == std::errc::connection_refused || ec == std::errc::connection_aborted ||
      ec == std::errc::broken_pipe || ec == std::errc::host_unreachable ||
      ec == std::errc::network_unreachable || ec == std::errc::network_down ||
      ec == std::errc::not_connected || ec == std::errc::resource_unavailable_try_again ||
      ec == std::errc::device_or_resource_busy || ec == asio::error::eof)
    return error_class::transient;
  return error_class::permanent;
}

namespace {
constexpr std::string_view retry_marker = "retry after ";
}

std::string circuit_open_reason(const std::string& name, clock_type::duration wait) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  if (ms < 0) ms = 0;
  return "circuit '" + name + "' open: " + std::string(retry_marker) + std::to_string(ms) + "ms";
}

std::optional<std::chrono::milliseconds> retry_after(const failure& f) {
  if (f.code != errc::circuit_open) return std::nullopt;
  auto at = f.reason.rfind(retry_marker);
  if (at == std::string::npos) return std::nullopt;
  const char* first = f.reason.data() + at + retry_marker.size();
  const char* last = f.reason.data() + f.reason.size();
  long long ms = 0;
  auto [end, ec] = std::from_chars(first, last, ms);
  if (ec != std::errc{} || end == first) return std::nullopt;
  return std::chrono::milliseconds(ms);
}

}  // namespace otpp::resilience
