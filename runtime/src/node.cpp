#include <algorithm>
#include <chrono>
#include <ctime>

#include <asio/defer.hpp>
#include <asio/post.hpp>

#include "node_impl.hpp"
#include "otpp/call.hpp"
#include "otpp/log.hpp"

namespace otpp {
namespace detail {

namespace {
thread_local node_impl* this_thread_node = nullptr;
// Scheduling from inside a process turn: the first process woken goes to this thread's private
// queue (no lock, no wake-up of another thread: the ping-pong and ring shape, where the turn
// ends right after the send). Asio runs private work only after the current turn returns, so
// if the turn goes on sending (a producer loop) the woken process is also posted to the shared
// queue, where an idle worker takes it; whichever copy runs first wins (sched_epoch_).
// Further wake-ups in the same turn go to the shared queue directly (fan-out).
thread_local process* deferred_in_turn = nullptr;
thread_local std::uint32_t deferred_epoch = 0;
thread_local std::uint32_t sends_in_turn = 0;
thread_local bool deferred_used = false;
constexpr std::uint32_t promote_after_sends = 32;

std::uint32_t fresh_creation() {
  static std::atomic<std::uint32_t> counter{0};
  auto now = static_cast<std::uint32_t>(std::time(nullptr));
  std::uint32_t c = now * 64u + (counter.fetch_add(1) % 64u);
  return c == 0 ? 1 : c;
}
}  // namespace

void new_turn() noexcept {
  deferred_in_turn = nullptr;
  deferred_used = false;
  sends_in_turn = 0;
}

node_impl::node_impl(node& o, node_options opts)
    : owner(o),
      thread_count_(opts.threads ? opts.threads
                                 : std::max(1u, std::thread::hardware_concurrency())),
      ctx(static_cast<int>(thread_count_)),
      name(opts.name),
      atom_(node_atom::intern(opts.name)),
      creation_(opts.creation ? opts.creation : fresh_creation()) {}

node_impl::~node_impl() {
  stop();
  join();
  // Calls still waiting (from outside the node) resolve now rather than never.
  std::vector<call_state_base*> pending;
  {
    std::lock_guard lock(deadline_mutex_);
    for (auto& b : deadline_buckets_)
      for (auto* s = b->head; s; s = s->deadline_next) pending.push_back(s);
  }
  for (auto* s : pending) {
    s->add_ref();
    if (s->claim()) s->complete_error(failure(errc::node_stopped));
    forget_deadline(s);
    s->release();
  }
}

void node_impl::start() {
  std::lock_guard lock(threads_mutex_);
  auto expected = state::idle;
  if (!state_.compare_exchange_strong(expected, state::running)) return;
  work_.emplace(asio::make_work_guard(ctx));
  for (std::size_t i = 0; i < thread_count_; ++i) threads_.emplace_back([this] { worker(); });
}

void node_impl::worker() {
  this_thread_node = this;
  for (;;) {
    try {
      ctx.run();
      break;
    } catch (const std::exception& e) {
      // A handler escaped every process-level catch: log and keep the thread serving.
      log(log_level::error, "node", name, ": exception escaped a handler: ", e.what());
    }
  }
  this_thread_node = nullptr;
}

void node_impl::stop() {
  {
    std::lock_guard lock(threads_mutex_);
    auto s = state_.load();
    if (s == state::stopping || s == state::stopped) return;
    if (s == state::idle) {
      // Never started: processes may exist (init ran inline); start threads to stop them.
      state_ = state::running;
      work_.emplace(asio::make_work_guard(ctx));
      for (std::size_t i = 0; i < thread_count_; ++i) threads_.emplace_back([this] { worker(); });
    }
    state_ = state::stopping;
  }
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(hooks_mutex);
    hooks.swap(stop_hooks);
  }
  for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) {
    try {
      (*it)();
    } catch (const std::exception& e) {
      log(log_level::error, "node", name, ": stop hook failed: ", e.what());
    }
  }
  std::vector<pid> all;
  for (auto& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (auto& [serial, p] : s.table) all.push_back(p->self());
  }
  for (const auto& p : all) {
    auto* e = new signal_envelope(envelope_kind::stop, pid{});
    e->reason = exit_reason::shutdown();
    if (!signal(p, e)) delete e;
  }
  std::lock_guard lock(timers_mutex_);
  for (auto& [id, t] : timers_) t->timer.cancel();
  timers_.clear();
}

void node_impl::join() {
  if (this_thread_node == this) return;  // a handler cannot wait for its own node
  {
    std::unique_lock lock(life_mutex_);
    life_cv_.wait(lock, [this] { return live_.load() == 0 || state_.load() == state::idle; });
  }
  std::lock_guard lock(threads_mutex_);
  if (state_.load() == state::idle) return;
  work_.reset();
  ctx.stop();
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

void node_impl::schedule(process* p) {
  p->add_ref();
  auto epoch = p->sched_epoch_.load(std::memory_order_acquire);
  if (this_thread_node == this && current_process() && !deferred_used) {
    deferred_used = true;
    deferred_in_turn = p;
    deferred_epoch = epoch;
    asio::defer(ctx, node_impl::run_op(p, epoch));
  } else {
    asio::post(ctx, node_impl::run_op(p, epoch));
  }
}

void node_impl::note_send() {
  if (deferred_in_turn && ++sends_in_turn == promote_after_sends) {
    process* p = deferred_in_turn;
    deferred_in_turn = nullptr;
    if (p->node_ != this) return;
    p->add_ref();  // the deferred copy still holds its own reference
    asio::post(ctx, node_impl::run_op(p, deferred_epoch));
  }
}

result<void> node_impl::deliver(const pid& to, message_envelope* e) {
  auto p = find(to);
  if (!p) {
    log(log_level::debug, "node", name, ": message '", e->tag, "' to ", to.to_string(), ": noproc");
    delete e;  // a call request answers noproc as it is destroyed
    return failure(errc::noproc, to.to_string());
  }
  const bool bounded = p->bound_ != 0;
  if (bounded && p->queued_.fetch_add(1, std::memory_order_relaxed) >= p->bound_) {
    p->queued_.fetch_sub(1, std::memory_order_relaxed);
    log(log_level::warning, "node", name, ": mailbox of ", to.to_string(), " is full (", p->bound_,
        "): '", e->tag, "' refused");
    if (e->call && e->call->claim()) e->call->complete_error(failure(errc::mailbox_full));
    delete e;
    return failure(errc::mailbox_full, to.to_string());
  }
  if (!enqueue(*p, e)) {
    if (bounded) p->queued_.fetch_sub(1, std::memory_order_relaxed);
    delete e;
    return failure(errc::noproc, to.to_string());
  }
  return {};
}

bool node_impl::signal(const pid& to, envelope* e) {
  auto p = find(to);
  return p && enqueue(*p, e);
}

bool node_impl::enqueue(process& p, envelope* e) {
  switch (p.inbox_.push(e)) {
    case inbox::push_result::queued:
      note_send();
      return true;
    case inbox::push_result::woke_reader:
      schedule(&p);
      return true;
    case inbox::push_result::closed:
      return false;
  }
  return false;
}

result<pid> node_impl::start_process(process* raw, const spawn_options& o) {
  ref_ptr<process> p(raw);
  auto s = state_.load();
  if (s == state::stopping || s == state::stopped) {
    return failure(errc::node_stopped, name);
  }
  p->node_ = this;
  p->self_ = new_pid();
  p->trap_exit_ = o.trap_exit;
  p->bound_ = static_cast<std::uint32_t>(std::min<std::size_t>(o.mailbox_bound, UINT32_MAX));
  if (o.idle_timeout.count() > 0) p->extras().idle_timeout = o.idle_timeout;
  live_.fetch_add(1);
  publish(p.get());

  process* parent = current_process();
  auto init = [&]() -> result<void> {
    // init runs as the new process: self() and sends from it carry its pid.
    process_scope guard(p.get());
    try {
      return p->do_init();
    } catch (const std::exception& e) {
      return failure(errc::init_failed, e.what());
    } catch (...) {
      return failure(errc::init_failed, "unknown exception");
    }
  };
  auto r = init();
  if (!r) {
    std::string why = r.reason().empty() ? r.error().message() : r.reason();
    log(log_level::info, "node", name, ": init of ", p->self_.to_string(), " failed: ", why);
    {
      process_scope guard(p.get());
      p->exit_now(exit_reason(why), false);
    }
    return failure(errc::init_failed, why);
  }
  if (o.link && parent && parent->node_ == this && !parent->dead_) {
    parent->extras().links.push_back(p->self_);
    p->extras().links.push_back(parent->self_);
  }
  // First turn: the inbox started awake; go idle unless messages arrived during init.
  // A first turn also arms an idle timeout.
  if (o.idle_timeout.count() > 0 || !p->urgent_.empty() || !p->info_.empty() ||
      !p->inbox_.try_block()) {
    schedule(p.get());
  }
  return p->self_;
}

void node_impl::track_call(process& self, const ref_ptr<call_state_base>& state) {
  auto& out = self.extras().outstanding;
  if (out.size() >= 16) {
    std::erase_if(out, [](const ref_ptr<call_state_base>& s) { return s->done(); });
  }
  out.push_back(state);
}

void node_impl::process_exited(process&, const exit_reason&) {
  if (live_.fetch_sub(1) == 1) {
    std::lock_guard lock(life_mutex_);
    life_cv_.notify_all();
  }
}

timer_ref node_impl::start_timer(std::chrono::steady_clock::duration d, const pid& to,
                                 message_envelope* e) {
  timer_ref ref{new_ref()};
  auto entry = std::make_shared<timer_entry>(ctx);
  entry->to = to;
  entry->message.reset(e);
  entry->timer.expires_after(d);
  {
    std::lock_guard lock(timers_mutex_);
    timers_.emplace(ref.id, entry);
    // Armed under the lock so cancel_timer never touches a timer being set up.
    entry->timer.async_wait([this, id = ref.id](const std::error_code& ec) {
      if (ec) return;
      std::shared_ptr<timer_entry> fired;
      {
        std::lock_guard lock(timers_mutex_);
        auto it = timers_.find(id);
        if (it == timers_.end()) return;  // cancelled
        fired = std::move(it->second);
        timers_.erase(it);
      }
      auto* msg = fired->message.release();
      if (!signal(fired->to, msg)) delete msg;
    });
  }
  return ref;
}

bool node_impl::cancel_timer(timer_ref ref) {
  std::lock_guard lock(timers_mutex_);
  auto it = timers_.find(ref.id);
  if (it == timers_.end()) return false;
  it->second->timer.cancel();
  timers_.erase(it);
  return true;
}

// ---- entry points used by inline templates
result<void> deliver(node_impl& n, const pid& to, message_envelope* e) {
  return n.deliver(to, e);
}
result<pid> start_process(node_impl& n, process* p, const spawn_options& o) {
  return n.start_process(p, o);
}
pid current_self() noexcept {
  auto* p = current_process();
  return p ? p->self() : pid{};
}
timer_ref start_timer(node_impl& n, std::chrono::steady_clock::duration d, const pid& to,
                      message_envelope* e) {
  return n.start_timer(d, to, e);
}
asio::io_context& node_context(node_impl& n) {
  return n.ctx;
}

void start_call(node_impl& n, const pid& to, call_state_base* state, message_envelope* request,
                std::chrono::milliseconds timeout) {
  ref_ptr<call_state_base> keep(state);
  request->call = keep;
  if (process* self = current_process()) node_impl::track_call(*self, keep);
  if (timeout.count() >= 0) n.arm_deadline(state, timeout);
  (void)n.deliver(to, request);
}

void forget_deadline(node_impl& n, call_state_base* state) {
  n.forget_deadline(state);
}

void node_impl::arm_deadline(call_state_base* s, std::chrono::milliseconds timeout) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(deadline_mutex_);
  deadline_bucket* b = nullptr;
  for (auto& candidate : deadline_buckets_) {
    if (candidate->timeout == timeout) {
      b = candidate.get();
      break;
    }
  }
  if (!b) {
    deadline_buckets_.push_back(std::make_unique<deadline_bucket>());
    b = deadline_buckets_.back().get();
    b->timeout = timeout;
  }
  s->add_ref();  // the list holds a reference
  s->deadline = now + timeout;
  s->deadline_bucket = b;
  s->deadline_next = nullptr;
  s->deadline_prev = b->tail;
  if (b->tail) {
    b->tail->deadline_next = s;
  } else {
    b->head = s;
  }
  b->tail = s;
  if (s->deadline < deadline_armed_) rearm_deadline_locked();
}

void node_impl::forget_deadline(call_state_base* s) {
  {
    std::lock_guard lock(deadline_mutex_);
    auto* b = static_cast<deadline_bucket*>(s->deadline_bucket);
    if (!b) return;
    (s->deadline_prev ? s->deadline_prev->deadline_next : b->head) = s->deadline_next;
    (s->deadline_next ? s->deadline_next->deadline_prev : b->tail) = s->deadline_prev;
    s->deadline_prev = s->deadline_next = nullptr;
    s->deadline_bucket = nullptr;
  }
  s->release();
}

void node_impl::rearm_deadline_locked() {
  auto earliest = std::chrono::steady_clock::time_point::max();
  for (auto& b : deadline_buckets_)
    if (b->head && b->head->deadline < earliest) earliest = b->head->deadline;
  if (earliest == deadline_armed_) return;
  deadline_armed_ = earliest;
  if (earliest == std::chrono::steady_clock::time_point::max()) return;  // stays armed: harmless
  if (!deadline_timer_) deadline_timer_.emplace(ctx);
  deadline_timer_->expires_at(earliest);  // cancels a pending wait (it sees operation_aborted)
  deadline_timer_->async_wait([this](const std::error_code& ec) { on_deadline(ec); });
}

void node_impl::on_deadline(const std::error_code& ec) {
  if (ec == asio::error::operation_aborted) return;
  std::vector<call_state_base*> expired;
  {
    std::lock_guard lock(deadline_mutex_);
    auto now = std::chrono::steady_clock::now();
    for (auto& b : deadline_buckets_) {
      while (b->head && b->head->deadline <= now) {
        auto* s = b->head;
        b->head = s->deadline_next;
        (b->head ? b->head->deadline_prev : b->tail) = nullptr;
        s->deadline_next = nullptr;
        s->deadline_bucket = nullptr;
        expired.push_back(s);  // keeps the list's reference
      }
    }
    deadline_armed_ = std::chrono::steady_clock::time_point::min();  // force a re-arm
    rearm_deadline_locked();
  }
  for (auto* s : expired) {
    if (s->claim()) s->complete_error(failure(errc::timeout));
    s->release();
  }
}

namespace {
// A dynamic message as an envelope: the map's string "type" field is the tag.
result<dynamic_envelope*> make_dynamic(node& n, const pid& to, msgpack::object_handle map,
                                       envelope_kind k) {
  const msgpack::object& o = map.get();
  std::string tag;
  if (o.type == msgpack::type::MAP) {
    for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR && kv.key.as<std::string_view>() == "type" &&
          kv.val.type == msgpack::type::STR) {
        tag = kv.val.as<std::string>();
      }
    }
  }
  if (tag.empty()) {
    log(log_level::warning, "node", n.name(), ": dynamic message to ", to.to_string(),
        " has no string 'type' field: refused");
    return failure(errc::bad_message, "dynamic message needs a map with a string 'type' field");
  }
  return new dynamic_envelope(k, current_self(), std::move(tag), std::move(map));
}

result<void> deliver_dynamic(node& n, const pid& to, msgpack::object_handle map, envelope_kind k) {
  auto e = make_dynamic(n, to, std::move(map), k);
  if (!e) return e.fail();
  return n.impl().deliver(to, *e);
}

class dynamic_call_state final : public call_state_base {
 public:
  dynamic_call_state(node_impl& n, std::function<void(result<msgpack::object_handle>)> d)
      : node_(n), done_(std::move(d)) {}
  void complete_value(void* value, const value_codec* codec) override {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    codec->pack(packer, value);
    finish(msgpack::unpack(buffer.data(), buffer.size()));
  }
  void complete_error(failure f) override { finish(std::move(f)); }
  void abandon() override {
    node_.forget_deadline(this);
    done_ = nullptr;
  }

 private:
  void finish(result<msgpack::object_handle> r) {
    node_.forget_deadline(this);
    auto d = std::move(done_);
    if (d) d(std::move(r));
  }
  node_impl& node_;
  std::function<void(result<msgpack::object_handle>)> done_;
};
}  // namespace

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
bool node::running() const noexcept {
  return impl_->running();
}
asio::io_context& node::context() noexcept {
  return impl_->ctx;
}
const std::string& node::name() const noexcept {
  return impl_->name;
}
node_atom node::atom() const noexcept {
  return impl_->atom_;
}
std::uint32_t node::creation() const noexcept {
  return impl_->creation_;
}
bool node::alive(const pid& p) const {
  return static_cast<bool>(impl_->find(p));
}
std::size_t node::process_count() const {
  return impl_->live_.load();
}

void node::exit(const pid& to, exit_reason reason) {
  auto* e = new detail::signal_envelope(detail::envelope_kind::exit_signal, detail::current_self());
  e->reason = std::move(reason);
  if (!impl_->signal(to, e)) delete e;
}
void node::stop_process(const pid& to, exit_reason reason) {
  auto* e = new detail::signal_envelope(detail::envelope_kind::stop, detail::current_self());
  e->reason = std::move(reason);
  if (!impl_->signal(to, e)) delete e;
}
void node::watch_process(const pid& p, std::function<void(const exit_reason&)> on_exit) {
  auto* e = new detail::signal_envelope(detail::envelope_kind::monitor, pid{});
  e->on_exit = std::move(on_exit);
  if (!impl_->signal(p, e)) {
    auto cb = std::move(e->on_exit);
    delete e;
    cb(exit_reason::noproc());
  }
}

bool node::cancel_timer(timer_ref ref) {
  return impl_->cancel_timer(ref);
}

void node::add_exit_listener(exit_listener listener) {
  std::lock_guard lock(impl_->hooks_mutex);
  impl_->exit_listeners.push_back(std::move(listener));
}
void node::watch_exit(const pid& p, bool on) {
  if (auto proc = impl_->find(p)) proc->watched_.store(on);
}
void node::add_stop_hook(std::function<void()> hook) {
  std::lock_guard lock(impl_->hooks_mutex);
  impl_->stop_hooks.push_back(std::move(hook));
}

result<void> cast_dynamic(node& n, const pid& to, msgpack::object_handle map) {
  return detail::deliver_dynamic(n, to, std::move(map), detail::envelope_kind::cast);
}
result<void> send_dynamic(node& n, const pid& to, msgpack::object_handle map) {
  return detail::deliver_dynamic(n, to, std::move(map), detail::envelope_kind::info);
}

void call_dynamic(node& n, const pid& to, msgpack::object_handle map,
                  std::chrono::milliseconds timeout,
                  std::function<void(result<msgpack::object_handle>)> done) {
  auto* state = new detail::dynamic_call_state(n.impl(), std::move(done));
  detail::ref_ptr<detail::call_state_base> keep(state);
  auto request = detail::make_dynamic(n, to, std::move(map), detail::envelope_kind::call);
  if (!request) {
    if (state->claim()) state->complete_error(request.fail());
    return;
  }
  detail::start_call(n.impl(), to, state, *request, timeout);
}

}  // namespace otpp
