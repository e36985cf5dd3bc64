// The supervisor process. Semantics: README.md, "Design notes", "supervisor".
#include "otpp/supervisor.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
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

sup::reply error_reply(std::error_code e, std::string reason = {}) {
  sup::reply r;
  r.error = e;
  r.reason = std::move(reason);
  return r;
}
sup::reply error_reply(const failure& f) {
  return error_reply(f.code, f.reason);
}

class supervisor_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "otpp.supervisor"; }
  std::string message(int value) const override {
    switch (static_cast<supervisor_errc>(value)) {
      case supervisor_errc::simple_one_for_one:
        return "simple_one_for_one: children of this supervisor are known by pid, not by id";
    }
    return "otpp.supervisor error " + std::to_string(value);
  }
};

// ---- stop requests from a parent supervisor
// A supervisor shuts down on an EXIT from its parent. Its parent being alive, the EXIT is real
// only if the parent asked: the parent grants a token before signalling, the child takes it.
// A forged EXIT message naming the parent (a dynamic "EXIT" info, possible until the runtime
// refuses them) finds no token and is ignored.
std::mutex& stop_tokens_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<pid, pid>& stop_tokens() {  // child -> parent that asked it to stop
  static std::unordered_map<pid, pid> tokens;
  return tokens;
}
void grant_stop(const pid& child, const pid& parent) {
  std::lock_guard lock(stop_tokens_mutex());
  stop_tokens()[child] = parent;
}
bool take_stop(const pid& child, const pid& parent) {
  std::lock_guard lock(stop_tokens_mutex());
  auto it = stop_tokens().find(child);
  if (it == stop_tokens().end() || it->second != parent) return false;
  stop_tokens().erase(it);
  return true;
}
void drop_stop(const pid& child) {
  std::lock_guard lock(stop_tokens_mutex());
  stop_tokens().erase(child);
}

// ---- starting children without holding a thread
// A child's init runs on its own first turn (spawn_options::async_init) and its outcome comes
// back to the supervisor as a task: tasks run even while the supervisor's coroutine handler is
// suspended, and one reaching a dead supervisor is dropped. The start timeout is a node timer
// posting a task too (node time: a manual clock drives it).

// The supervisor's coroutine parked until wake(): an asio timer that never expires on its own
// (cancelling it is the wake-up). Owned by the parked frame; touched on the supervisor's strand.
struct parking {
  explicit parking(process::executor_type ex)
      : timer(std::move(ex), asio::steady_timer::time_point::max()) {}
  asio::steady_timer timer;
  void wake() { timer.cancel(); }
};

// Exits awaited by a supervisor coroutine. Touched only on the supervisor's own thread (the
// exit callbacks post to it).
struct exit_wait {
  explicit exit_wait(process::executor_type ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  std::unordered_set<pid> pending;
};

// What a supervisor's coroutine may be parked on. Woken when the supervisor ends, killed or
// not: the wake-up then reaches a dead process and the frame is destroyed unresumed.
struct parked_waits {
  std::weak_ptr<parking> start;
  std::weak_ptr<exit_wait> exits;
  void cancel() {
    if (auto p = start.lock()) p->wake();
    if (auto w = exits.lock()) w->timer.cancel();
  }
};

// One start in flight, settled once on the supervisor's strand by the first of: the child's init
// outcome, the start function's answer (starter), the start timeout. It holds plain values and
// a weak reference to the parked coroutine: nothing that can dangle once the supervisor (or the
// node) is gone, whoever holds the job last.
struct start_job {
  std::optional<result<pid>> outcome;
  bool timed_out = false;
  std::weak_ptr<parking> parked;
};

// On the supervisor's strand (a task).
void settle(start_job& job, result<pid> r) {
  if (job.outcome) {
    // Late: the start timed out and its process was killed. A child a start function still
    // brought up is nobody's: kill it too (a child of a killed starter dies with it unless it
    // traps exits).
    process* sup = current_process();
    if (job.timed_out && r && *r && sup) {
      log(log_level::warning, "supervisor", sup->self().to_string(), ": child ", r->to_string(),
          " started after its start timeout: killing it");
      sup->this_node().exit(*r, exit_reason::kill());
    }
    return;
  }
  job.outcome = std::move(r);
  if (auto p = job.parked.lock()) p->wake();
}

// From any thread: settles `job` on the supervisor `sup`, or nowhere if it has ended.
void post_settle(const process::executor_type& sup, std::shared_ptr<start_job> job, result<pid> r) {
  sup.execute([job = std::move(job), r = std::move(r)]() mutable { settle(*job, std::move(r)); });
}

result<pid> call_start(node& n, const child_spec& spec, const std::any& args) {
  result<pid> r = failure(errc::invalid_argument, "child '" + spec.id + "' has no start function");
  try {
    if (spec.start_with) {
      r = spec.start_with(n, args);
    } else if (spec.start) {
      r = spec.start(n);
    }
  } catch (const std::exception& e) {
    r = failure(errc::init_failed, e.what());
  } catch (...) {
    r = failure(errc::init_failed, "unknown exception");
  }
  return r;
}

// Runs a start function bounded by start_timeout. Its init (its own first turn) calls the
// function, so a hung function holds neither the supervisor nor any thread but one of the node's
// workers (the node's stop waits for it: nothing outlives the node). The child, linked to the
// starter (the calling process), is handed over: the supervisor links to it, then unlinks and
// stops the starter, which unlinks the child before it goes. Linked to the supervisor until
// then, so the supervisor's end, or its kill at the timeout, takes the starter and its child
// down.
class starter : public gen_server<starter> {
 public:
  starter(child_spec spec, std::any args, process::executor_type sup,
          std::shared_ptr<start_job> job)
      : spec_(std::move(spec)),
        args_(std::move(args)),
        sup_(std::move(sup)),
        job_(std::move(job)) {}

  result<void> init() {
    auto r = call_start(this_node(), spec_, args_);
    if (r && *r) child_ = *r;
    post_settle(sup_, job_, std::move(r));
    return {};
  }
  void terminate(const exit_reason&) {
    if (child_) unlink(child_);
  }

 private:
  child_spec spec_;
  std::any args_;
  process::executor_type sup_;
  std::shared_ptr<start_job> job_;
  pid child_;
};

// How a supervisor reports its own start to whoever started it: exactly once, with its initial
// children running, or the failure.
struct start_report {
  std::atomic<bool> told{false};
  std::function<void(const pid&, const result<void>&)> tell;
  void operator()(const pid& p, const result<void>& r) {
    if (told.exchange(true)) return;
    auto t = std::move(tell);
    tell = nullptr;
    if (t) t(p, r);
  }
};

sup::reply pid_reply(const pid& p) {
  sup::reply r;
  r.child = p;
  return r;
}

class supervisor_server : public gen_server<supervisor_server> {
 public:
  supervisor_server(supervisor_spec spec, std::shared_ptr<start_report> report, pid parent)
      : spec_(std::move(spec)), report_(std::move(report)), parent_(parent) {}

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
    h.call<sup::get_stats>(&supervisor_server::on_get_stats);
  }

  // Checks only: the children start in handle_continue, where the supervisor can wait.
  result<void> init() {
    trap_exit(true);
    if (dynamic() && spec_.children.size() != 1) {
      return failure(errc::invalid_argument, "simple_one_for_one needs exactly one child template");
    }
    if (!dynamic()) {
      std::unordered_set<std::string> ids;
      for (const auto& c : spec_.children) {
        if (!ids.insert(c.id).second) {
          return failure(errc::invalid_argument, "duplicate child id '" + c.id + "'");
        }
      }
    }
    if (!spec_.name.empty()) {
      if (auto r = register_name(this_node(), spec_.name, self()); !r) {
        return failure(r.error(), "name '" + spec_.name + "': " + r.error().message());
      }
    }
    // Our end, killed or not (a kill runs no terminate): drop a parked coroutine, and tell the
    // starter if the start had not finished.
    this_node().watch_process(
        self(), [waits = waits_, report = report_, me = self()](const exit_reason& why) {
          waits->cancel();
          (*report)(me, failure(errc::init_failed,
                                "the supervisor ended before its children started: " + why.text()));
        });
    return {};
  }

  // The initial children, in order (OTP does this in init, which cannot wait here). The start
  // completes once they all run; after a failure, once those started are stopped again.
  asio::awaitable<void> handle_continue() {
    for (std::size_t i = 0; !dynamic() && i < spec_.children.size(); ++i) {
      child_spec spec = spec_.children[i];
      std::any none;
      auto r = co_await launch_async(std::move(spec), std::move(none));
      const auto& c = spec_.children[i];
      if (!r) {
        std::string why = "child '" + c.id + "': " + r.fail().message();
        log(log_level::error, "supervisor", self().to_string(), ": start failed: ", why);
        co_await stop_children();
        (*report_)(self(), failure(errc::init_failed, why));
        stop(exit_reason(why));
        co_return;
      }
      // OTP: an ignoring child is kept as not running, unless it is temporary.
      if (!*r && c.restart == restart_type::temporary) continue;
      statics_.push_back({c, *r});
    }
    // Started from a process: it is our parent from now on (a start that failed did not take
    // it down with us). A parent that ended meanwhile answers with an EXIT noproc: we stop.
    if (parent_) link(parent_);
    (*report_)(self(), {});
  }

  void terminate(const exit_reason& reason) {
    // Ending without the orderly shutdown (stopped while suspended, node stop): drop the parked
    // wait, kill a start in flight, and ask the children to stop, without waiting.
    waits_->cancel();
    if (in_flight_) this_node().exit(in_flight_, exit_reason::kill());
    drop_stop(self());
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
    std::uint64_t seq = 0;  // start order (which_children lists the newest first)
  };

  bool dynamic() const { return spec_.strategy == restart_strategy::simple_one_for_one; }
  const child_spec& template_spec() const { return spec_.children.front(); }

  // A start function without a bound: inline, as OTP's supervisor calls it.
  result<pid> launch(const child_spec& spec, const std::any& args) {
    auto r = call_start(this_node(), spec, args);
    if (r && *r) link(*r);
    return r;
  }

  // The child, its init to run on its own turn; its outcome settles `job`.
  result<pid> spawn_child(const child_spec& spec, const std::any& args,
                          const std::shared_ptr<start_job>& job) {
    spawn_options o;
    o.link = true;
    o.async_init = true;
    o.after_init = [sup = get_executor(), job](const pid& p, const result<void>& r) {
      post_settle(sup, job, r ? result<pid>(p) : result<pid>(r.fail()));
    };
    try {
      return spec.spawn(this_node(), o, args);
    } catch (const std::exception& e) {
      return failure(errc::init_failed, e.what());
    } catch (...) {
      return failure(errc::init_failed, "unknown exception");
    }
  }

  // A starter running the start function of `spec` (see starter).
  result<pid> spawn_starter(const child_spec& spec, const std::any& args,
                            const std::shared_ptr<start_job>& job) {
    spawn_options o;
    o.link = true;
    o.async_init = true;
    o.after_init = [sup = get_executor(), job](const pid&, const result<void>& r) {
      // Killed before its init ran: the start function never ran.
      if (!r) post_settle(sup, job, r.fail());
    };
    return this_node().spawn_opt<starter>(o, spec, args, get_executor(), job);
  }

  // Starts a child and waits for it without holding a thread: the outcome comes back as a task
  // (see start_job), bounded by a node timer if asked. Meanwhile this process takes no other
  // message, as for every coroutine handler (OTP's supervisor waits in start_link likewise).
  asio::awaitable<result<pid>> launch_async(child_spec spec, std::any args) {
    const bool by_function = spec.start || spec.start_with;
    if (by_function && !spec.start_timeout) co_return launch(spec, args);
    if (!by_function && !spec.spawn) {
      co_return failure(errc::invalid_argument, "child '" + spec.id + "' has no start function");
    }
    auto job = std::make_shared<start_job>();
    // The bound runs from before the child can run (its init may start on another worker at
    // once): whoever sees the init start sees the bound armed.
    timer_ref deadline{};
    if (spec.start_timeout) {
      deadline = this_node().post_after(*spec.start_timeout, self(), [job] {
        if (job->outcome) return;
        job->timed_out = true;
        settle(*job, failure(errc::timeout));
      });
    }
    auto spawned = by_function ? spawn_starter(spec, args, job) : spawn_child(spec, args, job);
    if (!spawned || !*spawned) {  // failed at once, or ignore: nothing runs
      if (deadline.id) this_node().cancel_timer(deadline);
      co_return spawned;
    }
    const pid proc = *spawned;  // the child, or the starter
    in_flight_ = proc;
    if (!job->outcome) {
      auto park = std::make_shared<parking>(get_executor());
      job->parked = park;
      waits_->start = park;
      std::error_code ec;
      auto token = asio::redirect_error(asio::use_awaitable, ec);  // named: see stop_child
      co_await park->timer.async_wait(token);
    }
    in_flight_ = {};
    if (deadline.id && !job->timed_out) this_node().cancel_timer(deadline);
    result<pid> r = job->outcome ? std::move(*job->outcome)
                                 : result<pid>(failure(errc::init_failed, "start interrupted"));
    if (job->timed_out) {
      // Its init cannot be pre-empted: the kill acts when it returns. Unlinked first, so its
      // EXIT does not read as a child's.
      unlink(proc);
      this_node().exit(proc, exit_reason::kill());
      r = failure(errc::timeout, "child '" + spec.id + "' did not start within " +
                                     std::to_string(spec.start_timeout->count()) + " ms");
      ++stats_.start_timeouts;
      log(log_level::error, "supervisor", self().to_string(), ": ", r.fail().message(), ": killed");
      emit(supervisor_event::kind::start_timeout, spec.id, by_function ? pid{} : proc,
           exit_reason(r.fail().message()));
      expect_exit(proc);  // in case it ended (and signalled) just before we unlinked
      co_return r;
    }
    if (by_function) {
      // Hand-over: our link to the child first, then the starter goes (unlinked: its exit is
      // nobody's business).
      if (r && *r) link(*r);
      unlink(proc);
      this_node().stop_process(proc, exit_reason::normal());
      co_return r;
    }
    if (!r) {
      expect_exit(proc);  // a failed init ended it: its link's EXIT is on its way
      co_return r;
    }
    link(*r);  // spawn_opt linked it already; a hand-written spawn may not have
    co_return r;
  }

  // EXITs of children whose start failed (linked at spawn): taken quietly when they come. A
  // short list: an EXIT that never comes (a race lost to an unlink) is forgotten.
  void expect_exit(const pid& p) {
    expected_exits_.push_back(p);
    if (expected_exits_.size() > 64) expected_exits_.pop_front();
  }
  bool take_expected_exit(const pid& p) {
    auto it = std::find(expected_exits_.begin(), expected_exits_.end(), p);
    if (it == expected_exits_.end()) return false;
    expected_exits_.erase(it);
    return true;
  }

  void emit(supervisor_event::kind what, const std::string& id, const pid& child,
            exit_reason reason) {
    if (!spec_.on_event) return;
    supervisor_event e{what, self(), id, child, std::move(reason)};
    try {
      spec_.on_event(e);
    } catch (...) {
      log(log_level::error, "supervisor", self().to_string(),
          ": on_event threw: ", detail::describe(std::current_exception()));
    }
  }

  // ---- waiting for exits (never blocks a thread)

  // Waits until every pid in `ps` ended or `limit` passed; returns those still alive.
  asio::awaitable<std::vector<pid>> await_exits(std::vector<pid> ps,
                                                std::optional<std::chrono::milliseconds> limit) {
    auto w = std::make_shared<exit_wait>(get_executor());
    w->pending.insert(ps.begin(), ps.end());
    w->timer.expires_after(limit ? *limit : std::chrono::hours(24 * 365));
    waits_->exits = w;
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
      auto token = asio::redirect_error(asio::use_awaitable, ec);  // named: see stop_child
      co_await w->timer.async_wait(token);
    }
    waits_->exits.reset();
    std::vector<pid> alive(w->pending.begin(), w->pending.end());
    co_return alive;
  }

  // Asks a child to stop per its mode, without waiting.
  void request_stop(const pid& p, const child_spec& spec, const exit_reason& reason) {
    auto mode = effective_shutdown(spec);
    if (mode.how == shutdown_mode::kind::brutal_kill) {
      this_node().exit(p, exit_reason::kill());
    } else if (spec.type == child_type::supervisor) {
      // It traps exits and sees us as its parent: it stops its own children first. The token
      // tells it the EXIT is ours (see grant_stop); it goes when the child does.
      grant_stop(p, self());
      this_node().watch_process(p, [p](const exit_reason&) { drop_stop(p); });
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
      std::vector<pid> asked = std::move(ps);
      ps = co_await await_exits(std::move(asked), limit);
      if (ps.empty()) co_return;
      for (const auto& p : ps) {
        log(log_level::warning, "supervisor", self().to_string(), ": child '", spec.id, "' ",
            p.to_string(), " did not stop within ", mode.after.count(), " ms: killing it");
        this_node().exit(p, exit_reason::kill());
      }
    }
    std::vector<pid> killed = std::move(ps);
    ps = co_await await_exits(std::move(killed), spec_.kill_wait);
    for (const auto& p : ps) {
      log(log_level::warning, "supervisor", self().to_string(), ": child '", spec.id, "' ",
          p.to_string(), " abandoned: still in a handler ", spec_.kill_wait.count(),
          " ms after kill; it ends when that returns (no further handler runs, its mailbox is "
          "dropped)");
      ++stats_.abandoned;
      emit(supervisor_event::kind::abandoned, spec.id, p, exit_reason::kill());
    }
  }

  asio::awaitable<void> stop_child(child_state& c) {
    pid p = c.current;
    c.current = {};
    if (!p) co_return;
    unlink(p);
    // Named first: a temporary inside a co_await expression is destroyed twice by g++ 12.
    std::vector<pid> ps(1, p);
    co_await stop_all(std::move(ps), c.spec);
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
    auto now = this_node().now();  // the node's clock: virtual in deterministic tests
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > spec_.period) restarts_.pop_front();
    return static_cast<int>(restarts_.size()) <= spec_.max_restarts;
  }

  asio::awaitable<void> give_up() {
    log(log_level::error, "supervisor", self().to_string(), ": more than ", spec_.max_restarts,
        " restarts in ", spec_.period.count(), " ms: shutting down");
    emit(supervisor_event::kind::gave_up, {}, {},
         exit_reason(reached_max_restart_intensity_reason));
    co_await stop_children();
    stop(exit_reason(reached_max_restart_intensity_reason));
  }

  // Starts, in order, every pending static child and every pending dynamic child. A failure
  // leaves the rest pending and schedules a retry (which counts as a restart).
  asio::awaitable<void> start_pending() {
    for (std::size_t i = 0; i < statics_.size(); ++i) {
      if (!statics_[i].pending) continue;
      child_spec spec = statics_[i].spec;
      std::any none;
      auto r = co_await launch_async(std::move(spec), std::move(none));
      // statics_ is unchanged: no other handler of ours ran while we waited.
      auto& c = statics_[i];
      if (!r) {
        restart_failed(c.spec.id, r.fail());
        co_return;
      }
      c.pending = false;
      c.current = *r;
      restarted(c.spec.id, *r);
    }
    while (!dynamic_pending_.empty()) {
      child_spec spec = template_spec();
      std::any args = dynamic_pending_.front().args;
      auto r = co_await launch_async(std::move(spec), std::move(args));
      if (!r) {
        restart_failed(template_spec().id, r.fail());
        co_return;
      }
      auto d = std::move(dynamic_pending_.front());
      dynamic_pending_.pop_front();
      if (*r) {
        d.seq = ++seq_;
        dynamics_.emplace(*r, std::move(d));
      }
      restarted(template_spec().id, *r);
    }
  }

  void restart_failed(const std::string& id, const failure& f) {
    log(log_level::error, "supervisor", self().to_string(), ": restart of '", id,
        "' failed: ", f.message(), "; retrying");
    ++stats_.restart_failures;
    emit(supervisor_event::kind::restart_failed, id, {}, exit_reason(f.message()));
    (void)cast(this_node(), self(), sup::try_again{});
  }

  void restarted(const std::string& id, const pid& p) {
    log(log_level::info, "supervisor", self().to_string(), ": restarted '", id, "' as ",
        p ? p.to_string() : std::string("ignore"));
    ++stats_.restarts;
    emit(supervisor_event::kind::restarted, id, p, exit_reason::normal());
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

  // An EXIT message we do not act on: not from a child that ended, nor from our parent. Until
  // the runtime refuses them, a dynamic "EXIT" info can name any pid (issue 8 item 3).
  void ignore_exit(const exit_message& m, const char* why) {
    ++stats_.ignored_exits;
    log(log_level::warning, "supervisor", self().to_string(), ": ignored EXIT from ",
        m.from.to_string(), " (", m.reason.text(), "): ", why);
  }

  asio::awaitable<void> on_exit(exit_message m) {
    // A supervisor stopping us (our parent) granted a token first: a forged EXIT cannot.
    if (m.from && take_stop(self(), m.from)) {
      co_await stop_children();
      stop(m.reason);
      co_return;
    }
    if (parent_ && m.from == parent_) {
      // Without a token the parent's EXIT shuts us down only if the parent is gone (a link
      // EXIT comes only after the process is unpublished).
      if (this_node().alive(parent_)) {
        ignore_exit(m, "the parent is alive and did not ask (use stop_supervisor)");
        co_return;
      }
      co_await stop_children();
      stop(m.reason);
      co_return;
    }
    if (!m.from) {
      ignore_exit(m, "not from a process (a top-level supervisor has no parent)");
      co_return;
    }
    if (dynamic()) {
      auto it = dynamics_.find(m.from);
      if (it == dynamics_.end()) {
        if (!take_expected_exit(m.from)) ignore_exit(m, "not a child");
        co_return;
      }
      if (this_node().alive(m.from)) {
        ignore_exit(m, "the child is alive");
        co_return;
      }
      auto d = std::move(it->second);
      dynamics_.erase(it);
      child_exited(template_spec(), m);
      if (!should_restart(template_spec().restart, m.reason)) co_return;
      if (!add_restart()) {
        co_await give_up();
        co_return;
      }
      dynamic_pending_.push_back(std::move(d));
      co_await start_pending();
      co_return;
    }
    auto it = std::find_if(statics_.begin(), statics_.end(),
                           [&](const auto& c) { return c.current && c.current == m.from; });
    if (it == statics_.end()) {
      if (!take_expected_exit(m.from)) ignore_exit(m, "not a child");
      co_return;
    }
    if (this_node().alive(m.from)) {
      ignore_exit(m, "the child is alive");
      co_return;
    }
    std::size_t index = static_cast<std::size_t>(it - statics_.begin());
    it->current = {};
    child_exited(it->spec, m);
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
    co_await start_pending();
  }

  void child_exited(const child_spec& spec, const exit_message& m) {
    auto level = m.reason.is_failure() ? log_level::error : log_level::info;
    log(level, "supervisor", self().to_string(), ": child '", spec.id, "' ", m.from.to_string(),
        " exited: ", m.reason.text());
    ++stats_.child_exits;
    emit(supervisor_event::kind::child_exited, spec.id, m.from, m.reason);
  }

  asio::awaitable<void> on_try_again(sup::try_again) {
    if (!anything_pending()) co_return;
    if (!add_restart()) {
      co_await give_up();
      co_return;
    }
    co_await start_pending();
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

  static sup::reply by_id_on_dynamic(const std::string& id) {
    return error_reply(supervisor_errc::simple_one_for_one, id);
  }

  asio::awaitable<sup::reply> on_start_child(sup::start_child m) {
    if (dynamic()) {
      co_return error_reply(errc::invalid_argument, "simple_one_for_one: use start_dynamic_child");
    }
    if (auto* c = find_static(m.spec.id)) {
      co_return c->current
          ? error_reply(errc::already_registered, "already_started: " + c->current.to_string())
          : error_reply(errc::already_registered, "already_present");
    }
    child_spec spec = m.spec;
    std::any none;
    auto r = co_await launch_async(std::move(spec), std::move(none));
    if (!r) co_return error_reply(r.fail());
    // OTP: a temporary child that answers ignore is not kept.
    if (*r || m.spec.restart != restart_type::temporary) {
      statics_.push_back({std::move(m.spec), *r});
    }
    co_return pid_reply(*r);
  }

  asio::awaitable<sup::reply> on_start_dynamic(sup::start_dynamic m) {
    if (!dynamic()) {
      co_return error_reply(errc::invalid_argument,
                            "start_dynamic_child needs a simple_one_for_one supervisor");
    }
    child_spec spec = template_spec();
    std::any args = m.args;
    auto r = co_await launch_async(std::move(spec), std::move(args));
    if (!r) co_return error_reply(r.fail());
    if (*r) dynamics_.emplace(*r, dynamic_state{std::move(m.args), ++seq_});
    co_return pid_reply(*r);
  }

  asio::awaitable<sup::reply> on_terminate_child(sup::terminate_child m) {
    if (dynamic()) {
      if (!m.by_pid) co_return by_id_on_dynamic(m.id);
      auto it = dynamics_.find(m.child);
      if (it == dynamics_.end()) {
        // OTP: a process that already ended is no child to stop: ok.
        if (m.child && !this_node().alive(m.child)) co_return sup::reply();
        co_return error_reply(errc::not_found, m.child.to_string());
      }
      pid p = it->first;
      dynamics_.erase(it);
      unlink(p);
      std::vector<pid> ps(1, p);
      co_await stop_all(std::move(ps), template_spec());
      co_return sup::reply();
    }
    if (m.by_pid) {
      co_return error_reply(errc::not_found, m.child.to_string() + ": give the child's id");
    }
    auto* c = find_static(m.id);
    if (!c) co_return error_reply(errc::not_found, m.id);
    c->pending = false;
    co_await stop_child(*c);
    // `c` is still valid: no other handler of ours ran while we waited.
    if (c->spec.restart == restart_type::temporary) {
      std::erase_if(statics_, [&](const auto& s) { return s.spec.id == m.id; });
    }
    co_return sup::reply();
  }

  asio::awaitable<sup::reply> on_restart_child(sup::restart_child m) {
    if (dynamic()) co_return by_id_on_dynamic(m.id);
    auto* c = find_static(m.id);
    if (!c) co_return error_reply(errc::not_found, m.id);
    if (c->current) co_return error_reply(errc::running, m.id);
    if (c->pending) co_return error_reply(errc::restarting, m.id);
    child_spec spec = c->spec;
    std::any none;
    auto r = co_await launch_async(std::move(spec), std::move(none));
    if (!r) co_return error_reply(r.fail());
    c = find_static(m.id);  // re-found: cheap, and robust if the table ever changes meanwhile
    if (c) c->current = *r;
    co_return pid_reply(*r);
  }

  sup::reply on_delete_child(sup::delete_child m) {
    if (dynamic()) return by_id_on_dynamic(m.id);
    auto* c = find_static(m.id);
    if (!c) return error_reply(errc::not_found, m.id);
    if (c->current) return error_reply(errc::running, m.id);
    if (c->pending) return error_reply(errc::restarting, m.id);
    std::erase_if(statics_, [&](const auto& s) { return s.spec.id == m.id; });
    return sup::reply{};
  }

  // Newest first, as OTP.
  sup::reply on_which_children(sup::which_children) {
    sup::reply r;
    if (dynamic()) {
      const auto& t = template_spec();
      std::vector<std::pair<std::uint64_t, pid>> running;
      running.reserve(dynamics_.size());
      for (const auto& [p, d] : dynamics_) running.emplace_back(d.seq, p);
      std::sort(running.begin(), running.end(),
                [](const auto& a, const auto& b) { return a.first > b.first; });
      for (const auto& [seq, p] : running)
        r.children.push_back({t.id, p, t.type, t.restart, false});
      for (std::size_t i = 0; i < dynamic_pending_.size(); ++i) {
        r.children.push_back({t.id, {}, t.type, t.restart, true});
      }
      return r;
    }
    for (auto it = statics_.rbegin(); it != statics_.rend(); ++it) {
      r.children.push_back(
          {it->spec.id, it->current, it->spec.type, it->spec.restart, it->pending});
    }
    return r;
  }

  sup::reply on_count_children(sup::count_children) {
    sup::reply r;
    auto count = [&r](child_type t, std::size_t n) {
      if (t == child_type::supervisor) {
        r.counts.supervisors += n;
      } else {
        r.counts.workers += n;
      }
    };
    if (dynamic()) {
      // OTP: one spec (the template); every child, running or being restarted, by type.
      r.counts.specs = 1;
      r.counts.active = dynamics_.size();
      count(template_spec().type, dynamics_.size() + dynamic_pending_.size());
      return r;
    }
    for (const auto& c : statics_) {
      ++r.counts.specs;
      if (c.current) ++r.counts.active;
      count(c.spec.type, 1);
    }
    return r;
  }

  sup::reply on_get_stats(sup::get_stats) {
    sup::reply r;
    r.stats = stats_;
    return r;
  }

  supervisor_spec spec_;
  std::shared_ptr<start_report> report_;
  pid parent_;  // the starting process (pid{} for a top-level supervisor)
  std::vector<child_state> statics_;
  std::unordered_map<pid, dynamic_state> dynamics_;
  std::deque<dynamic_state> dynamic_pending_;
  std::deque<otpp::time_point> restarts_;
  std::shared_ptr<parked_waits> waits_ = std::make_shared<parked_waits>();
  pid in_flight_;  // the process of the start being awaited (child or starter)
  std::deque<pid> expected_exits_;
  std::uint64_t seq_ = 0;  // dynamic children started
  supervisor_stats stats_;
};

// Blocks (off the node's threads) until `p` ended; a manual node is polled meanwhile.
void wait_for_exit(node& n, const pid& p) {
  auto done = std::make_shared<std::promise<void>>();
  auto f = done->get_future();
  n.watch_process(p, [done](const exit_reason&) { done->set_value(); });
  (void)detail::sup::wait_ready(n, f);
}

bool on_node_thread(node& n) {
  process* p = current_process();
  return p && &p->this_node() == &n;
}

// Spawns a supervisor whose start (its children running, or the failure) is told to `tell`
// once. `o`: link and async_init as the caller wants; its after_init is replaced.
result<pid> spawn_supervisor(node& n, supervisor_spec spec, spawn_options o,
                             std::function<void(const pid&, const result<void>&)> tell) {
  auto report = std::make_shared<start_report>();
  report->tell = std::move(tell);
  o.trap_exit = true;
  o.after_init = nullptr;
  if (o.async_init) {
    // A failing init ends it at once; a good one goes on to start the children (handle_continue).
    o.after_init = [report](const pid& p, const result<void>& r) {
      if (!r) (*report)(p, r);
    };
  }
  const pid parent = on_node_thread(n) ? detail::current_self() : pid{};
  return n.spawn_opt<supervisor_server>(o, std::move(spec), report, parent);
}

}  // namespace

const std::error_category& supervisor_category() noexcept {
  static const supervisor_category_impl category;
  return category;
}

namespace detail::sup {
bool on_node_thread(node& n) {
  return otpp::on_node_thread(n);
}

pid start_supervisor(node& n, supervisor_spec spec, std::function<void(result<pid>)> done) {
  auto finish = std::make_shared<std::function<void(result<pid>)>>(std::move(done));
  if (!n.running()) {
    (*finish)(failure(errc::not_started, "node " + n.name() + " is not running"));
    return {};
  }
  if (!spec.name.empty()) {
    if (auto holder = whereis(n, spec.name)) {
      (*finish)(failure(errc::already_registered, spec.name + " held by " + holder->to_string()));
      return {};
    }
  }
  const bool top_level = !on_node_thread(n);
  // Init (checks, name) runs here; the children start on the supervisor's own turn.
  auto r = spawn_supervisor(n, std::move(spec), spawn_options{},
                            [finish](const pid& p, const result<void>& started) {
                              (*finish)(started ? result<pid>(p) : result<pid>(started.fail()));
                            });
  if (!r) {
    (*finish)(r.fail());
    return {};
  }
  if (top_level) {
    // node.stop() stops it; hooks run last added first, so supervisors stop in reverse start
    // order.
    n.add_stop_hook([&n, sup = *r] {
      if (!n.alive(sup)) return;
      (void)cast(n, sup, shutdown{exit_reason::shutdown()});
      if (!on_node_thread(n)) wait_for_exit(n, sup);
    });
  }
  return *r;
}
}  // namespace detail::sup

result<pid> start_supervisor(node& n, supervisor_spec spec) {
  if (on_node_thread(n)) {
    return failure(errc::invalid_argument,
                   "blocking start_supervisor called from a process of the same node: use the "
                   "completion-token form (or supervisor_child for a child of a supervisor)");
  }
  auto out = std::make_shared<std::promise<result<pid>>>();
  auto f = out->get_future();
  pid sup = detail::sup::start_supervisor(n, std::move(spec),
                                          [out](result<pid> r) { out->set_value(std::move(r)); });
  if (detail::sup::wait_ready(n, f)) return f.get();
  // A manual node with nothing left to run: the start waits for virtual time (a start timeout)
  // that only this thread could advance. Stop it rather than leave it unowned.
  n.stop_process(sup, exit_reason::shutdown());
  (void)detail::sup::wait_ready(n, f);
  return failure(errc::would_block,
                 "manual node: the supervisor's start waits for its clock to advance (use the "
                 "completion-token form); stopped");
}

child_spec supervisor_child(std::string id, supervisor_spec spec, restart_type restart) {
  child_spec c;
  c.id = std::move(id);
  c.spawn = [spec = std::move(spec)](node& n, const spawn_options& o, const std::any&) {
    return spawn_supervisor(n, spec, o, o.after_init);
  };
  c.restart = restart;
  c.type = child_type::supervisor;
  c.shutdown = shutdown_mode::infinity();
  return c;
}

result<void> stop_supervisor(node& n, const pid& sup, exit_reason reason) {
  if (auto r = cast(n, sup, detail::sup::shutdown{std::move(reason)}); !r) return r;
  if (!on_node_thread(n)) wait_for_exit(n, sup);
  return {};
}

}  // namespace otpp
