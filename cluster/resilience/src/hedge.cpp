#include "otpp/resilience/hedge.hpp"

#include "otpp/log.hpp"

namespace otpp::resilience::detail {

void log_hedge(std::size_t index) {
  log(log_level::debug, "resilience", "hedge: no answer yet, attempt ", index + 1, " started");
}

}  // namespace otpp::resilience::detail
