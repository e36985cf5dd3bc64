// Minimal thread-safe logging. Every rejected input and every abnormal exit leaves a line.
// The sink is replaceable (tests capture lines; applications route to their own logger).
#pragma once

#include <atomic>
#include <cstdio>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

namespace otpp {

enum class log_level { trace = 0, debug, info, warning, error, off };

inline const char* to_string(log_level l) {
  switch (l) {
    case log_level::trace:
      return "trace";
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warning:
      return "warning";
    case log_level::error:
      return "error";
    case log_level::off:
      return "off";
  }
  return "?";
}

using log_sink = std::function<void(log_level, std::string_view component, std::string_view text)>;

namespace detail {
struct log_state {
  std::atomic<int> level{static_cast<int>(log_level::info)};
  std::mutex mutex;
  log_sink sink;  // empty: stderr
};
inline log_state& log_global() {
  static log_state state;
  return state;
}
}  // namespace detail

inline void set_log_level(log_level l) {
  detail::log_global().level.store(static_cast<int>(l), std::memory_order_relaxed);
}
inline log_level get_log_level() {
  return static_cast<log_level>(detail::log_global().level.load(std::memory_order_relaxed));
}
// Replace the sink; returns the previous one. An empty sink writes to stderr.
inline log_sink set_log_sink(log_sink sink) {
  auto& g = detail::log_global();
  std::lock_guard lock(g.mutex);
  return std::exchange(g.sink, std::move(sink));
}
inline bool log_enabled(log_level l) {
  return static_cast<int>(l) >= detail::log_global().level.load(std::memory_order_relaxed);
}

inline void log_write(log_level l, std::string_view component, std::string_view text) {
  if (!log_enabled(l)) return;
  auto& g = detail::log_global();
  std::lock_guard lock(g.mutex);
  if (g.sink) {
    g.sink(l, component, text);
  } else {
    std::fprintf(stderr, "otpp %s [%.*s] %.*s\n", to_string(l), static_cast<int>(component.size()),
                 component.data(), static_cast<int>(text.size()), text.data());
  }
}

// log(level, "transport", "closing: ", reason, " peer ", id);
template <class... Args>
void log(log_level l, std::string_view component, Args&&... args) {
  if (!log_enabled(l)) return;
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  log_write(l, component, out.str());
}

}  // namespace otpp
