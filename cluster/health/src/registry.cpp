#include "otpp/health/registry.hpp"

#include <algorithm>
#include <cstdio>
#include <mutex>

#include <asio/post.hpp>
#include <nlohmann/json.hpp>

#include "http.hpp"
#include "node_metrics.hpp"
#include "otpp/call.hpp"
#include "otpp/cluster/cluster.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"

namespace otpp::health {

const char* to_string(status s) noexcept {
  switch (s) {
    case status::healthy:
      return "healthy";
    case status::degraded:
      return "degraded";
    case status::unhealthy:
      return "unhealthy";
  }
  return "?";
}

namespace {

double ms_of(clock_type::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string ms_text(clock_type::duration d) {
  return std::to_string(std::chrono::ceil<std::chrono::milliseconds>(d).count()) + "ms";
}

// The liveness probe: a process that answers at once.
struct probe_ping {
  static constexpr std::string_view tag = "otpp.health.ping";
  using reply = int;
};
class probe : public gen_server<probe> {
 public:
  static void define_handlers(handlers<probe>& h) {
    h.call<probe_ping>([](probe&, probe_ping) { return 0; });
  }
};

// Readiness's built-in check: this node is an up member of its cluster.
check_result cluster_check(node& n) {
  auto* c = cluster::find(n);
  if (!c) return check_result::unhealthy("not joined to a cluster");
  if (c->downed()) return check_result::unhealthy("downed by the cluster: restart to rejoin");
  if (c->in_minority()) return check_result::unhealthy("in a minority partition");
  std::size_t up = 0;
  bool self_up = false;
  for (const auto& m : c->members()) {
    if (m.status != cluster::member_status::up) continue;
    ++up;
    self_up = self_up || m.self;
  }
  if (!self_up) return check_result::unhealthy("this node is not an up member");
  return check_result::healthy(std::to_string(up) + " members up");
}

// One run of several checks: each finishes once (its result or its timeout), the last one
// completes the report.
struct run : std::enable_shared_from_this<run> {
  struct entry {
    check_fn fn;
    check_options options;
    bool finished = false;
    timer_ref timer{};
    std::string timeout_detail{};  // empty: "timed out after <timeout>"
  };
  run(node& n, std::shared_ptr<std::atomic<bool>> gone, std::function<void(health_report)> h)
      : owner(n), node_gone(std::move(gone)), handler(std::move(h)), started(n.now()) {}

  void add_done(std::string name, check_result r, bool critical) {
    report.checks.push_back({std::move(name), r.state, std::move(r.detail), {}, critical});
    entries.push_back({nullptr, {}, true, {}, {}});
  }
  void add(std::string name, check_fn fn, check_options o, std::string timeout_detail = {}) {
    report.checks.push_back({std::move(name), status::healthy, {}, {}, o.critical});
    entries.push_back({std::move(fn), o, false, {}, std::move(timeout_detail)});
    ++remaining;
  }

  void start() {
    if (remaining == 0) return complete();
    auto self = shared_from_this();
    for (std::size_t i = 0; i < entries.size(); ++i) {
      auto& e = entries[i];
      if (e.finished) continue;
      // Each check starts on the node's pool (concurrently), never on the caller's thread.
      asio::post(owner.context(), [self, i, fn = e.fn] {
        try {
          fn([self, i](check_result r) { self->finish(i, std::move(r)); });
        } catch (const std::exception& ex) {
          self->finish(i, check_result::unhealthy(std::string("check threw: ") + ex.what()));
        } catch (...) {
          self->finish(i, check_result::unhealthy("check threw"));
        }
      });
      auto why = e.timeout_detail.empty() ? "timed out after " + ms_text(e.options.timeout)
                                          : e.timeout_detail;
      auto t = owner.run_after(e.options.timeout, [self, i, why] {
        self->finish(i, {status::unhealthy, why}, true);
      });
      bool cancel = false;
      {
        std::lock_guard lock(mutex);
        e.timer = t;
        cancel = e.finished;
      }
      if (cancel) owner.cancel_timer(t);
    }
  }

  void finish(std::size_t i, check_result r, bool timed_out = false) {
    if (node_gone->load()) return;
    const auto now = owner.now();
    timer_ref t{};
    bool last = false;
    {
      std::lock_guard lock(mutex);
      auto& e = entries[i];
      if (e.finished) return;  // a late answer after its timeout, or a second done
      e.finished = true;
      t = e.timer;
      auto& c = report.checks[i];
      c.state = r.state;
      c.detail = std::move(r.detail);
      c.duration = now - started;
      if (timed_out && !e.options.critical) c.state = status::degraded;
      last = --remaining == 0;
    }
    if (!timed_out && t.id != 0) owner.cancel_timer(t);
    if (last) complete();
  }

  void complete() {
    status worst = status::healthy;
    for (const auto& c : report.checks) {
      auto s = c.critical ? c.state : std::min(c.state, status::degraded);
      worst = std::max(worst, s);
    }
    report.state = worst;
    report.duration = owner.now() - started;
    auto h = std::move(handler);
    h(std::move(report));
  }

  node& owner;
  std::shared_ptr<std::atomic<bool>> node_gone;
  std::function<void(health_report)> handler;
  time_point started;
  std::mutex mutex;
  std::vector<entry> entries;
  health_report report;
  std::size_t remaining = 0;
};

}  // namespace

std::string to_json(const health_report& r) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : r.checks) {
    checks.push_back({{"name", c.name},
                      {"status", to_string(c.state)},
                      {"detail", c.detail},
                      {"duration_ms", ms_of(c.duration)},
                      {"critical", c.critical}});
  }
  nlohmann::json j{{"status", to_string(r.state)},
                   {"duration_ms", ms_of(r.duration)},
                   {"checks", std::move(checks)}};
  // Replace, not throw, on invalid UTF-8 in a detail text.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct registry::state {
  struct check {
    std::string name;
    check_fn fn;
    check_options options;
  };
  std::mutex mutex;
  std::vector<check> checks;
  bool require_cluster = true;
  pid probe{};
  std::shared_ptr<std::atomic<bool>> node_gone = std::make_shared<std::atomic<bool>>(false);
};

registry::registry(node& n)
    : node_(n), state_(std::make_shared<state>()), metrics_(std::make_unique<metrics_registry>()) {
  add_node_metrics(*metrics_, n);
  // The endpoint ends with the node's stop (before its processes), not only at destruction.
  n.add_stop_hook([this] { stop(); });
}

registry::~registry() {
  stop();
  state_->node_gone->store(true);
}

result<void> registry::add_check(std::string name, check_fn f, check_options o) {
  if (name.empty()) return failure(errc::invalid_argument, "a check needs a name");
  if (!f) return failure(errc::invalid_argument, "check '" + name + "' has no function");
  std::lock_guard lock(state_->mutex);
  for (const auto& c : state_->checks) {
    if (c.name == name) return failure(errc::already_registered, "check '" + name + "'");
  }
  state_->checks.push_back({std::move(name), std::move(f), o});
  return {};
}

bool registry::remove_check(std::string_view name) {
  std::lock_guard lock(state_->mutex);
  return std::erase_if(state_->checks, [&](const state::check& c) { return c.name == name; }) > 0;
}

void registry::require_cluster(bool on) {
  std::lock_guard lock(state_->mutex);
  state_->require_cluster = on;
}

void registry::start_ready(report_handler h) {
  auto r = std::make_shared<run>(node_, state_->node_gone, std::move(h));
  bool need_cluster = false;
  {
    std::lock_guard lock(state_->mutex);
    need_cluster = state_->require_cluster;
    for (const auto& c : state_->checks) r->add(c.name, c.fn, c.options);
  }
  if (need_cluster) {
    r->add_done("cluster", cluster_check(node_), true);
    std::rotate(r->report.checks.begin(), r->report.checks.end() - 1, r->report.checks.end());
    std::rotate(r->entries.begin(), r->entries.end() - 1, r->entries.end());
  }
  r->start();
}

void registry::start_live(clock_type::duration bound, report_handler h) {
  auto r = std::make_shared<run>(node_, state_->node_gone, std::move(h));
  if (!node_.running()) {
    r->add_done("liveness", check_result::unhealthy("the node is not running"), true);
    r->start();
    return;
  }
  pid target;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->probe == pid{} || !node_.alive(state_->probe)) {
      auto p = node_.spawn<probe>();
      if (p) state_->probe = *p;
    }
    target = state_->probe;
  }
  if (!node_.alive(target)) {
    r->add_done("liveness", check_result::unhealthy("cannot start the probe process"), true);
    r->start();
    return;
  }
  const auto bound_ms =
      std::max(std::chrono::ceil<std::chrono::milliseconds>(bound), std::chrono::milliseconds(1));
  node* n = &node_;
  r->add(
      "liveness",
      [n, target, bound_ms](check_done done) {
        const auto sent = n->now();
        otpp::call(*n, target, probe_ping{}, bound_ms,
                   [n, sent, bound_ms, done = std::move(done)](result<int> a) {
                     if (a)
                       return done(check_result::healthy("schedulers answered in " +
                                                         ms_text(n->now() - sent)));
                     if (a.error() == errc::timeout)
                       return done(check_result::unhealthy("schedulers did not answer within " +
                                                           ms_text(bound_ms)));
                     done(check_result::unhealthy("probe: " + a.fail().message()));
                   });
      },
      // The call's timeout and the check's are the same bound (whichever fires first: a
      // stuck node runs neither until a worker is free again).
      {.timeout = bound, .critical = true},
      "schedulers did not answer within " + ms_text(bound_ms));
  r->start();
}

result<std::uint16_t> registry::serve(http_options o) {
  std::lock_guard lock(http_mutex_);
  if (http_) return failure(errc::running, "the health endpoint is already serving");
  auto h = http::start(*this, std::move(o));
  if (!h) return h.fail();
  http_ = std::move(*h);
  return http_->port();
}

void registry::stop() {
  std::unique_ptr<http> h;
  {
    std::lock_guard lock(http_mutex_);
    h = std::move(http_);
  }
  if (h) h->stop();
}

std::uint16_t registry::port() const {
  std::lock_guard lock(http_mutex_);
  return http_ ? http_->port() : 0;
}

registry& of(node& n) {
  return n.use_service<registry>();
}

}  // namespace otpp::health
