// Metrics in the Prometheus text format (version 0.0.4): counters and gauges with labels,
// kept in a metrics_registry, plus collectors that read figures the runtime, the cluster and
// the policies already keep at the moment of a scrape (no second copy on their hot paths).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "otpp/result.hpp"

namespace otpp::health {

// Label pairs of one series, in the order given (rendered sorted by name).
using labels = std::vector<std::pair<std::string, std::string>>;

enum class metric_type { counter, gauge };

namespace detail {
struct cell {
  std::atomic<double> value{0};
};
}  // namespace detail

// A monotonic counter: a cheap handle (copy it), thread-safe, lock-free.
class counter {
 public:
  counter() = default;
  void inc(double by = 1) const {
    if (cell_ && by > 0) cell_->value.fetch_add(by, std::memory_order_relaxed);
  }
  double value() const { return cell_ ? cell_->value.load(std::memory_order_relaxed) : 0; }

 private:
  friend class metrics_registry;
  explicit counter(std::shared_ptr<detail::cell> c) : cell_(std::move(c)) {}
  std::shared_ptr<detail::cell> cell_;
};

// A value that goes up and down.
class gauge {
 public:
  gauge() = default;
  void set(double v) const {
    if (cell_) cell_->value.store(v, std::memory_order_relaxed);
  }
  void inc(double by = 1) const {
    if (cell_) cell_->value.fetch_add(by, std::memory_order_relaxed);
  }
  void dec(double by = 1) const { inc(-by); }
  double value() const { return cell_ ? cell_->value.load(std::memory_order_relaxed) : 0; }

 private:
  friend class metrics_registry;
  explicit gauge(std::shared_ptr<detail::cell> c) : cell_(std::move(c)) {}
  std::shared_ptr<detail::cell> cell_;
};

// What a collector reports at scrape time. Samples with an invalid name or labels, or whose
// type contradicts an earlier sample of that name, are dropped (and logged once per render).
class sample_sink {
 public:
  virtual void add(metric_type type, std::string_view name, std::string_view help, const labels& l,
                   double value) = 0;
  void counter(std::string_view name, std::string_view help, const labels& l, double value) {
    add(metric_type::counter, name, help, l, value);
  }
  void gauge(std::string_view name, std::string_view help, const labels& l, double value) {
    add(metric_type::gauge, name, help, l, value);
  }

 protected:
  ~sample_sink() = default;
};

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names: [a-zA-Z_][a-zA-Z0-9_]*, not starting
// with "__" (reserved by Prometheus).
bool valid_metric_name(std::string_view name) noexcept;
bool valid_label_name(std::string_view name) noexcept;

class metrics_registry {
 public:
  metrics_registry() = default;
  metrics_registry(const metrics_registry&) = delete;
  metrics_registry& operator=(const metrics_registry&) = delete;

  // The series (name, labels): created on first use, the same cell afterwards. Errors:
  // invalid_argument (a bad metric or label name, a duplicate label, or `name` already
  // registered with the other type).
  result<counter> make_counter(std::string_view name, std::string_view help, labels l = {});
  result<gauge> make_gauge(std::string_view name, std::string_view help, labels l = {});

  // Runs at every render(), on the rendering thread (an HTTP thread), after the registry's
  // own series: keep it short and non-blocking. It must not outlive what it reads.
  void add_collector(std::function<void(sample_sink&)> collector);

  // The Prometheus text exposition: per metric name (sorted) one HELP and one TYPE line, then
  // its samples; label values and help texts escaped.
  std::string render() const;

 private:
  struct family {
    metric_type type;
    std::string help;
    std::map<labels, std::shared_ptr<detail::cell>> series;  // labels sorted by name
  };
  result<std::shared_ptr<detail::cell>> cell_of(metric_type type, std::string_view name,
                                                std::string_view help, labels l);
  mutable std::mutex mutex_;
  std::map<std::string, family, std::less<>> families_;
  std::vector<std::function<void(sample_sink&)>> collectors_;
};

}  // namespace otpp::health
