// The supervisor process. See supervisor/README.md for the semantics.
#include "otpp/supervisor.hpp"

#include <algorithm>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "otpp/log.hpp"

namespace otpp {

namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
namespace sup = detail::sup;

shutdown_mode effective_shutdown(const child_spec& s) {
  if (s.shutdown) return *s.shutdown;
  return s.type == child_type::supervisor ? shutdown_mode::infinity()
                                          : shutdown_mode::timeout(5000ms);
}

sup::reply error_reply(errc e, std::string reason = {}) {
  sup::reply r;
  r.code = static_cast<int>(e);
  r.reason = std::move(reason);
  return r;
}

sup::reply pid_reply(const pid& p) {
  sup::reply r;
  r.child = p;
  return r;
}

// Set by a supervisor whose start failed: the process stopping the children already started.
struct start_context {
  pid reaper;
};

// Exits awaited by a supervisor coroutine. Touched only on the supervisor's own thread (the
// exit callbacks post to it).
struct exit_wait {
  explicit exit_wait(process::executor_type ex) : timer(ex) {}
  asio::steady_timer timer;
  std::unordered_set<pid> pending;
};

class supervisor_server : public gen_server<supervisor_server> {
 public:
  struct reaper_tag {};

  supervisor_server(supervisor_spec spec, std::shared_ptr<start_context> ctx)
      : spec_(std::move(spec)), ctx_(std::move(ctx)), parent_(detail::current_self()) {}

  // A process that stops the children of a supervisor whose start failed (in reverse order,
  // honouring each shutdown mode), then ends.
  supervisor_server(reaper_tag, supervisor_spec spec, std::vector<pid> started)
      : spec_(std::move(spec)), parent_(detail::current_self()), reaper_(true) {
    for (std::size_t i = 0; i < started.size(); ++i) {
      statics_.push_back({spec_.children[i], started[i]});
    }
  }

  static void define_handlers(handlers<supervisor_server>& h) {
    h.info<exit_message>(&supervisor_server::on_exit);
    h.cast<sup::try_again>(&supervisor_server::on_try_again);
    h.cast<sup::shutdown>(&supervisor_server::on_shutdown);
    h.call<sup::start_child>(&supervisor_server::on_start_child);
    h.call<sup::start_dynamic>(&supervisor_server::on_start_dynamic);
    h.call<sup::terminate_child>(&supervisor_server::on_terminate_child);
    h.call<sup::restart_child>(&supervisor_server::on_restart_child);
    h.call<sup::delete_child>(&supervisor_server::on_delete_child);
    h.call<sup::which_children>(&supervisor_server::on_which_children);
    h.call<sup::count_children>(&supervisor_server::on_count_children);
  }

  result<void> init() {
    trap_exit(true);
    if (reaper_) {
      (void)cast(this_node(), self(), sup::shutdown{exit_reason::normal()});
      return {};
    }
    if (dynamic() && spec_.children.size() != 1) {
      return failure(errc::invalid_argument, "simple_one_for_one needs exactly one child template");
    }
    if (!spec_.name.empty()) {
      if (auto r = register_name(this_node(), spec_.name, self()); !r) {
        return failure(r.error(), "name '" + spec_.name + "': " + r.error().message());
      }
    }
    if (dynamic()) return {};
    std::unordered_set<std::string> ids;
    for (const auto& c : spec_.children) {
      if (!ids.insert(c.id).second) {
        return failure(errc::invalid_argument, "duplicate child id '" + c.id + "'");
      }
    }
    std::vector<pid> started;
    for (const auto& c : spec_.children) {
      statics_.push_back({c, {}});
      auto r = launch(statics_.back());
      if (!r) {
        std::string why = "child '" + c.id + "': " + r.fail().message();
        log(log_level::error, "supervisor", self().to_string(), ": start failed: ", why);
        rollback(started);
        return failure(r.error(), why);
      }
      statics_.back().current = *r;
      started.push_back(*r);
    }
    return {};
  }

  void terminate(const exit_reason& reason) {
    // Ending without the orderly shutdown (stopped while suspended, node stop): cancel the
    // pending wait and ask the children to stop, without waiting.
    if (auto w = wait_.lock()) w->timer.cancel();
    for (auto it = statics_.rbegin(); it != statics_.rend(); ++it) {
      if (it->current) request_stop(it->current, it->spec, reason);
    }
    if (dynamic()) {
      for (auto& [p, d] : dynamics_) request_stop(p, template_spec(), reason);
    }
  }

 private:
  struct child_state {
    child_spec spec;
    pid current;
    bool pending = false;  // to be (re)started; a failed restart is retried
  };
  struct dynamic_state {
    std::any args;
  };

  bool dynamic() const { return spec_.strategy == restart_strategy::simple_one_for_one; }
  const child_spec& template_spec() const { return spec_.children.front(); }

  // Starts a child and links to it.
  result<pid> launch(const child_spec& spec, const std::any& args) {
    result<pid> r =
        failure(errc::invalid_argument, "child '" + spec.id + "' has no start function");
    try {
      if (spec.start_with) {
        r = spec.start_with(this_node(), args);
      } else if (spec.start) {
        r = spec.start(this_node());
      }
    } catch (const std::exception& e) {
      r = failure(errc::init_failed, e.what());
    } catch (...) {
      r = failure(errc::init_failed, "unknown exception");
    }
    if (r && *r != pid{}) link(*r);
    return r;
  }
  result<pid> launch(const child_state& c) { return launch(c.spec, {}); }

  // Init failed after starting `started`: unlink them (so our exit does not reach them) and
  // hand them to a reaper process that stops them in reverse order without blocking anyone.
  void rollback(const std::vector<pid>& started) {
    for (const auto& p : started) unlink(p);
    statics_.clear();
    if (started.empty()) return;
    auto r = this_node().spawn<supervisor_server>(reaper_tag{}, spec_, started);
    if (r && ctx_) ctx_->reaper = *r;
    if (!r) {
      for (auto it = started.rbegin(); it != started.rend(); ++it)
        this_node().exit(*it, exit_reason::kill());
    }
  }

  // ---- waiting for exits (never blocks a thread)

  // Waits until every pid in `ps` ended or `limit` passed; returns those still alive.
  asio::awaitable<std::vector<pid>> await_exits(std::vector<pid> ps,
                                                std::optional<std::chrono::milliseconds> limit) {
    auto w = std::make_shared<exit_wait>(get_executor());
    w->pending.insert(ps.begin(), ps.end());
    w->timer.expires_after(limit ? *limit : std::chrono::hours(24 * 365));
    wait_ = w;
    auto ex = get_executor();
    for (const auto& p : ps) {
      this_node().watch_process(p, [w, ex, p](const exit_reason&) {
        asio::execution::execute(ex, [w, p] {
          w->pending.erase(p);
          if (w->pending.empty()) w->timer.cancel();
        });
      });
    }
    if (!w->pending.empty()) {
      std::error_code ec;
      co_await w->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    wait_.reset();
    co_return std::vector<pid>(w->pending.begin(), w->pending.end());
  }

  // Asks a child to stop per its mode, without waiting.
  void request_stop(const pid& p, const child_spec& spec, const exit_reason& reason) {
    auto mode = effective_shutdown(spec);
    if (mode.how == shutdown_mode::kind::brutal_kill) {
      this_node().exit(p, exit_reason::kill());
    } else if (spec.type == child_type::supervisor) {
      // It traps exits and sees us as its parent: it stops its own children first.
      this_node().exit(p, reason);
    } else {
      this_node().stop_process(p, reason);
    }
  }

  // Stops children (already unlinked) that share one spec, concurrently, honouring its mode.
  asio::awaitable<void> stop_all(std::vector<pid> ps, const child_spec& spec) {
    if (ps.empty()) co_return;
    auto mode = effective_shutdown(spec);
    for (const auto& p : ps) request_stop(p, spec, exit_reason::shutdown());
    if (mode.how != shutdown_mode::kind::brutal_kill) {
      std::optional<std::chrono::milliseconds> limit;
      if (mode.how == shutdown_mode::kind::timeout) limit = mode.after;
      ps = co_await await_exits(std::move(ps), limit);
      if (ps.empty()) co_return;
      for (const auto& p : ps) {
        log(log_level::warning, "supervisor", self().to_string(), ": child '", spec.id, "' ",
            p.to_string(), " did not stop within ", mode.after.count(), " ms: killing it");
        this_node().exit(p, exit_reason::kill());
      }
    }
    ps = co_await await_exits(std::move(ps), spec_.kill_wait);
    for (const auto& p : ps) {
      log(log_level::warning, "supervisor", self().to_string(), ": child '", spec.id, "' ",
          p.to_string(),
          " is killed but still runs a handler; it ends when that returns (no further handler "
          "runs, its mailbox is dropped)");
    }
  }

  asio::awaitable<void> stop_child(child_state& c) {
    pid p = c.current;
    c.current = {};
    if (!p) co_return;
    unlink(p);
    co_await stop_all(std::vector<pid>(1, p), c.spec);
  }

  // All children, in reverse start order (dynamic children concurrently).
  asio::awaitable<void> stop_children() {
    if (dynamic()) {
      std::vector<pid> ps;
      ps.reserve(dynamics_.size());
      for (auto& [p, d] : dynamics_) {
        unlink(p);
        ps.push_back(p);
      }
      dynamics_.clear();
      dynamic_pending_.clear();
      co_await stop_all(std::move(ps), template_spec());
      co_return;
    }
    for (std::size_t i = statics_.size(); i-- > 0;) {
      statics_[i].pending = false;
      co_await stop_child(statics_[i]);
    }
  }

  // ---- restarts

  // Records a restart; false when the intensity is exceeded.
  bool add_restart() {
    auto now = clock::now();
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > spec_.period) restarts_.pop_front();
    return static_cast<int>(restarts_.size()) <= spec_.max_restarts;
  }

  asio::awaitable<void> give_up() {
    log(log_level::error, "supervisor", self().to_string(), ": more than ", spec_.max_restarts,
        " restarts in ", spec_.period.count(), " ms: shutting down");
    co_await stop_children();
    stop(exit_reason(reached_max_restart_intensity_reason));
  }

  // Starts, in order, every pending static child and every pending dynamic child. A failure
  // leaves the rest pending and schedules a retry (which counts as a restart).
  void start_pending() {
    for (auto& c : statics_) {
      if (!c.pending) continue;
      auto r = launch(c);
      if (!r) {
        log(log_level::error, "supervisor", self().to_string(), ": restart of '", c.spec.id,
            "' failed: ", r.fail().message(), "; retrying");
        (void)cast(this_node(), self(), sup::try_again{});
        return;
      }
      c.pending = false;
      c.current = *r;
      log(log_level::info, "supervisor", self().to_string(), ": restarted '", c.spec.id, "' as ",
          r->to_string());
    }
    while (!dynamic_pending_.empty()) {
      auto r = launch(template_spec(), dynamic_pending_.front().args);
      if (!r) {
        log(log_level::error, "supervisor", self().to_string(), ": restart of a '",
            template_spec().id, "' child failed: ", r.fail().message(), "; retrying");
        (void)cast(this_node(), self(), sup::try_again{});
        return;
      }
      if (*r != pid{}) dynamics_.emplace(*r, std::move(dynamic_pending_.front()));
      dynamic_pending_.pop_front();
    }
  }

  bool anything_pending() const {
    if (!dynamic_pending_.empty()) return true;
    return std::any_of(statics_.begin(), statics_.end(), [](const auto& c) { return c.pending; });
  }

  static bool should_restart(restart_type t, const exit_reason& why) {
    switch (t) {
      case restart_type::permanent:
        return true;
      case restart_type::transient:
        return why.is_failure();
      case restart_type::temporary:
        return false;
    }
    return false;
  }

  // ---- handlers

  asio::awaitable<void> on_exit(exit_message m) {
    if (m.from == parent_) {
      co_await stop_children();
      stop(m.reason);
      co_return;
    }
    if (dynamic()) {
      auto it = dynamics_.find(m.from);
      if (it == dynamics_.end()) co_return;  // stale or not a child
      auto d = std::move(it->second);
      dynamics_.erase(it);
      log_exit(template_spec(), m);
      if (!should_restart(template_spec().restart, m.reason)) co_return;
      if (!add_restart()) {
        co_await give_up();
        co_return;
      }
      dynamic_pending_.push_back(std::move(d));
      start_pending();
      co_return;
    }
    auto it = std::find_if(statics_.begin(), statics_.end(),
                           [&](const auto& c) { return c.current && c.current == m.from; });
    if (it == statics_.end()) co_return;
    std::size_t index = static_cast<std::size_t>(it - statics_.begin());
    it->current = {};
    log_exit(it->spec, m);
    if (!should_restart(it->spec.restart, m.reason)) {
      if (it->spec.restart == restart_type::temporary) statics_.erase(it);
      co_return;
    }
    if (!add_restart()) {
      co_await give_up();
      co_return;
    }
    statics_[index].pending = true;
    if (spec_.strategy != restart_strategy::one_for_one) {
      std::size_t first = spec_.strategy == restart_strategy::one_for_all ? 0 : index + 1;
      for (std::size_t i = statics_.size(); i-- > first;) {
        if (i == index) continue;
        bool was_running = static_cast<bool>(statics_[i].current);
        co_await stop_child(statics_[i]);
        if (was_running || statics_[i].pending) statics_[i].pending = true;
      }
      // Temporary children stopped because of a sibling are not restarted: forget them.
      std::erase_if(statics_, [](const child_state& c) {
        return c.pending && c.spec.restart == restart_type::temporary;
      });
    }
    start_pending();
  }

  void log_exit(const child_spec& spec, const exit_message& m) {
    auto level = m.reason.is_failure() ? log_level::error : log_level::info;
    log(level, "supervisor", self().to_string(), ": child '", spec.id, "' ", m.from.to_string(),
        " exited: ", m.reason.text());
  }

  asio::awaitable<void> on_try_again(sup::try_again) {
    if (!anything_pending()) co_return;
    if (!add_restart()) {
      co_await give_up();
      co_return;
    }
    start_pending();
  }

  asio::awaitable<void> on_shutdown(sup::shutdown m) {
    co_await stop_children();
    stop(m.reason);
  }

  child_state* find_static(const std::string& id) {
    auto it = std::find_if(statics_.begin(), statics_.end(),
                           [&](const auto& c) { return c.spec.id == id; });
    return it == statics_.end() ? nullptr : &*it;
  }

  sup::reply on_start_child(sup::start_child m) {
    if (dynamic()) {
      return error_reply(errc::invalid_argument, "simple_one_for_one: use start_dynamic_child");
    }
    if (auto* c = find_static(m.spec.id)) {
      return c->current ? error_reply(errc::already_registered,
                                      "already_started: " + c->current.to_string())
                        : error_reply(errc::already_registered, "already_present");
    }
    auto r = launch(m.spec, {});
    if (!r) return error_reply(static_cast<errc>(r.error().value()), r.reason());
    statics_.push_back({std::move(m.spec), *r});
    return pid_reply(*r);
  }

  sup::reply on_start_dynamic(sup::start_dynamic m) {
    if (!dynamic()) {
      return error_reply(errc::invalid_argument,
                         "start_dynamic_child needs a simple_one_for_one supervisor");
    }
    auto r = launch(template_spec(), m.args);
    if (!r) return error_reply(static_cast<errc>(r.error().value()), r.reason());
    if (*r != pid{}) dynamics_.emplace(*r, dynamic_state{std::move(m.args)});
    return pid_reply(*r);
  }

  asio::awaitable<sup::reply> on_terminate_child(sup::terminate_child m) {
    if (dynamic()) {
      auto it = dynamics_.find(m.child);
      if (it == dynamics_.end()) co_return error_reply(errc::not_found, m.child.to_string());
      pid p = it->first;
      dynamics_.erase(it);
      unlink(p);
      co_await stop_all(std::vector<pid>(1, p), template_spec());
      co_return sup::reply{};
    }
    auto* c = find_static(m.id);
    if (!c) co_return error_reply(errc::not_found, m.id);
    c->pending = false;
    co_await stop_child(*c);
    // `c` is still valid: no other handler of ours ran while we waited.
    if (c->spec.restart == restart_type::temporary) {
      std::erase_if(statics_, [&](const auto& s) { return s.spec.id == m.id; });
    }
    co_return sup::reply{};
  }

  sup::reply on_restart_child(sup::restart_child m) {
    if (dynamic()) return error_reply(errc::invalid_argument, "simple_one_for_one");
    auto* c = find_static(m.id);
    if (!c) return error_reply(errc::not_found, m.id);
    if (c->current) return error_reply(errc::running, m.id);
    if (c->pending) return error_reply(errc::restarting, m.id);
    auto r = launch(*c);
    if (!r) return error_reply(static_cast<errc>(r.error().value()), r.reason());
    c->current = *r;
    return pid_reply(*r);
  }

  sup::reply on_delete_child(sup::delete_child m) {
    if (dynamic()) return error_reply(errc::invalid_argument, "simple_one_for_one");
    auto* c = find_static(m.id);
    if (!c) return error_reply(errc::not_found, m.id);
    if (c->current) return error_reply(errc::running, m.id);
    if (c->pending) return error_reply(errc::restarting, m.id);
    std::erase_if(statics_, [&](const auto& s) { return s.spec.id == m.id; });
    return sup::reply{};
  }

  sup::reply on_which_children(sup::which_children) {
    sup::reply r;
    if (dynamic()) {
      const auto& t = template_spec();
      for (const auto& [p, d] : dynamics_)
        r.children.push_back({t.id, p, t.type, t.restart, false});
      for (std::size_t i = 0; i < dynamic_pending_.size(); ++i) {
        r.children.push_back({t.id, {}, t.type, t.restart, true});
      }
      return r;
    }
    for (const auto& c : statics_) {
      r.children.push_back({c.spec.id, c.current, c.spec.type, c.spec.restart, c.pending});
    }
    return r;
  }

  sup::reply on_count_children(sup::count_children) {
    sup::reply r;
    auto count = [&r](child_type t, bool running) {
      ++r.counts.specs;
      if (running) ++r.counts.active;
      if (t == child_type::supervisor) {
        ++r.counts.supervisors;
      } else {
        ++r.counts.workers;
      }
    };
    if (dynamic()) {
      for (std::size_t i = 0; i < dynamics_.size(); ++i) count(template_spec().type, true);
      for (std::size_t i = 0; i < dynamic_pending_.size(); ++i) count(template_spec().type, false);
      return r;
    }
    for (const auto& c : statics_) count(c.spec.type, static_cast<bool>(c.current));
    return r;
  }

  supervisor_spec spec_;
  std::shared_ptr<start_context> ctx_;
  pid parent_;  // the spawning process (pid{} for a top-level supervisor)
  bool reaper_ = false;
  std::vector<child_state> statics_;
  std::unordered_map<pid, dynamic_state> dynamics_;
  std::deque<dynamic_state> dynamic_pending_;
  std::deque<clock::time_point> restarts_;
  std::weak_ptr<exit_wait> wait_;
};

// Blocks (off the node's threads) until `p` ended.
void wait_for_exit(node& n, const pid& p) {
  auto done = std::make_shared<std::promise<void>>();
  auto f = done->get_future();
  n.watch_process(p, [done](const exit_reason&) { done->set_value(); });
  f.wait();
}

}  // namespace

namespace detail::sup {
bool on_node_thread(node& n) {
  process* p = current_process();
  return p && &p->this_node() == &n;
}
}  // namespace detail::sup

result<pid> start_supervisor(node& n, supervisor_spec spec) {
  if (!spec.name.empty()) {
    if (auto holder = whereis(n, spec.name)) {
      return failure(errc::already_registered, spec.name + " held by " + holder->to_string());
    }
  }
  const bool inside = detail::sup::on_node_thread(n);
  auto ctx = std::make_shared<start_context>();
  auto r = n.spawn_opt<supervisor_server>(spawn_options{.link = inside, .trap_exit = true},
                                          std::move(spec), ctx);
  if (!r) {
    if (!inside && ctx->reaper && n.running()) wait_for_exit(n, ctx->reaper);
    return r;
  }
  if (!inside) {
    // Top-level: node.stop() stops it; hooks run last added first, so supervisors stop in
    // reverse start order.
    n.add_stop_hook([&n, sup = *r] {
      if (!n.alive(sup)) return;
      (void)cast(n, sup, detail::sup::shutdown{exit_reason::shutdown()});
      if (!detail::sup::on_node_thread(n)) wait_for_exit(n, sup);
    });
  }
  return r;
}

child_spec supervisor_child(std::string id, supervisor_spec spec, restart_type restart) {
  child_spec c;
  c.id = std::move(id);
  c.start = [spec = std::move(spec)](node& n) { return start_supervisor(n, spec); };
  c.restart = restart;
  c.type = child_type::supervisor;
  c.shutdown = shutdown_mode::infinity();
  return c;
}

result<void> stop_supervisor(node& n, const pid& sup, exit_reason reason) {
  if (auto r = cast(n, sup, detail::sup::shutdown{std::move(reason)}); !r) return r;
  if (!detail::sup::on_node_thread(n)) wait_for_exit(n, sup);
  return {};
}

}  // namespace otpp
