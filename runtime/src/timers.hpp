// The node's one timer mechanism: call timeouts, send_after and idle timeouts.
//
// Timers of equal duration expire in the order they were armed, so each duration keeps a FIFO
// list (arm: append; cancel: unlink; both O(1), no allocation, no OS timer per entry). A
// min-heap holds one item per non-empty list, keyed by a deadline never later than its head,
// and one OS timer (or the manual clock) wakes the service at the earliest. A list that
// empties is freed when its heap item comes due, so distinct durations cost nothing once
// they are gone.
#pragma once

#include <time.h>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "otpp/clock.hpp"
#include "otpp/detail/timer_entry.hpp"

namespace otpp::detail {

struct timer_bucket {
  clock_type::duration duration{};
  timer_entry* head = nullptr;
  timer_entry* tail = nullptr;
  bool in_heap = false;
};

class timer_service final : private manual_clock::listener {
 public:
  // source: null for the steady clock (one OS timer), or a manual clock that drives expiry.
  timer_service(asio::io_context& ctx, std::shared_ptr<manual_clock> source);
  ~timer_service();  // discards what is still listed
  timer_service(const timer_service&) = delete;
  timer_service& operator=(const timer_service&) = delete;

  time_point now() const noexcept { return source_ ? source_->now() : clock_type::now(); }
  // steady_clock is CLOCK_MONOTONIC on Linux: the coarse clock has the same epoch.
  time_point coarse_now() const noexcept {
    if (source_) return source_->now();
#ifdef CLOCK_MONOTONIC_COARSE
    timespec ts{};
    if (::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
      return time_point(std::chrono::duration_cast<clock_type::duration>(
          std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
#endif
    return clock_type::now();
  }
  clock_type::duration coarse_resolution() const noexcept {
    if (source_) return {};
#ifdef CLOCK_MONOTONIC_COARSE
    timespec ts{};
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0)
      return std::chrono::duration_cast<clock_type::duration>(std::chrono::seconds(ts.tv_sec) +
                                                              std::chrono::nanoseconds(ts.tv_nsec));
#endif
    return {};
  }

  // Lists `e` to expire `after` from now. `e` must not be listed.
  void arm(timer_entry* e, clock_type::duration after);
  // Unlists `e`; true if it was listed (it will then never expire).
  bool cancel(timer_entry* e);
  // Unlists the entry armed with this id; nullptr if none (fired or cancelled already).
  timer_entry* cancel_id(std::uint64_t id);
  // Expires everything due now (the OS timer and the manual clock call this).
  void expire_due();
  // Discards everything listed (node teardown). Entries armed later are kept.
  void discard_all();

  std::size_t bucket_count() const;  // for tests: lists alive

 private:
  void on_time_advanced() override {
    expire_due();
  }
  void arm_os_timer_locked();
  void unlink_locked(timer_entry* e);

  struct heap_item {
    time_point due;
    timer_bucket* bucket;
    bool operator>(const heap_item& o) const { return due > o.due; }
  };

  asio::io_context& ctx_;
  std::shared_ptr<manual_clock> source_;
  mutable std::mutex mutex_;
  std::unordered_map<clock_type::duration::rep, std::unique_ptr<timer_bucket>> buckets_;
  std::vector<heap_item> heap_;  // min-heap on due
  std::unordered_map<std::uint64_t, timer_entry*> by_id_;
  std::optional<asio::steady_timer> os_timer_;
  time_point os_armed_at_ = time_point::max();
};

}  // namespace otpp::detail
