#include "otpp/health/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "otpp/log.hpp"

namespace otpp::health {

namespace {

bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':')) return true;
  return !first && c >= '0' && c <= '9';
}

// Sorted by label name; invalid_argument on a bad or duplicate label name.
result<labels> normalise(labels l) {
  for (const auto& [k, v] : l) {
    if (!valid_label_name(k)) return failure(errc::invalid_argument, "bad label name '" + k + "'");
  }
  std::stable_sort(l.begin(), l.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 1; i < l.size(); ++i) {
    if (l[i].first == l[i - 1].first)
      return failure(errc::invalid_argument, "duplicate label '" + l[i].first + "'");
  }
  return l;
}

void escape_into(std::string& out, std::string_view s, bool quotes) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quotes && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void value_into(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    out += std::to_string(static_cast<long long>(v));
  } else {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
}

const char* type_name(metric_type t) {
  return t == metric_type::counter ? "counter" : "gauge";
}

// One render's view: the registry's series and the collectors' samples, merged by name.
struct snapshot final : sample_sink {
  struct fam {
    metric_type type;
    std::string help;
    std::map<labels, double> series;
  };
  std::map<std::string, fam, std::less<>> families;
  std::size_t dropped = 0;
  std::string first_dropped;

  void add(metric_type type, std::string_view name, std::string_view help, const labels& l,
           double value) override {
    auto sorted = normalise(l);
    if (!valid_metric_name(name) || !sorted) return drop(name);
    auto it = families.find(name);
    if (it == families.end()) {
      it = families.emplace(std::string(name), fam{type, std::string(help), {}}).first;
    } else if (it->second.type != type) {
      return drop(name);
    }
    if (!it->second.series.emplace(std::move(*sorted), value).second) drop(name);
  }
  void drop(std::string_view name) {
    if (dropped++ == 0) first_dropped = std::string(name);
  }
};

}  // namespace

bool valid_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, true)) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) noexcept {
  if (name.empty() || name.starts_with("__")) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, false)) return false;
  }
  return true;
}

result<std::shared_ptr<detail::cell>> metrics_registry::cell_of(metric_type type,
                                                                std::string_view name,
                                                                std::string_view help, labels l) {
  if (!valid_metric_name(name))
    return failure(errc::invalid_argument, "bad metric name '" + std::string(name) + "'");
  auto sorted = normalise(std::move(l));
  if (!sorted) return sorted.fail();
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), family{type, std::string(help), {}}).first;
  } else if (it->second.type != type) {
    return failure(errc::invalid_argument,
                   "metric '" + std::string(name) + "' is a " + type_name(it->second.type));
  }
  auto& c = it->second.series[std::move(*sorted)];
  if (!c) c = std::make_shared<detail::cell>();
  return c;
}

result<counter> metrics_registry::make_counter(std::string_view name, std::string_view help,
                                               labels l) {
  auto c = cell_of(metric_type::counter, name, help, std::move(l));
  if (!c) return c.fail();
  return counter(std::move(*c));
}

result<gauge> metrics_registry::make_gauge(std::string_view name, std::string_view help, labels l) {
  auto c = cell_of(metric_type::gauge, name, help, std::move(l));
  if (!c) return c.fail();
  return gauge(std::move(*c));
}

void metrics_registry::add_collector(std::function<void(sample_sink&)> collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string metrics_registry::render() const {
  snapshot s;
  std::vector<std::function<void(sample_sink&)>> collectors;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, f] : families_) {
      auto& out = s.families.emplace(name, snapshot::fam{f.type, f.help, {}}).first->second;
      for (const auto& [l, c] : f.series)
        out.series.emplace(l, c->value.load(std::memory_order_relaxed));
    }
    collectors = collectors_;
  }
  // Collectors run unlocked: they may take other locks (the node's process table).
  for (const auto& c : collectors) c(s);
  if (s.dropped > 0) {
    log(log_level::warning, "health", "metrics: ", s.dropped,
        " invalid or conflicting samples dropped (first: '", s.first_dropped, "')");
  }
  std::string out;
  out.reserve(4096);
  for (const auto& [name, f] : s.families) {
    out += "# HELP ";
    out += name;
    out += ' ';
    escape_into(out, f.help, false);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type_name(f.type);
    out += '\n';
    for (const auto& [l, v] : f.series) {
      out += name;
      if (!l.empty()) {
        out += '{';
        for (std::size_t i = 0; i < l.size(); ++i) {
          if (i) out += ',';
          out += l[i].first;
          out += "=\"";
          escape_into(out, l[i].second, true);
          out += '"';
        }
        out += '}';
      }
      out += ' ';
      value_into(out, v);
      out += '\n';
    }
  }
  return out;
}

}  // namespace otpp::health
