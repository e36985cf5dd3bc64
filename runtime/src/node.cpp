// The node: lifecycle, the process table, services, send_after timers and the public facade.
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <random>

#include "node_impl.hpp"
#include "otpp/call.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"
#include "otpp/node_counters.hpp"
#include "otpp/router.hpp"
#include "scheduler_slot.hpp"

namespace otpp {
namespace detail {

namespace {
// A fresh incarnation per start: random, so two OS processes starting the same node name at
// the same moment still differ, and never 0 (0 means "choose one").
std::uint32_t fresh_creation() {
  std::random_device rd;
  std::uint32_t c = 0;
  while (c == 0) c = rd();
  return c;
}

// send_after: the envelope waits in the timer service, then goes through the door.
struct message_timer final : timer_entry {
  node_impl* node;
  pid to;
  message_envelope* message;
  message_timer(node_impl* n, pid t, message_envelope* m) : node(n), to(t), message(m) {}
  void expire() override {
    (void)node->route(to, message);
    delete this;
  }
  void discard() override {
    delete message;
    delete this;
  }
};

// post_after: the task waits in the timer service, then joins the process's urgent queue.
struct task_timer final : timer_entry {
  node_impl* node;
  pid to;
  std::function<void()> fn;
  task_timer(node_impl* n, pid t, std::function<void()> f) : node(n), to(t), fn(std::move(f)) {}
  void expire() override {
    auto* task = new task_envelope<std::function<void()>>(std::move(fn));
    auto p = node->find(to);
    if (!p || !node->enqueue(*p, task)) delete task;
    delete this;
  }
  void discard() override { delete this; }
};

// run_after: the function runs on the thread that expires it (a node thread).
struct function_timer final : timer_entry {
  std::function<void()> fn;
  explicit function_timer(std::function<void()> f) : fn(std::move(f)) {}
  void expire() override {
    try {
      fn();
    } catch (const std::exception& e) {
      log(log_level::error, "node", "run_after function threw: ", e.what());
    }
    delete this;
  }
  void discard() override { delete this; }
};

std::atomic<std::size_t> next_service_index{0};
}  // namespace

std::size_t new_service_index() noexcept {
  return next_service_index.fetch_add(1, std::memory_order_relaxed);
}

node_impl::node_impl(node& o, node_options opts)
    : owner_(o),
      thread_count_(opts.threads ? opts.threads
                                 : std::max(1u, std::thread::hardware_concurrency())),
      manual_(opts.manual),
      idle_spin_(opts.idle_spin),
      ctx_(manual_ ? 1 : static_cast<int>(thread_count_)),
      name_(opts.name),
      atom_(node_atom::intern(opts.name)),
      creation_(opts.creation ? opts.creation : fresh_creation()),
      timers_(ctx_, std::move(opts.clock)) {
  if (!node_atom::valid_name(name_)) {
    log(log_level::warning, "node", "node name '", name_,
        "' is not 1-255 printable characters without spaces: its pids print as 'nonode' and "
        "it cannot join a cluster");
  }
}

node_impl::~node_impl() {
  stop();
  join();
  // Layer state goes after every process ended, last created first.
  {
    std::lock_guard lock(services_mutex_);
    while (!services_.empty()) services_.pop_back();
  }
  // Calls still waiting (from outside the node) resolve now (node_stopped), and timers that
  // never fired free their messages.
  timers_.discard_all();
  fail_remote_calls(std::nullopt, failure(errc::node_stopped, name_));
  // Run what is still queued on this thread: completions posted during the stop (every call
  // resolves exactly once, even one whose node is going away) and stale wake-ups (they find
  // their processes ended and let go of them).
  node_scope scope(this);
  for (int rounds = 0; rounds < 16; ++rounds) {
    ctx_.restart();
    if (ctx_.poll() == 0) break;
  }
}

void node_impl::start_threads_locked() {
  if (manual_) return;
  work_.emplace(asio::make_work_guard(ctx_));
  for (std::size_t i = 0; i < thread_count_; ++i) slots_.push_back(std::make_unique<worker_slot>());
  for (std::size_t i = 0; i < thread_count_; ++i) {
    threads_.emplace_back([this, slot = slots_[i].get()] { worker(slot); });
  }
}

void node_impl::start() {
  std::lock_guard lock(threads_mutex_);
  auto expected = state::idle;
  if (!state_.compare_exchange_strong(expected, state::running)) return;
  start_threads_locked();
}

void node_impl::stop() {
  {
    std::lock_guard lock(threads_mutex_);
    auto s = state_.load();
    if (s == state::stopping || s == state::stopped) return;
    // Never started: processes may exist (init ran inline); start threads to stop them.
    if (s == state::idle) start_threads_locked();
    state_ = state::stopping;
  }
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(hooks_mutex_);
    hooks.swap(stop_hooks_);
  }
  for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) {
    try {
      (*it)();
    } catch (const std::exception& e) {
      log(log_level::error, "node", name_, ": stop hook failed: ", e.what());
    }
  }
  std::vector<pid> all;
  for (auto& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (auto& [serial, p] : s.table) all.push_back(p->self());
  }
  for (const auto& p : all) send_signal(envelope_kind::stop, pid{}, p, exit_reason::shutdown());
}

void node_impl::join() {
  if (current_node() == this) return;  // a handler cannot wait for its own node
  if (manual_) {
    // Run the stop here; a process that never ends (waiting on virtual time nobody advances)
    // is reported rather than waited for forever.
    for (int idle_rounds = 0; live_.load() > 0 && idle_rounds < 3;) {
      idle_rounds = poll() == 0 ? idle_rounds + 1 : 0;
    }
    if (live_.load() > 0) {
      log(log_level::warning, "node", name_, ": manual node joined with ", live_.load(),
          " processes still alive (advance its clock or poll it until they end)");
    }
    std::lock_guard lock(threads_mutex_);
    if (state_.load() != state::idle) state_ = state::stopped;
    return;
  }
  {
    std::unique_lock lock(life_mutex_);
    life_cv_.wait(lock, [this] { return live_.load() == 0 || state_.load() == state::idle; });
  }
  std::lock_guard lock(threads_mutex_);
  if (state_.load() == state::idle) return;
  work_.reset();
  ctx_.stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  state_ = state::stopped;
}

ref_ptr<process> node_impl::find(const pid& p) const {
  if (!is_local(p)) return {};
  auto& s = shard_of(p.serial());
  std::lock_guard lock(s.mutex);
  auto it = s.table.find(p.serial());
  return it == s.table.end() ? ref_ptr<process>{} : it->second;
}

void node_impl::publish(process* p) {
  auto& s = shard_of(p->self_.serial());
  std::lock_guard lock(s.mutex);
  s.table.emplace(p->self_.serial(), ref_ptr<process>(p));
}

void node_impl::unpublish(const pid& p) {
  ref_ptr<process> keep;  // released outside the lock
  auto& s = shard_of(p.serial());
  std::lock_guard lock(s.mutex);
  auto it = s.table.find(p.serial());
  if (it != s.table.end()) {
    keep = std::move(it->second);
    s.table.erase(it);
  }
}

result<pid> node_impl::start_process(process* raw, const spawn_options& o) {
  ref_ptr<process> p(raw);
  if (stopping()) return failure(errc::node_stopped, name_);
  p->node_ = this;
  p->self_ = new_pid();
  p->trap_exit_ = o.trap_exit;
  p->label_ = o.label;
  p->started_ = now();
  p->bound_ = static_cast<std::uint32_t>(std::min<std::size_t>(o.mailbox_bound, UINT32_MAX));
  if (o.idle_timeout.count() > 0) p->extras().idle_timeout = o.idle_timeout;
  live_.fetch_add(1);
  spawned_.fetch_add(1, std::memory_order_relaxed);
  publish(p.get());

  process* parent = current_process();
  if (o.before_init) {
    result<void> ready = [&]() -> result<void> {
      try {
        return o.before_init(p->self_);
      } catch (const std::exception& e) {
        return failure(errc::invalid_argument, std::string("before_init threw: ") + e.what());
      }
    }();
    if (!ready) {
      // Init never runs: the process ends as if it had never been started.
      log(log_level::debug, "node", name_, ": spawn of ", p->self_.to_string(),
          " refused before init: ", ready.fail().message());
      process_scope guard(p.get());
      p->exit_now(exit_reason("not started: " + ready.fail().message()), false);
      return ready.fail();
    }
  }
  auto link_to_spawner = [&] {
    if (o.link && parent && parent->node_ == this && !parent->dead_) {
      parent->extras().links.push_back(p->self_);
      p->extras().links.push_back(parent->self_);
    }
  };
  if (o.async_init) {
    // Init is the first thing the process does on its own turn (before any signal or message
    // that arrives meanwhile); the spawner goes on at once. Linked first: a failing init then
    // reaches a linked spawner as an EXIT.
    link_to_spawner();
    if (o.after_init) p->extras().after_init = o.after_init;
    if (o.init_gate) {
      // No message is handled before init (a suspended process takes signals only); the
      // release posts init as a task, and is a no-op once the process has ended.
      p->suspended_ = true;
      schedule(p.get());
      auto released = std::make_shared<std::atomic<bool>>(false);
      std::function<void(result<void>)> release = [this, self = p->self_,
                                                   released](result<void> r) {
        if (released->exchange(true)) return;
        auto q = find(self);
        if (!q) return;
        auto* task = new task_envelope<std::function<void()>>(
            std::function<void()>([q = q.get(), r = std::move(r)] { q->release_init(r); }));
        if (!enqueue(*q, task)) delete task;
      };
      try {
        o.init_gate(p->self_, release);
      } catch (const std::exception& e) {
        log(log_level::error, "node", name_, ": init_gate of ", p->self_.to_string(),
            " threw: ", e.what());
        release(failure(errc::init_failed, std::string("init_gate threw: ") + e.what()));
      }
      return p->self_;
    }
    p->urgent_.push(new task_envelope<std::function<void()>>(
        std::function<void()>([q = p.get()] { q->run_async_init(); })));
    schedule(p.get());
    return p->self_;
  }
  result<void> r = [&] {
    process_scope guard(p.get());  // init runs as the new process: self() is its pid
    return p->run_init();          // on failure the process has ended
  }();
  if (!r) return r.fail();
  link_to_spawner();
  // First turn: the inbox started awake; go idle unless work arrived during init (init may
  // have moved messages into the process's own queues, e.g. through demonitor's flush). A
  // first turn also arms an idle timeout.
  if (o.idle_timeout.count() > 0 || !p->urgent_.empty() || !p->user_.empty() ||
      !p->inbox_.try_block()) {
    schedule(p.get());
  }
  return p->self_;
}

void node_impl::process_exited() {
  exited_.fetch_add(1, std::memory_order_relaxed);
  if (live_.fetch_sub(1) == 1) {
    std::lock_guard lock(life_mutex_);
    life_cv_.notify_all();
  }
}

void node_impl::notify_exit_listeners(const pid& p, const exit_reason& reason) {
  std::vector<node::exit_listener> listeners;
  {
    std::lock_guard lock(hooks_mutex_);
    listeners = exit_listeners_;
  }
  for (auto& l : listeners) {
    try {
      l(p, reason);
    } catch (...) {
      // The exit goes on: links, monitors and the live count must still hear of it.
      log(log_level::error, "node", name_, ": exit listener threw for ", p.to_string(), ": ",
          describe(std::current_exception()));
    }
  }
}

void node_impl::add_exit_listener(node::exit_listener l) {
  std::lock_guard lock(hooks_mutex_);
  exit_listeners_.push_back(std::move(l));
}

void node_impl::add_stop_hook(std::function<void()> hook) {
  std::lock_guard lock(hooks_mutex_);
  stop_hooks_.push_back(std::move(hook));
}

std::optional<std::function<void(const exit_reason&)>> node_impl::watch(
    const pid& p, std::function<void(const exit_reason&)> on_exit) {
  auto* e = new signal_envelope(envelope_kind::monitor, pid{});
  e->on_exit = std::move(on_exit);
  // A callback cannot cross the wire: only local processes can be watched this way.
  if (is_local(p) && dispatch(p, e) == outcome::delivered) return std::nullopt;
  auto back = std::move(e->on_exit);
  delete e;
  return back;
}

timer_ref node_impl::start_timer(clock_type::duration d, const pid& to, message_envelope* e) {
  timer_ref ref{new_ref()};
  auto* t = new message_timer(this, to, e);
  t->timer_id = ref.id;
  timers_.arm(t, d);
  return ref;
}

bool node_impl::cancel_timer(timer_ref ref) {
  timer_entry* t = timers_.cancel_id(ref.id);
  if (!t) return false;
  t->discard();
  return true;
}

node_service& node_impl::service(std::size_t index, node_service* (*make)(node&)) {
  if (index >= max_services) {
    log(log_level::error, "node", name_, ": more than ", max_services, " service types");
    std::terminate();
  }
  if (auto* s = service_slots_[index].load(std::memory_order_acquire)) return *s;
  std::lock_guard lock(services_mutex_);
  if (auto* s = service_slots_[index].load(std::memory_order_acquire)) return *s;
  std::unique_ptr<node_service> made(make(owner_));
  auto* s = made.get();
  services_.push_back(std::move(made));
  service_slots_[index].store(s, std::memory_order_release);
  return *s;
}

// ---- entry points used by inline templates
result<void> route(node_impl& n, const pid& to, message_envelope* e) {
  return n.route(to, e);
}
result<pid> start_process(node_impl& n, process* p, const spawn_options& o) {
  return n.start_process(p, o);
}
pid current_self() noexcept {
  auto* p = current_process();
  return p ? p->self() : pid{};
}
timer_ref start_timer(node_impl& n, clock_type::duration d, const pid& to, message_envelope* e) {
  return n.start_timer(d, to, e);
}
node_service& find_service(node_impl& n, std::size_t index, node_service* (*make)(node&)) {
  return n.service(index, make);
}

std::string describe(std::exception_ptr e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
  return "unknown";
}

void reject(process& p, message_envelope& m, failure f) {
  const char* what = m.call ? "call" : m.kind == envelope_kind::cast ? "cast" : "info";
  log(log_level::warning, "gen_server", p.self().to_string(), ": ", what, " '", m.tag,
      "' refused: ", f.message());
  if (m.call) {
    if (m.call->claim()) m.call->complete_error(std::move(f));
    m.call.reset();
  }
}

}  // namespace detail

// ---- node
node::node(node_options options)
    : impl_(std::make_unique<detail::node_impl>(*this, std::move(options))) {}
node::~node() {
  impl_->stop();
  impl_->join();
}
void node::start() {
  impl_->start();
}
void node::stop() {
  impl_->stop();
  impl_->join();
}
void node::join() {
  impl_->join();
}
std::size_t node::poll() {
  return impl_->poll();
}
bool node::running() const noexcept {
  return impl_->running();
}
bool node::manual() const noexcept {
  return impl_->manual();
}
asio::io_context& node::context() noexcept {
  return impl_->context();
}
const std::string& node::name() const noexcept {
  return impl_->name();
}
node_atom node::atom() const noexcept {
  return impl_->atom();
}
std::uint32_t node::creation() const noexcept {
  return impl_->creation();
}
time_point node::now() const noexcept {
  return impl_->now();
}
time_point node::coarse_now() const noexcept {
  return impl_->timers().coarse_now();
}
clock_type::duration node::coarse_resolution() const noexcept {
  return impl_->timers().coarse_resolution();
}
bool node::alive(const pid& p) const {
  return static_cast<bool>(impl_->find(p));
}
std::size_t node::process_count() const {
  return impl_->live();
}

namespace {
std::string demangle(const std::type_info* t) {
  if (!t) return {};
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(t->name());
}
}  // namespace

process_info detail::node_impl::info_of(const process& p) const {
  process_info i;
  i.self = p.self_;
  i.type = demangle(p.type_);
  i.label = p.label_;
  i.mailbox = p.backlog_.load(std::memory_order_relaxed);
  i.handled = p.handled_.load(std::memory_order_relaxed);
  i.memory = p.object_size_ + i.mailbox * sizeof(detail::message_envelope);
  i.started = p.started_;
  return i;
}

node_counters detail::node_impl::counters() const {
  node_counters c;
  c.spawned = spawned_.load(std::memory_order_relaxed);
  c.exited = exited_.load(std::memory_order_relaxed);
  c.messages_handled = retired_handled_.load(std::memory_order_relaxed);
  for (const auto& stripe : call_outcomes_)
    for (std::size_t i = 0; i < c.calls.size(); ++i)
      c.calls[i] += stripe.by_outcome[i].load(std::memory_order_relaxed);
  for_each_process([&](const ref_ptr<process>& p) {
    c.messages_handled += p->handled_.load(std::memory_order_relaxed);
  });
  return c;
}

node_counters counters(node& n) {
  return n.impl().counters();
}

std::vector<process_info> node::processes() const {
  std::vector<detail::ref_ptr<process>> live;
  impl_->for_each_process([&](const detail::ref_ptr<process>& p) { live.push_back(p); });
  std::vector<process_info> out;
  out.reserve(live.size());
  // Described outside the table's locks: demangling allocates.
  for (const auto& p : live) out.push_back(impl_->info_of(*p));
  std::sort(out.begin(), out.end(),
            [](const process_info& a, const process_info& b) { return a.self < b.self; });
  return out;
}

result<process_info> node::info(const pid& p) const {
  auto found = impl_->find(p);
  if (!found) return failure(errc::noproc, p.to_string());
  return impl_->info_of(*found);
}

void node::exit(const pid& to, exit_reason reason) {
  impl_->send_signal(detail::envelope_kind::exit_signal, detail::current_self(), to,
                     std::move(reason));
}
void node::stop_process(const pid& to, exit_reason reason) {
  impl_->send_signal(detail::envelope_kind::stop, detail::current_self(), to, std::move(reason));
}
void node::watch_process(const pid& p, std::function<void(const exit_reason&)> on_exit) {
  if (auto not_alive = impl_->watch(p, std::move(on_exit))) (*not_alive)(exit_reason::noproc());
}

timer_ref node::post_after(clock_type::duration delay, const pid& to, std::function<void()> f) {
  timer_ref ref{impl_->new_ref()};
  auto* t = new detail::task_timer(impl_.get(), to, std::move(f));
  t->timer_id = ref.id;
  impl_->timers().arm(t, delay);
  return ref;
}

timer_ref node::run_after(clock_type::duration delay, std::function<void()> f) {
  timer_ref ref{impl_->new_ref()};
  auto* t = new detail::function_timer(std::move(f));
  t->timer_id = ref.id;
  impl_->timers().arm(t, delay);
  return ref;
}

bool node::cancel_timer(timer_ref ref) {
  return impl_->cancel_timer(ref);
}

void node::add_exit_listener(exit_listener listener) {
  impl_->add_exit_listener(std::move(listener));
}
void node::watch_exit(const pid& p, bool on) {
  if (auto proc = impl_->find(p)) proc->watched_.store(on);
}
void node::add_stop_hook(std::function<void()> hook) {
  impl_->add_stop_hook(std::move(hook));
}

void set_router(node& n, router* r) {
  n.impl().set_router(r);
}

}  // namespace otpp
