// Per-policy metrics: observe(metrics, policy) adds a policy's counters (through its listener
// hooks) and gauges (read at scrape time) to a metrics_registry, labelled by the policy's name.
// The registry keeps the policy's shared state alive: it must not outlive the policy's node.
#pragma once

#include <string>

#include "otpp/health/metrics.hpp"
#include "otpp/resilience/bulkhead.hpp"
#include "otpp/resilience/circuit_breaker.hpp"
#include "otpp/resilience/rate_limiter.hpp"
#include "otpp/resilience/retry.hpp"

namespace otpp::health {

// otpp_retry_attempts_total{policy, outcome=success|retried|failed}
void observe(metrics_registry& m, const resilience::retry& r, std::string name);
// otpp_breaker_state{breaker, state} (1 for the current state, 0 for the others),
// otpp_breaker_transitions_total{breaker, to}, otpp_breaker_refused_total{breaker}
void observe(metrics_registry& m, const resilience::circuit_breaker& b);
// otpp_bulkhead_in_flight / _waiting{bulkhead}, otpp_bulkhead_rejected_total{bulkhead}
void observe(metrics_registry& m, const resilience::bulkhead& b);
// otpp_rate_limiter_available_permits{rate_limiter}, otpp_rate_limiter_rejected_total{...}
void observe(metrics_registry& m, const resilience::rate_limiter& r);

}  // namespace otpp::health
