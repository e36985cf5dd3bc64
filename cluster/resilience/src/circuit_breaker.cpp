#include "otpp/resilience/circuit_breaker.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "otpp/log.hpp"
#include "otpp/resilience/listeners.hpp"

namespace otpp::resilience {

const char* to_string(breaker_state s) noexcept {
  switch (s) {
    case breaker_state::closed:
      return "closed";
    case breaker_state::open:
      return "open";
    case breaker_state::half_open:
      return "half_open";
    case breaker_state::disabled:
      return "disabled";
    case breaker_state::forced_open:
      return "forced_open";
  }
  return "?";
}

namespace {
struct tally {
  std::size_t calls = 0, failures = 0, slow = 0;
  void add(bool failed, bool slow_call, int sign = 1) {
    calls += static_cast<std::size_t>(sign);
    failures += failed ? static_cast<std::size_t>(sign) : 0;
    slow += slow_call ? static_cast<std::size_t>(sign) : 0;
  }
  void remove(const tally& t) {
    calls -= t.calls;
    failures -= t.failures;
    slow -= t.slow;
  }
};
// A local policy's refusal: the call never reached the target.
bool counts_by_default(const std::error_code& ec) {
  return is_transient(ec) && ec != errc::circuit_open && ec != errc::bulkhead_full &&
         ec != errc::rate_limited;
}
double percent(std::size_t part, std::size_t whole) {
  return 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}
}  // namespace

class circuit_breaker::core {
 public:
  core(node& n, breaker_options o) : owner(n), options(std::move(o)) {
    options.window_size = std::max<std::size_t>(options.window_size, 1);
    options.minimum_calls = std::max<std::size_t>(options.minimum_calls, 1);
    options.half_open_calls = std::max<std::size_t>(options.half_open_calls, 1);
    if (options.wait_multiplier < 1.0) options.wait_multiplier = 1.0;
    wait = options.wait_in_open;
    clear_window();
  }

  using change = std::pair<breaker_state, breaker_state>;

  // Called with the lock held; returns the transition for the caller to announce unlocked.
  change move_to(breaker_state to, time_point now) {
    change c{state, to};
    state = to;
    ++generation;
    // State before generation: a reader that loads generation, then state, and sees this
    // generation sees this state (acquire() relies on it).
    fast_state.store(to, std::memory_order_release);
    fast_generation.store(generation, std::memory_order_release);
    trials = {};
    trials_permitted = 0;
    if (to == breaker_state::open) open_until = now + wait;
    if (to == breaker_state::closed) {
      clear_window();
      wait = options.wait_in_open;
    }
    return c;
  }
  void announce(const change& c) {
    if (c.first == c.second) return;
    log(log_level::info, "resilience", "circuit '", options.name, "' ", to_string(c.first), " -> ",
        to_string(c.second));
    if (options.on_state_change) options.on_state_change(c.first, c.second);
    changes(c.first, c.second);
  }

  void clear_window() {
    window = {};
    if (options.window == window_kind::count_based && !ring)
      ring = std::make_unique<std::atomic<std::uint8_t>[]>(options.window_size);
    for (std::size_t i = 0; ring && i < options.window_size; ++i)
      ring[i].store(0, std::memory_order_relaxed);
    ring_next.store(0, std::memory_order_relaxed);
    ring_calls.store(0, std::memory_order_relaxed);
    ring_failures.store(0, std::memory_order_relaxed);
    ring_slow.store(0, std::memory_order_relaxed);
    buckets.assign(options.window == window_kind::time_based ? options.window_size : 0, {});
    latest_second = 0;
  }
  static std::int64_t second_of(time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  }
  // Time-based window: drops the buckets of seconds that left the window by `now`.
  void expire(time_point now) {
    if (options.window != window_kind::time_based) return;
    const auto s = second_of(now);
    if (s <= latest_second) return;
    const auto n = static_cast<std::int64_t>(buckets.size());
    for (auto sec = std::max(latest_second + 1, s - n + 1); sec <= s; ++sec) {
      auto& b = buckets[static_cast<std::size_t>(sec % n)];
      window.remove(b.counts);
      b = {};
    }
    if (s - latest_second >= n) window = {};
    latest_second = s;
  }
  // Count-based window without the lock: each outcome replaces the oldest slot's (one packed
  // byte: used, failed, slow) and moves the totals by the difference, which is nothing when a
  // success replaces a success. Concurrent recorders may interleave (the totals stay exact
  // per slot exchange). Returns whether a verdict may be due: the window holds failures or
  // slow calls and this outcome did not only shrink them.
  bool add_counted(bool failed, bool slow) {
    const std::uint8_t code = static_cast<std::uint8_t>(1 | (failed ? 2 : 0) | (slow ? 4 : 0));
    const auto i = ring_next.fetch_add(1, std::memory_order_relaxed) % options.window_size;
    // The same outcome as the slot's (a success over a success, most of the time): nothing to
    // write, and no second atomic read-modify-write on the call's path.
    if (ring[i].load(std::memory_order_relaxed) == code) return false;
    const std::uint8_t old = ring[i].exchange(code, std::memory_order_acq_rel);
    if (old == code) return false;
    const int df = ((code >> 1) & 1) - ((old >> 1) & 1);
    const int ds = ((code >> 2) & 1) - ((old >> 2) & 1);
    if (!(old & 1)) ring_calls.fetch_add(1, std::memory_order_relaxed);
    if (df) ring_failures.fetch_add(df, std::memory_order_relaxed);
    if (ds) ring_slow.fetch_add(ds, std::memory_order_relaxed);
    if (df < 0 || ds < 0) return false;
    return ring_failures.load(std::memory_order_relaxed) > 0 ||
           ring_slow.load(std::memory_order_relaxed) > 0;
  }
  // The closed window's totals.
  tally totals() const {
    if (options.window == window_kind::time_based) return window;
    auto count = [](const std::atomic<std::int64_t>& a) {
      return static_cast<std::size_t>(std::max<std::int64_t>(a.load(std::memory_order_relaxed), 0));
    };
    return tally{count(ring_calls), count(ring_failures), count(ring_slow)};
  }
  // Returns whether a verdict may be due.
  bool add(bool failed, bool slow, time_point now) {
    if (options.window == window_kind::count_based) return add_counted(failed, slow);
    expire(now);
    buckets[static_cast<std::size_t>(latest_second % static_cast<std::int64_t>(buckets.size()))]
        .counts.add(failed, slow);
    window.add(failed, slow);
    return true;
  }
  bool over_threshold(const tally& t) const {
    return percent(t.failures, t.calls) >= options.failure_rate_threshold ||
           percent(t.slow, t.calls) >= options.slow_call_rate_threshold;
  }

  // The slow paths of acquire and record, out of line: the fast paths stay small.
  [[gnu::noinline]] result<permit> acquire_locked(time_point now);
  [[gnu::noinline]] void judge_closed(const permit& p, time_point now);
  [[gnu::noinline]] void record_locked(const permit& p, bool failed, bool slow, bool ignored,
                                       time_point now);

  node& owner;
  breaker_options options;
  std::mutex mutex;
  breaker_state state = breaker_state::closed;
  std::uint64_t generation = 1;
  time_point open_until{};
  clock_type::duration wait{};
  // The lock-free path's view of state and generation (see move_to).
  std::atomic<breaker_state> fast_state{breaker_state::closed};
  std::atomic<std::uint64_t> fast_generation{1};
  tally window;  // the time-based window's totals (closed)
  // Count-based window (closed), recorded without the lock: packed outcomes and their totals.
  std::unique_ptr<std::atomic<std::uint8_t>[]> ring;
  std::atomic<std::uint64_t> ring_next{0};
  std::atomic<std::int64_t> ring_calls{0}, ring_failures{0}, ring_slow{0};
  struct bucket {
    tally counts;
  };
  std::vector<bucket> buckets;  // time-based window: one per second, indexed second % size
  std::int64_t latest_second = 0;
  tally trials;  // half-open outcomes
  detail::listener_list<breaker_state, breaker_state> changes;
  detail::listener_list<failure> refusals;
  std::size_t trials_permitted = 0;
};

circuit_breaker::circuit_breaker(node& n, breaker_options o)
    : core_(std::make_shared<core>(n, std::move(o))) {}

node& circuit_breaker::owner() const {
  return core_->owner;
}
const breaker_options& circuit_breaker::options() const noexcept {
  return core_->options;
}

void circuit_breaker::add_listener(std::function<void(breaker_state, breaker_state)> f) const {
  core_->changes.add(std::move(f));
}
void circuit_breaker::add_refusal_listener(std::function<void(const failure&)> f) const {
  core_->refusals.add(std::move(f));
}

result<circuit_breaker::permit> circuit_breaker::acquire() const {
  auto& c = *core_;
  const auto now = c.owner.coarse_now();
  // Closed (the common case) without the lock: generation first, then state (see move_to).
  const auto generation = c.fast_generation.load(std::memory_order_acquire);
  const auto fast = c.fast_state.load(std::memory_order_acquire);
  if (fast == breaker_state::closed || fast == breaker_state::disabled)
    return permit{generation, now};
  return c.acquire_locked(now);
}

result<circuit_breaker::permit> circuit_breaker::core::acquire_locked(time_point now) {
  auto& c = *this;
  core::change changed{};
  result<permit> out = failure(errc::circuit_open);
  {
    std::lock_guard lock(c.mutex);
    switch (c.state) {
      case breaker_state::closed:
      case breaker_state::disabled:
        return permit{c.generation, now};
      case breaker_state::forced_open:
        out = failure(errc::circuit_open, "circuit '" + c.options.name + "' forced open");
        break;
      case breaker_state::open:
        if (now < c.open_until) {
          out =
              failure(errc::circuit_open, circuit_open_reason(c.options.name, c.open_until - now));
          break;
        }
        changed = c.move_to(breaker_state::half_open, now);
        [[fallthrough]];
      case breaker_state::half_open:
        if (c.trials_permitted < c.options.half_open_calls) {
          ++c.trials_permitted;
          out = permit{c.generation, now};
        } else {
          // Every trial call is out: their outcomes decide; the next look may be at once.
          out = failure(errc::circuit_open,
                        circuit_open_reason(c.options.name, clock_type::duration::zero()));
        }
        break;
    }
  }
  c.announce(changed);
  if (!out) {
    log(log_level::debug, "resilience", "call refused: ", out.fail().message());
    c.refusals(out.fail());
  }
  return out;
}

void circuit_breaker::record(const permit& p, const failure* error) const {
  auto& c = *core_;
  const auto now = c.owner.coarse_now();
  const bool slow = now - p.start >= c.options.slow_call_duration;
  const bool failed = error && (c.options.record_failure ? c.options.record_failure(*error)
                                                         : counts_by_default(error->code));
  const bool ignored = error && !failed;
  // Permitted before a transition: its outcome belongs to a window that is gone.
  if (p.generation != c.fast_generation.load(std::memory_order_acquire)) return;
  if (c.options.window == window_kind::count_based &&
      c.fast_state.load(std::memory_order_acquire) == breaker_state::closed) {
    // Closed, count-based: recorded without the lock; the lock only for a verdict.
    if (ignored || !c.add_counted(failed, slow)) return;
    c.judge_closed(p, now);
    return;
  }
  c.record_locked(p, failed, slow, ignored, now);
}

void circuit_breaker::core::judge_closed(const permit& p, time_point now) {
  auto& c = *this;
  core::change changed{};
  {
    std::lock_guard lock(c.mutex);
    if (p.generation != c.generation || c.state != breaker_state::closed) return;
    const auto t = c.totals();
    if (t.calls >= c.options.minimum_calls && c.over_threshold(t))
      changed = c.move_to(breaker_state::open, now);
  }
  c.announce(changed);
}

void circuit_breaker::core::record_locked(const permit& p, bool failed, bool slow, bool ignored,
                                          time_point now) {
  auto& c = *this;
  core::change changed{};
  {
    std::lock_guard lock(c.mutex);
    if (p.generation != c.generation) return;  // permitted before a transition
    if (c.state == breaker_state::closed) {
      if (ignored || !c.add(failed, slow, now)) return;
      const auto t = c.totals();
      if (t.calls >= c.options.minimum_calls && c.over_threshold(t))
        changed = c.move_to(breaker_state::open, now);
    } else if (c.state == breaker_state::half_open) {
      if (ignored) {
        --c.trials_permitted;  // says nothing: another trial may go
        return;
      }
      c.trials.add(failed, slow);
      if (c.trials.calls >= c.options.half_open_calls) {
        if (c.over_threshold(c.trials)) {
          auto grown =
              std::chrono::duration_cast<clock_type::duration>(c.wait * c.options.wait_multiplier);
          if (c.options.max_wait_in_open > clock_type::duration::zero())
            grown = std::min(grown, c.options.max_wait_in_open);
          c.wait = std::max(grown, c.wait);
          changed = c.move_to(breaker_state::open, now);
        } else {
          changed = c.move_to(breaker_state::closed, now);
        }
      }
    } else {
      return;
    }
  }
  c.announce(changed);
}

breaker_state circuit_breaker::state() const {
  return core_->fast_state.load(std::memory_order_acquire);
}

circuit_breaker::metrics circuit_breaker::current() const {
  auto& c = *core_;
  const auto now = c.owner.coarse_now();
  std::lock_guard lock(c.mutex);
  c.expire(now);
  const tally t = c.state == breaker_state::half_open ? c.trials : c.totals();
  metrics m{t.calls, t.failures, t.slow};
  const std::size_t minimum =
      c.state == breaker_state::half_open ? c.options.half_open_calls : c.options.minimum_calls;
  if (t.calls >= minimum) {
    m.failure_rate = percent(t.failures, t.calls);
    m.slow_rate = percent(t.slow, t.calls);
  }
  return m;
}

time_point circuit_breaker::open_until() const {
  std::lock_guard lock(core_->mutex);
  return core_->state == breaker_state::open ? core_->open_until : time_point{};
}

void circuit_breaker::force_open() {
  core::change changed;
  {
    std::lock_guard lock(core_->mutex);
    changed = core_->move_to(breaker_state::forced_open, core_->owner.coarse_now());
  }
  core_->announce(changed);
}
void circuit_breaker::disable() {
  core::change changed;
  {
    std::lock_guard lock(core_->mutex);
    changed = core_->move_to(breaker_state::disabled, core_->owner.coarse_now());
  }
  core_->announce(changed);
}
void circuit_breaker::reset() {
  core::change changed;
  {
    std::lock_guard lock(core_->mutex);
    changed = core_->move_to(breaker_state::closed, core_->owner.coarse_now());
  }
  core_->announce(changed);
}

}  // namespace otpp::resilience
