#include <algorithm>

#include <asio/post.hpp>

#include "node_impl.hpp"
#include "otpp/call.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"

namespace otpp {

namespace {
thread_local process* this_thread_process = nullptr;
constexpr int turn_budget = 256;  // messages per turn before yielding the thread (fairness)
constexpr int stream_turn = 64;   // a turn this long means a stream is arriving
constexpr int stream_spin = 256;  // polls (a few microseconds) before going idle
}  // namespace

process* current_process() noexcept {
  return this_thread_process;
}

namespace detail {
process_scope::process_scope(process* p) : saved_(this_thread_process) {
  this_thread_process = p;
}
process_scope::~process_scope() {
  this_thread_process = saved_;
}

exit_reason exception_reason(std::exception_ptr e) {
  // An exception's text must never read as a reason with a meaning of its own (a transient
  // child that throws "shutdown: disk full" must still be restarted).
  exit_reason r(describe(e));
  if (!r.is_failure() || r.is_kill() || r == exit_reason::killed()) {
    return exit_reason("exception: " + r.text());
  }
  return r;
}

void process_extras::idle_timer::expire() {
  // The timer thread is not the process: the check runs as a task on the process. `owner` is
  // set once, before the first arming, so reading it here races with nothing.
  process* p = owner;
  asio::post(p->get_executor(), [p] { p->on_idle_timer(); });
  p->release();  // the listing's reference
}
void process_extras::idle_timer::discard() {
  owner->release();
}
}  // namespace detail

process::process() = default;

process::~process() {
  // Anything still queued (a process that never ran) is released here.
  auto drop = [](detail::envelope* e) {
    while (e) {
      auto* n = e->next;
      delete e;
      e = n;
    }
  };
  drop(user_.head);
  drop(urgent_.head);
  drop(inbox_.close());
}

otpp::node& process::this_node() const noexcept {
  return node_->owner();
}

detail::process_extras& process::extras() {
  if (!extras_) extras_ = std::make_unique<detail::process_extras>();
  return *extras_;
}

asio::execution_context& process::executor_type::query(asio::execution::context_t) const noexcept {
  return node_->context();
}

void process::executor_type::post_task(detail::task_envelope_base* task) const {
  // The process ended: the continuation is dropped, never run.
  auto p = node_->find(pid_);
  if (!p || !node_->enqueue(*p, task)) delete task;
}

void process::fetch() {
  for (auto* e = inbox_.take_all(); e;) {
    auto* next = e->next;
    switch (e->kind) {
      case detail::envelope_kind::cast:
      case detail::envelope_kind::info:
      case detail::envelope_kind::call:
        user_.push(e);
        break;
      case detail::envelope_kind::system_info:
        if (accept_system_info(e)) user_.push(e);
        break;
      case detail::envelope_kind::adopt_monitor: {
        auto* s = static_cast<detail::signal_envelope*>(e);
        extras().monitors.push_back({s->ref, s->from});
        delete e;
        break;
      }
      case detail::envelope_kind::exit_signal: {
        auto* s = static_cast<detail::signal_envelope*>(e);
        const bool untrappable = s->reason.is_kill() && !s->from_link;
        if (untrappable) {
          // An untrappable kill overtakes signals queued before it (a stop sent earlier to a
          // process stuck in a handler must not make it run terminate after the kill).
          urgent_.push_front(e);
        } else if (trap_exit_) {
          // Trapped: it becomes an EXIT message here, in order with the sender's messages.
          handle_signal(e);
        } else {
          urgent_.push(e);
        }
        break;
      }
      case detail::envelope_kind::link:
      case detail::envelope_kind::unlink:
        // Applied as they arrive, as adopt_monitor is: a trapped exit signal (handled right here)
        // must find the link a signal queued before it set up (remote spawn adopts the link
        // to a child whose exit may be fetched in the same batch). A sender's link, unlink
        // and exit keep their order: all three are applied at fetch for a trapping process.
        handle_signal(e);
        break;
      default:
        urgent_.push(e);
        break;
    }
    e = next;
  }
}

bool process::accept_system_info(detail::envelope* e) {
  auto* m = static_cast<detail::message_envelope*>(e);
  if (m->type == type_of<down>()) {
    // A down for a monitor already removed (demonitor raced with the target's exit) is dropped.
    auto* d = static_cast<down*>(m->value());
    auto& mons = extras().monitors;
    auto it =
        std::find_if(mons.begin(), mons.end(), [&](const auto& w) { return w.ref == d->ref; });
    if (it == mons.end()) {
      delete e;
      return false;
    }
    mons.erase(it);
  }
  return true;
}

void process::run() {
  detail::process_scope scope(this);
  detail::new_turn();
  struct turn_end {
    ~turn_end() { detail::new_turn(); }
  } end_of_turn;
  int budget = turn_budget;
  bool spun = false;
  while (!dead_) {
    fetch();
    backlog_.store(static_cast<std::uint32_t>(user_.size), std::memory_order_relaxed);
    while (auto* e = urgent_.pop()) {
      handle_signal(e);
      if (dead_) return;
    }
    if (!suspended_) {
      if (auto* e = user_.pop()) {
        handled_.store(handled_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        backlog_.store(static_cast<std::uint32_t>(user_.size), std::memory_order_relaxed);
        if (bound_ && e->kind <= detail::envelope_kind::call) {
          queued_.fetch_sub(1, std::memory_order_relaxed);
        }
        auto* m = static_cast<detail::message_envelope*>(e);
        if (extras_ && extras_->idle_timeout.count() > 0) extras_->last_active = node_->now();
        std::unique_ptr<detail::message_envelope> owned(m);
        try {
          dispatch(*m);
        } catch (...) {
          auto why = detail::exception_reason(std::current_exception());
          auto where = "handler for '" + std::string(m->tag) + "'";
          owned.reset();
          fail(std::move(why), where);
          return;
        }
        owned.reset();
        if (stop_requested_ && !suspended_) {
          exit_now(extras().stop_reason, true);
          return;
        }
        if (--budget == 0) {
          node_->schedule(this);  // stay awake; let other processes run first
          return;
        }
        continue;
      }
    }
    if (!urgent_.empty()) continue;
    // Nothing runnable: going idle.
    if (extras_ && extras_->idle_timeout.count() > 0 && !idle_armed_ && !suspended_ &&
        user_.empty()) {
      arm_idle_timer();
    }
    if (user_.empty() || suspended_) {
      // A process that has just drained a stream of messages is likely fed by a sender on
      // another thread: wait a moment before going idle, so the sender does not pay a
      // wake-up (a syscall) for every few messages. Not after short turns (ping-pong).
      if (!suspended_ && turn_budget - budget >= stream_turn && !spun) {
        spun = true;
        if (inbox_.wait_for_more(stream_spin)) continue;
      }
      if (inbox_.try_block()) return;
    }
  }
}

void process::arm_idle_timer() {
  auto& x = *extras_;
  auto now = node_->now();
  if (x.last_active == time_point{}) x.last_active = now;
  auto remaining = x.last_active + x.idle_timeout - now;
  if (remaining < clock_type::duration::zero()) remaining = clock_type::duration::zero();
  idle_armed_ = true;
  if (!x.idle.owner) x.idle.owner = this;  // once: the timer thread reads it
  add_ref();                               // the timer listing's reference
  node_->timers().arm(&x.idle, remaining);
}

void process::on_idle_timer() {
  idle_armed_ = false;
  if (dead_) return;
  auto& x = extras();
  if (node_->now() - x.last_active >= x.idle_timeout) {
    x.last_active = node_->now();
    user_.push(new detail::typed_envelope<idle_timeout>(detail::envelope_kind::system_info, self_,
                                                        idle_timeout{}));
  }
  // Not idle long enough (a message came meanwhile): the run loop re-arms when it goes idle.
}

void process::handle_signal(detail::envelope* e) {
  using detail::envelope_kind;
  if (e->kind == envelope_kind::task) {
    std::unique_ptr<detail::task_envelope_base> t(static_cast<detail::task_envelope_base*>(e));
    try {
      t->run();
    } catch (...) {
      t.reset();
      fail(detail::exception_reason(std::current_exception()), "continuation");
      return;
    }
    t.reset();
    if (stop_requested_ && !suspended_) exit_now(extras().stop_reason, true);
    return;
  }
  std::unique_ptr<detail::signal_envelope> s(static_cast<detail::signal_envelope*>(e));
  switch (s->kind) {
    case envelope_kind::exit_signal: {
      if (s->from_link) {
        auto& links = extras().links;
        auto it = std::find(links.begin(), links.end(), s->from);
        if (it == links.end()) return;  // unlinked meanwhile: stale
        links.erase(it);
      }
      if (s->reason.is_kill() && !s->from_link) {
        exit_now(exit_reason::killed(), false);
      } else if (trap_exit_) {
        user_.push(new detail::typed_envelope<exit_message>(envelope_kind::system_info, s->from,
                                                            exit_message{s->from, s->reason}));
      } else if (s->reason.is_normal() && s->from != self_) {
        // ignored, as in Erlang
      } else {
        exit_now(s->reason, false);
      }
      return;
    }
    case envelope_kind::link: {
      auto& links = extras().links;
      if (std::find(links.begin(), links.end(), s->from) == links.end()) {
        links.push_back(s->from);
      }
      return;
    }
    case envelope_kind::unlink: {
      if (extras_) std::erase(extras_->links, s->from);
      return;
    }
    case envelope_kind::monitor:
      if (s->on_exit) {
        extras().exit_callbacks.push_back(std::move(s->on_exit));
      } else {
        extras().monitored_by.push_back({s->ref, s->from});
      }
      return;
    case envelope_kind::demonitor:
      if (extras_) {
        std::erase_if(extras_->monitored_by, [&](const auto& w) { return w.ref == s->ref; });
      }
      return;
    case envelope_kind::stop:
      exit_now(s->reason, true);
      return;
    default:
      return;
  }
}

void process::link(const pid& other) {
  if (other == self_) return;
  auto& links = extras().links;
  if (std::find(links.begin(), links.end(), other) != links.end()) return;
  links.push_back(other);
  if (!node_->send_signal(detail::envelope_kind::link, self_, other)) {
    // Linking to a dead process: an exit signal noproc, as in Erlang.
    auto* x = new detail::signal_envelope(detail::envelope_kind::exit_signal, other);
    x->reason = exit_reason::noproc();
    x->from_link = true;
    urgent_.push(x);
  }
}

void process::unlink(const pid& other) {
  if (!extras_) return;
  if (std::erase(extras_->links, other) == 0) return;
  node_->send_signal(detail::envelope_kind::unlink, self_, other);
}

monitor_ref process::monitor(const pid& other) {
  monitor_ref ref{node_->new_ref()};
  extras().monitors.push_back({ref, other});
  if (!node_->send_signal(detail::envelope_kind::monitor, self_, other, {}, ref)) {
    extras().monitors.pop_back();
    user_.push(new detail::typed_envelope<down>(detail::envelope_kind::system_info, other,
                                                down{ref, other, exit_reason::noproc()}));
  }
  return ref;
}

void process::demonitor(monitor_ref ref) {
  if (!extras_) return;
  auto& mons = extras_->monitors;
  auto it = std::find_if(mons.begin(), mons.end(), [&](const auto& w) { return w.ref == ref; });
  if (it != mons.end()) {
    auto target = it->target;
    mons.erase(it);
    node_->send_signal(detail::envelope_kind::demonitor, self_, target, {}, ref);
  }
  // Flush a down already delivered to the local queue (Erlang's demonitor(Ref, [flush])).
  fetch();
  detail::envelope_fifo keep;
  while (auto* e = user_.pop()) {
    auto* m = static_cast<detail::message_envelope*>(e);
    if (m->type == type_of<down>() && static_cast<down*>(m->value())->ref == ref) {
      delete e;
    } else {
      keep.push(e);
    }
  }
  user_ = keep;
}

result<void> process::run_init() {
  result<void> r = [&]() -> result<void> {
    try {
      return do_init();
    } catch (const std::exception& e) {
      return failure(errc::init_failed, e.what());
    } catch (...) {
      return failure(errc::init_failed, "unknown exception");
    }
  }();
  if (r) return r;
  std::string why = r.reason().empty() ? r.error().message() : r.reason();
  log(log_level::info, "process", self_.to_string(), ": init failed: ", why);
  exit_now(exit_reason(why), false);  // no terminate: init did not succeed
  return failure(errc::init_failed, why);
}

void process::run_async_init() {
  // Taken before init: a failing init ends the process, and exit_now must not report again.
  auto report = std::move(extras().after_init);
  extras().after_init = nullptr;
  auto r = run_init();
  if (report) report(self_, r);
}

void process::release_init(result<void> gate) {
  suspended_ = false;
  if (gate) {
    run_async_init();
    return;
  }
  // Refused before init: the spawner hears the refusal itself, then the process ends.
  if (auto report = std::move(extras().after_init)) {
    extras().after_init = nullptr;
    try {
      report(self_, gate);
    } catch (...) {
      log(log_level::error, "process", self_.to_string(),
          ": after_init threw: ", detail::describe(std::current_exception()));
    }
  }
  exit_now(exit_reason("not started: " + gate.fail().message()), false);
}

void process::run_first(detail::envelope* e) {
  fetch();  // what arrived during init stays behind it
  user_.push_front(e);
}

void process::stop(exit_reason reason) {
  stop_requested_ = true;
  extras().stop_reason = std::move(reason);
}

void process::hold_inbound(detail::ref_ptr<detail::call_state_base> state) {
  auto& in = extras().inbound;
  if (in.size() >= 16) {
    std::erase_if(in, [](const auto& s) { return s->done(); });
  }
  in.push_back(std::move(state));
}

void process::fail(exit_reason reason, std::string_view where) {
  log(log_level::error, "process", self_.to_string(), ": ", where, " threw: ", reason.text());
  exit_now(std::move(reason), true);
}

void process::exit_now(exit_reason reason, bool call_terminate) {
  if (dead_) return;
  auto& x = extras();
  if (x.reason) return;  // already ending (terminate re-entered)
  x.reason = reason;
  if (auto report = std::move(x.after_init)) {
    // An async init that never ran (killed first, node stopping): its spawner still hears.
    x.after_init = nullptr;
    try {
      report(self_, failure(errc::init_failed, "ended before init ran: " + reason.text()));
    } catch (...) {
      log(log_level::error, "process", self_.to_string(),
          ": after_init threw: ", detail::describe(std::current_exception()));
    }
  }
  // Calls this process was waiting on: drop their continuations (a suspended coroutine frame
  // is destroyed without resuming).
  auto outstanding = std::move(x.outstanding);
  for (auto& s : outstanding)
    if (s->claim()) s->abandon();
  outstanding.clear();
  if (call_terminate) {
    try {
      do_terminate(reason);
    } catch (...) {
      log(log_level::error, "process", self_.to_string(),
          ": terminate threw: ", detail::describe(std::current_exception()));
    }
  }
  for (auto& s : x.inbound)
    if (s->claim()) s->complete_error(failure(errc::exit, reason.text()));
  x.inbound.clear();
  dead_ = true;
  node_->retired_handled_.fetch_add(handled_.load(std::memory_order_relaxed),
                                    std::memory_order_relaxed);
  node_->unpublish(self_);
  // Names go before anyone learns of the exit (links, monitors, watchers), as in Erlang: a
  // supervisor restarting the child on its EXIT must find the name free.
  if (watched_.load()) node_->notify_exit_listeners(self_, reason);
  if (idle_armed_ && node_->timers().cancel(&x.idle)) release();  // the listing's reference
  idle_armed_ = false;

  // Everything still queued: calls answer noproc (as their requests are destroyed), link and
  // monitor requests are answered as for a dead process, the rest is dropped.
  detail::envelope_fifo rest;
  auto drain = [&rest](detail::envelope_fifo& f) {
    while (auto* e = f.pop()) rest.push(e);
  };
  drain(urgent_);
  drain(user_);
  for (auto* e = inbox_.close(); e;) {
    auto* n = e->next;
    rest.push(e);
    e = n;
  }
  while (auto* e = rest.pop()) {
    if (e->kind == detail::envelope_kind::link) {
      auto* s = static_cast<detail::signal_envelope*>(e);
      if (std::find(x.links.begin(), x.links.end(), s->from) == x.links.end()) {
        x.links.push_back(s->from);  // answered below with our exit reason
      }
    } else if (e->kind == detail::envelope_kind::monitor) {
      auto* s = static_cast<detail::signal_envelope*>(e);
      if (s->on_exit) {
        x.exit_callbacks.push_back(std::move(s->on_exit));
      } else {
        x.monitored_by.push_back({s->ref, s->from});
      }
    }
    delete e;
  }
  for (const auto& l : x.links) {
    node_->send_signal(detail::envelope_kind::exit_signal, self_, l, reason, {}, true);
  }
  x.links.clear();
  for (const auto& w : x.monitored_by) {
    node_->send_signal(w.who, new detail::typed_envelope<down>(detail::envelope_kind::system_info,
                                                               self_, down{w.ref, self_, reason}));
  }
  x.monitored_by.clear();
  for (auto& cb : x.exit_callbacks) {
    try {
      cb(reason);
    } catch (...) {
      log(log_level::error, "process", self_.to_string(),
          ": exit watcher threw: ", detail::describe(std::current_exception()));
    }
  }
  x.exit_callbacks.clear();
  if (reason.is_failure()) {
    log(log_level::info, "process", self_.to_string(), " exited: ", reason.text());
  }
  node_->process_exited();
}

namespace detail {
const exit_reason* ending_reason(process* p) {
  return p->extras_ && p->extras_->reason ? &*p->extras_->reason : nullptr;
}
}  // namespace detail

}  // namespace otpp
