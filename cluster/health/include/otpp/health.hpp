// otpp::health: health registry, metrics, policy metrics (see cluster/health/README.md).
#pragma once

#include "otpp/health/metrics.hpp"
#include "otpp/health/observe.hpp"
#include "otpp/health/registry.hpp"
