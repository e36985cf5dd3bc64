#include "otpp/resilience/timeout.hpp"

#include <mutex>
#include <vector>

#include "otpp/log.hpp"
#include "otpp/spin_lock.hpp"

namespace otpp::resilience {

namespace {
// Entries' memory. A call's entry is freed on the thread that finishes it, mostly the one that
// started it: a small per-thread cache of blocks by size class makes taking one a pop and
// giving it back a push (against the heap's allocation and free, a good part of a call's
// cost). Bounded: past cache_limit blocks a thread gives them back to the heap, and a thread's
// blocks go back to the heap when it exits.
constexpr std::size_t granule = 64;
constexpr std::size_t size_classes = 8;  // blocks of up to 512 bytes; bigger ones: the heap
constexpr std::uint32_t cache_limit = 64;
struct free_block {
  free_block* next;
};
// Trivially destructible and constant-initialized: reading it costs no guard.
struct entry_cache {
  free_block* heads[size_classes];
  // Blocks this thread may still cache: zero before its first (the reaper not yet registered),
  // when full, and once the thread exits. The fast paths test only this.
  std::uint32_t room;
  bool reaper_armed;
  bool exited;
};
constinit thread_local entry_cache cache{};
// Empties the thread's cache when the thread exits; registered by the first block cached.
struct cache_reaper {
  ~cache_reaper() {
    for (std::size_t c = 0; c < size_classes; ++c)
      while (free_block* b = cache.heads[c]) {
        cache.heads[c] = b->next;
        ::operator delete(b);
      }
    cache.room = 0;
    cache.exited = true;  // later frees on this thread go to the heap
  }
  void arm() noexcept {}
};
thread_local cache_reaper reaper;

void push_block(void* p, std::size_t c) noexcept {
  auto* b = static_cast<free_block*>(p);
  b->next = cache.heads[c];
  cache.heads[c] = b;
  --cache.room;
}
}  // namespace

void* timeout::entry::operator new(std::size_t size) {
  const std::size_t c = (size - 1) / granule;
  if (c >= size_classes) return ::operator new(size);
  if (free_block* b = cache.heads[c]) {
    cache.heads[c] = b->next;
    ++cache.room;
    return b;
  }
  return ::operator new((c + 1) * granule);  // the class's size: reusable by its whole class
}

void timeout::entry::operator delete(void* p, std::size_t size) noexcept {
  const std::size_t c = (size - 1) / granule;
  if (c >= size_classes) {
    ::operator delete(p);
    return;
  }
  if (cache.room > 0) {
    push_block(p, c);
    return;
  }
  if (!cache.reaper_armed && !cache.exited) {
    reaper.arm();  // its first use registers its destructor for this thread's exit
    cache.reaper_armed = true;
    cache.room = cache_limit;
    push_block(p, c);
    return;
  }
  ::operator delete(p);  // full, or the thread is exiting
}

struct timeout::core : std::enable_shared_from_this<core> {
  core(node& n, clock_type::duration l, asio::cancellation_type c)
      : owner(n), limit(l), slack(l + n.coarse_resolution()), cancel(c) {}
  ~core() {
    // Calls still listed when the last handle goes: their entries are released (not expired).
    for (entry* e = head; e;) {
      entry* next = e->next;
      e->prev = e->next = nullptr;
      e->linked = false;
      entry_ref list_ref(e);
      e = next;
    }
  }

  // With the lock held: unlinks `e`; returns the list's reference for the caller to drop
  // unlocked.
  entry_ref unlink_locked(entry& e) {
    if (!e.linked) return {};
    (e.prev ? e.prev->next : head) = e.next;
    (e.next ? e.next->prev : tail) = e.prev;
    e.prev = e.next = nullptr;
    e.linked = false;
    --count;
    return entry_ref(&e);
  }

  void arm(clock_type::duration after) {
    std::weak_ptr<core> weak = shared_from_this();
    owner.run_after(after, [weak] {
      if (auto c = weak.lock()) c->fire();
    });
  }

  // The timer: expires the calls now due, then re-arms for the oldest left.
  void fire() {
    std::vector<entry_ref> expired;
    std::optional<clock_type::duration> again;
    {
      std::lock_guard lock(mutex);
      const auto now = owner.now();
      while (head && head->due <= now) expired.push_back(unlink_locked(*head));
      armed = head != nullptr;
      if (armed) again = head->due - now;
    }
    for (auto& e : expired) {
      if (e->state.exchange(done) == done) continue;
      log(log_level::debug, "resilience", "timeout: no result within ",
          std::chrono::duration_cast<std::chrono::milliseconds>(limit).count(), "ms");
      e->expire(cancel, limit);
    }
    if (again) arm(*again);
  }

  node& owner;
  const clock_type::duration limit;
  const clock_type::duration slack;  // limit + the coarse clock's resolution
  const asio::cancellation_type cancel;
  mutable otpp::spin_lock mutex;  // held for a few instructions per call
  entry* head = nullptr;          // calls in flight, oldest (first due) first
  entry* tail = nullptr;
  std::size_t count = 0;
  bool armed = false;  // a node timer is pending for this policy
};

timeout::timeout(node& n, clock_type::duration limit, asio::cancellation_type cancel)
    : core_(std::make_shared<core>(n, limit, cancel)) {}

clock_type::duration timeout::limit() const noexcept {
  return core_->limit;
}

std::size_t timeout::in_flight() const {
  std::lock_guard lock(core_->mutex);
  return core_->count;
}

void timeout::list(entry_ref e) const {
  auto& c = *core_;
  bool arm = false;
  {
    std::lock_guard lock(c.mutex);
    // Read under the lock: entries are listed in deadline order. The coarse clock plus its
    // resolution: never earlier than the precise deadline, at most one tick later.
    e->due = c.owner.coarse_now() + c.slack;
    std::uint8_t expected = starting;
    // Completed since the look above: nothing to watch. Listing and this exchange happen
    // under the lock, so the timer only ever finds listed entries.
    if (!e->state.compare_exchange_strong(expected, listed)) return;
    entry* listed_entry = e.release();  // the starter's reference is the list's now
    listed_entry->linked = true;
    listed_entry->prev = c.tail;
    (c.tail ? c.tail->next : c.head) = listed_entry;
    c.tail = listed_entry;
    ++c.count;
    arm = !c.armed;
    c.armed = true;
  }
  if (arm) c.arm(c.slack);
}

void timeout::unlist(entry& e) const {
  entry_ref list_ref;  // dropped after the lock
  std::lock_guard lock(core_->mutex);
  list_ref = core_->unlink_locked(e);
}

}  // namespace otpp::resilience
