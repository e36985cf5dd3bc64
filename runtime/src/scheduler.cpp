// Scheduling processes on the node's threads.
//
// A process is scheduled on its idle-to-runnable edge (the inbox's CAS says which sender saw
// it idle). Inside a turn, the first process woken is deferred to this thread's private queue:
// no lock, no wake-up of another thread, which is the ping-pong and ring shape, where the turn
// ends right after the send. Asio runs private work only after the current turn returns, so:
//  - if the turn keeps sending (a producer loop), the woken process is also posted to the
//    shared queue after a few more sends, where an idle worker takes it;
//  - if the turn runs long without sending, the watchman (one idle worker that sleeps in short
//    naps: a few hundred wake-ups a second on an idle node, whatever its thread count) steals
//    the deferred wake-up from the busy thread after two naps at most.
// Whichever copy of a wake-up runs first wins (sched_epoch_); the other is a no-op.
// With node_options::idle_spin, an idle worker (one at a time) polls for work that long before
// it sleeps, so a stream between two threads does not pay a futex wake-up per few messages on
// CPUs where those are expensive (AMD EPYC). Off by default: on the Intel Xeon we measure on,
// wake-ups are cheap and the spinning worker makes the producer and consumer contend for the
// allocator (cast 1->1 lost ~10%).
#include <utility>

#include <asio/defer.hpp>
#include <asio/post.hpp>

#include "node_impl.hpp"
#include "otpp/log.hpp"
#include "scheduler_slot.hpp"

namespace otpp::detail {

namespace {
thread_local node_impl* this_thread_node = nullptr;
thread_local worker_slot* this_thread_slot = nullptr;
thread_local std::uint32_t sends_in_turn = 0;
thread_local bool deferred_used = false;
thread_local process* deferred_in_turn = nullptr;  // alive: its deferred wake-up holds it
thread_local std::uint32_t deferred_epoch = 0;
thread_local bool this_thread_watchman = false;
// An inbound_scope (a frame from the wire being delivered on an I/O handler) is open, and the
// worker's turn count when such a scope last deferred a wake-up: one deferred wake-up at most
// between process turns, so a burst of frames for many processes still spreads over workers.
thread_local bool inbound_active = false;
thread_local std::uint64_t inbound_deferred_at = ~std::uint64_t{0};
constexpr std::uint32_t promote_after_sends = 32;
constexpr auto watch_nap = std::chrono::milliseconds(10);

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

node_impl* current_node() noexcept {
  return this_thread_node;
}

node_scope::node_scope(node_impl* n) : saved_(this_thread_node) {
  this_thread_node = n;
}
node_scope::~node_scope() {
  this_thread_node = saved_;
}

void new_turn() noexcept {
  if (auto* s = this_thread_slot) {
    // Plain stores (this worker is the slot's only writer): nothing on the hot path pays an
    // atomic read-modify-write for the watchman.
    if (deferred_used) s->serial.store(0, std::memory_order_relaxed);
    s->turns.store(s->turns.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  deferred_used = false;
  deferred_in_turn = nullptr;
  sends_in_turn = 0;
}

// The reference a queued wake-up holds (taken by its scheduler): released when the wake-up
// runs or, if the node ends with it still queued, when the queue destroys it.
struct wake_ref {
  process* p;
  explicit wake_ref(process* q) noexcept : p(q) {}
  wake_ref(wake_ref&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  wake_ref(const wake_ref&) = delete;
  wake_ref& operator=(const wake_ref&) = delete;
  wake_ref& operator=(wake_ref&&) = delete;
  ~wake_ref() {
    if (p) p->release();
  }
};

// A queued wake-up: runs `p` unless another copy of it already did (sched_epoch_). A plain
// struct, built in place at the call site (a lambda returned from a function was not inlined
// and cost a store-forwarding stall per hop).
struct node_impl::wake_up {
  node_impl* node;
  wake_ref ref;
  std::uint32_t epoch;
  void operator()() {
    if (this_thread_watchman) node->hand_over_watch();
    auto expected = epoch;
    if (ref.p->sched_epoch_.compare_exchange_strong(expected, epoch + 1,
                                                    std::memory_order_acq_rel)) {
      ref.p->run();
    }
  }
};

void node_impl::hand_over_watch() {
  // The watchman got work (possibly a long turn): another idle worker must watch meanwhile.
  // seq_cst here and in the sleeper's check (Dekker): either it sees the role free, or we see
  // it asleep and wake it.
  this_thread_watchman = false;
  watchman_.store(false, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) asio::post(ctx_, [] {});
}

bool inbound_scope_begin(node_impl& n) noexcept {
  if (this_thread_node != &n || !this_thread_slot || current_process() || inbound_active) {
    return false;
  }
  if (this_thread_slot->turns.load(std::memory_order_relaxed) == inbound_deferred_at) return false;
  deferred_used = false;
  deferred_in_turn = nullptr;
  sends_in_turn = 0;
  inbound_active = true;
  return true;
}

void inbound_scope_end() noexcept {
  inbound_active = false;
  if (deferred_used) inbound_deferred_at = this_thread_slot->turns.load(std::memory_order_relaxed);
  deferred_in_turn = nullptr;
}

void node_impl::post_run(process* p, std::uint32_t epoch) {
  asio::post(ctx_, wake_up{this, wake_ref(p), epoch});
}

void node_impl::schedule(process* p) {
  p->add_ref();
  auto epoch = p->sched_epoch_.load(std::memory_order_acquire);
  if (this_thread_node == this && this_thread_slot && (current_process() || inbound_active) &&
      !deferred_used) {
    deferred_used = true;
    deferred_in_turn = p;
    deferred_epoch = epoch;
    // What the watchman needs to post this wake-up again if the turn runs long: the process
    // by serial (it looks it up, so no reference is held here) and the epoch.
    // Release (a plain store on x86): a stolen copy runs `p` on another thread, which must see
    // what this turn wrote to `p` before waking it (an async init's first task, its after_init).
    this_thread_slot->epoch.store(epoch, std::memory_order_relaxed);
    this_thread_slot->serial.store(p->self().serial(), std::memory_order_release);
    asio::defer(ctx_, wake_up{this, wake_ref(p), epoch});
  } else {
    post_run(p, epoch);
  }
}

bool node_impl::enqueue(process& p, envelope* e) {
  switch (p.inbox_.push(e)) {
    case inbox::push_result::queued:
      // A turn that keeps sending: let an idle worker take the process it deferred.
      if (deferred_in_turn && ++sends_in_turn == promote_after_sends && this_thread_node == this) {
        process* d = std::exchange(deferred_in_turn, nullptr);
        d->add_ref();  // the posted copy's own reference
        post_run(d, deferred_epoch);
      }
      return true;
    case inbox::push_result::woke_reader:
      schedule(&p);
      return true;
    case inbox::push_result::closed:
      return false;
  }
  return false;
}

bool node_impl::spin_for_work() {
  if (idle_spin_.count() <= 0) return false;
  bool expected = false;
  if (!spinner_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
  // Polls the queue every few microseconds (no counter that every post would have to bump on a
  // shared cache line); the handler found runs right here.
  bool found = false;
  auto until = clock_type::now() + idle_spin_;
  while (!found && !ctx_.stopped() && clock_type::now() < until) {
    for (int i = 0; i < 64; ++i) cpu_relax();
    found = ctx_.poll_one() > 0;
  }
  spinner_.store(false, std::memory_order_release);
  return found;
}

void node_impl::steal_stale_deferred(std::vector<std::pair<std::uint64_t, std::uint64_t>>& seen) {
  seen.resize(slots_.size());
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& s = *slots_[i];
    const std::uint64_t serial = s.serial.load(std::memory_order_acquire);  // see schedule()
    const std::uint64_t turns = s.turns.load(std::memory_order_relaxed);
    if (serial && seen[i].first == serial && seen[i].second == turns) {
      // Deferred behind the same turn since the last nap: that turn runs long. A second copy
      // of the wake-up: if the first already ran (or the process ended), it does nothing.
      if (auto p = find(pid(atom_, creation_, serial))) {
        post_run(p.detach(), s.epoch.load(std::memory_order_relaxed));
      }
      seen[i] = {0, 0};
    } else {
      seen[i] = {serial, turns};
    }
  }
}

void node_impl::run_worker_loop(worker_slot* slot) {
  this_thread_slot = slot;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;
  bool worked = true;  // spin only right after work: an idle node naps without spinning
  while (!ctx_.stopped()) {
    if (ctx_.poll() > 0) {
      worked = true;
      continue;
    }
    if (ctx_.stopped()) break;
    if (worked && spin_for_work()) continue;
    worked = false;
    bool expected = false;
    if (slots_.size() > 1 &&
        watchman_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      this_thread_watchman = true;
      if (ctx_.run_one_for(watch_nap) > 0) worked = true;
      if (this_thread_watchman) {
        this_thread_watchman = false;
        watchman_.store(false, std::memory_order_release);
      }
      steal_stale_deferred(seen);
    } else {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      if (slots_.size() > 1 && !watchman_.load(std::memory_order_seq_cst)) {
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        continue;  // the role came free meanwhile: take it
      }
      if (ctx_.run_one() > 0) worked = true;
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  this_thread_slot = nullptr;
}

void node_impl::worker(worker_slot* slot) {
  node_scope scope(this);
  for (;;) {
    try {
      run_worker_loop(slot);
      break;
    } catch (const std::exception& e) {
      // A handler escaped every process-level catch: log and keep the thread serving.
      log(log_level::error, "node", name_, ": exception escaped a handler: ", e.what());
    }
  }
}

std::size_t node_impl::poll() {
  if (!manual_) {
    log(log_level::warning, "node", name_, ": poll() is for manual nodes; ignored");
    return 0;
  }
  node_scope scope(this);
  std::size_t total = 0;
  for (;;) {
    if (ctx_.stopped()) ctx_.restart();
    std::size_t n = ctx_.poll();
    if (n == 0) break;
    total += n;
  }
  return total;
}

}  // namespace otpp::detail
