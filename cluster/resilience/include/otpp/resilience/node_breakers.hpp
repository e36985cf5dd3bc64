// Per-node circuit breakers applied to every remote call: once enabled on a node, each call
// to another node (otpp::call by pid, local or global name) passes the breaker of its target
// node, made on first use from one set of options. A node_down of that node force-opens its
// breaker (calls to it are refused at once with circuit_open), a node_up resets it to closed;
// in between, the breaker opens and recovers on its own from the calls' outcomes.
//
//   res::enable_node_breakers(node, {.minimum_calls = 5, .wait_in_open = 2s});
//   auto b = res::node_breaker(node, "shop@10.0.0.2:4370");  // its state, metrics, reset()
//
// The breakers live in a service of the node; the node's cluster must be joined first.
#pragma once

#include <optional>
#include <string_view>

#include "otpp/resilience/circuit_breaker.hpp"

namespace otpp::resilience {

// invalid_argument when the node has not joined a cluster. Enabling again replaces the options
// (breakers made from then on).
result<void> enable_node_breakers(node& n, breaker_options o = {});
void disable_node_breakers(node& n);
// The breaker of calls to node `node_id` (made now if needed); nothing when not enabled.
std::optional<circuit_breaker> node_breaker(node& n, std::string_view node_id);

}  // namespace otpp::resilience
