// The health endpoint (registry::serve): cpp-httplib's server on threads of its own. Private:
// httplib.h stays out of the public headers.
#pragma once

#include <memory>

#include "otpp/health/registry.hpp"

namespace otpp::health {

class registry::http {
 public:
  static result<std::unique_ptr<http>> start(registry& owner, http_options o);
  ~http();
  void stop();  // idempotent; waits for the requests in flight
  std::uint16_t port() const noexcept { return port_; }

  struct impl;
  explicit http(std::unique_ptr<impl> i, std::uint16_t port);

 private:
  std::unique_ptr<impl> impl_;
  std::uint16_t port_ = 0;
};

}  // namespace otpp::health
