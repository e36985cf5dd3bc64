// The node's own figures as metrics (read at scrape time from what the runtime and the
// cluster already count).
#pragma once

#include "otpp/health/metrics.hpp"
#include "otpp/node.hpp"

namespace otpp::health {
void add_node_metrics(metrics_registry& m, node& n);
}
