// otpp::resilience: every policy and the pipeline (see cluster/resilience/README.md).
#pragma once

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/bulkhead.hpp"
#include "otpp/resilience/circuit_breaker.hpp"
#include "otpp/resilience/errors.hpp"
#include "otpp/resilience/fallback.hpp"
#include "otpp/resilience/hedge.hpp"
#include "otpp/resilience/node_breakers.hpp"
#include "otpp/resilience/pipeline.hpp"
#include "otpp/resilience/rate_limiter.hpp"
#include "otpp/resilience/retry.hpp"
#include "otpp/resilience/saga.hpp"
#include "otpp/resilience/timeout.hpp"
