#include "otpp/health/observe.hpp"

#include <array>

namespace otpp::health {

namespace res = otpp::resilience;

namespace {
// In enum order (the index is the value).
constexpr std::array states{res::breaker_state::closed, res::breaker_state::open,
                            res::breaker_state::half_open, res::breaker_state::disabled,
                            res::breaker_state::forced_open};
// The names are fixed and valid: make_counter cannot fail here.
counter counter_of(metrics_registry& m, const char* name, const char* help, labels l) {
  auto c = m.make_counter(name, help, std::move(l));
  return c ? *c : counter{};
}
}  // namespace

void observe(metrics_registry& m, const res::retry& r, std::string name) {
  const char* help = "Attempts of a retry policy by outcome (retried: failed, tried again).";
  auto success =
      counter_of(m, "otpp_retry_attempts_total", help, {{"policy", name}, {"outcome", "success"}});
  auto retried =
      counter_of(m, "otpp_retry_attempts_total", help, {{"policy", name}, {"outcome", "retried"}});
  auto failed =
      counter_of(m, "otpp_retry_attempts_total", help, {{"policy", name}, {"outcome", "failed"}});
  r.add_listener([success, retried, failed](const res::retry_event& e) {
    if (!e.error.code) {
      success.inc();
    } else if (e.will_retry) {
      retried.inc();
    } else {
      failed.inc();
    }
  });
}

void observe(metrics_registry& m, const res::circuit_breaker& b) {
  const std::string name = b.options().name;
  // By the state entered: a fixed set of series, made now (the listener must not reach the
  // registry, which may go before the breaker).
  std::array<counter, std::size(states)> into;
  for (std::size_t i = 0; i < states.size(); ++i) {
    into[i] = counter_of(m, "otpp_breaker_transitions_total",
                         "Circuit breaker transitions, by the state entered.",
                         {{"breaker", name}, {"to", res::to_string(states[i])}});
  }
  b.add_listener([into](res::breaker_state, res::breaker_state to) {
    into[static_cast<std::size_t>(to)].inc();
  });
  auto refused = counter_of(m, "otpp_breaker_refused_total",
                            "Calls a circuit breaker refused (circuit_open).", {{"breaker", name}});
  b.add_refusal_listener([refused](const failure&) { refused.inc(); });
  m.add_collector([b, name](sample_sink& s) {
    const auto now = b.state();
    for (auto st : states) {
      s.gauge("otpp_breaker_state", "1 for a circuit breaker's current state.",
              {{"breaker", name}, {"state", res::to_string(st)}}, st == now ? 1 : 0);
    }
  });
}

void observe(metrics_registry& m, const res::bulkhead& b) {
  const std::string name = b.options().name;
  auto rejected = counter_of(m, "otpp_bulkhead_rejected_total",
                             "Calls a bulkhead refused (bulkhead_full).", {{"bulkhead", name}});
  b.add_refusal_listener([rejected](const failure&) { rejected.inc(); });
  m.add_collector([b, name](sample_sink& s) {
    s.gauge("otpp_bulkhead_in_flight", "Calls holding a bulkhead slot.", {{"bulkhead", name}},
            static_cast<double>(b.in_flight()));
    s.gauge("otpp_bulkhead_waiting", "Calls waiting for a bulkhead slot.", {{"bulkhead", name}},
            static_cast<double>(b.waiting()));
  });
}

void observe(metrics_registry& m, const res::rate_limiter& r) {
  const std::string name = r.options().name;
  auto rejected =
      counter_of(m, "otpp_rate_limiter_rejected_total",
                 "Calls a rate limiter refused (rate_limited).", {{"rate_limiter", name}});
  r.add_refusal_listener([rejected](const failure&) { rejected.inc(); });
  m.add_collector([r, name](sample_sink& s) {
    s.gauge("otpp_rate_limiter_available_permits", "Permits a rate limiter holds now.",
            {{"rate_limiter", name}}, static_cast<double>(r.available()));
  });
}

}  // namespace otpp::health
