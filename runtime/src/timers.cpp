#include "timers.hpp"

#include <algorithm>
#include <functional>

namespace otpp::detail {

timer_service::timer_service(asio::io_context& ctx, std::shared_ptr<manual_clock> source)
    : ctx_(ctx), source_(std::move(source)) {
  if (source_) source_->attach(this);
}

timer_service::~timer_service() {
  if (source_) source_->detach(this);
  discard_all();
}

void timer_service::arm(timer_entry* e, clock_type::duration after) {
  std::lock_guard lock(mutex_);
  // now() under the lock: entries of one duration are then appended in deadline order.
  e->due = now() + after;
  auto& slot = buckets_[after.count()];
  if (!slot) {
    slot = std::make_unique<timer_bucket>();
    slot->duration = after;
  }
  timer_bucket* b = slot.get();
  e->bucket = b;
  e->timer_next = nullptr;
  e->timer_prev = b->tail;
  (b->tail ? b->tail->timer_next : b->head) = e;
  b->tail = e;
  if (e->timer_id) by_id_[e->timer_id] = e;
  if (!b->in_heap) {
    b->in_heap = true;
    heap_.push_back({e->due, b});
    std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
  }
  if (!source_ && e->due < os_armed_at_) arm_os_timer_locked();
}

void timer_service::unlink_locked(timer_entry* e) {
  timer_bucket* b = e->bucket;
  (e->timer_prev ? e->timer_prev->timer_next : b->head) = e->timer_next;
  (e->timer_next ? e->timer_next->timer_prev : b->tail) = e->timer_prev;
  e->timer_prev = e->timer_next = nullptr;
  e->bucket = nullptr;
  if (e->timer_id) by_id_.erase(e->timer_id);
  // An emptied bucket stays until its heap item comes due (it is freed there): the heap needs
  // no update on the hot path of a reply.
}

bool timer_service::cancel(timer_entry* e) {
  std::lock_guard lock(mutex_);
  if (!e->bucket) return false;
  unlink_locked(e);
  return true;
}

timer_entry* timer_service::cancel_id(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  timer_entry* e = it->second;
  unlink_locked(e);
  return e;
}

void timer_service::expire_due() {
  std::vector<timer_entry*> expired;
  {
    std::lock_guard lock(mutex_);
    const auto t = now();
    while (!heap_.empty() && heap_.front().due <= t) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<>{});
      timer_bucket* b = heap_.back().bucket;
      heap_.pop_back();
      b->in_heap = false;
      while (b->head && b->head->due <= t) {
        timer_entry* e = b->head;
        unlink_locked(e);
        expired.push_back(e);
      }
      if (b->head) {
        b->in_heap = true;
        heap_.push_back({b->head->due, b});
        std::push_heap(heap_.begin(), heap_.end(), std::greater<>{});
      } else {
        buckets_.erase(b->duration.count());
      }
    }
    if (!source_) {
      os_armed_at_ = time_point::max();
      if (!heap_.empty()) arm_os_timer_locked();
    }
  }
  for (auto* e : expired) e->expire();
}

void timer_service::arm_os_timer_locked() {
  const auto at = heap_.front().due;
  if (at >= os_armed_at_) return;
  os_armed_at_ = at;
  if (!os_timer_) os_timer_.emplace(ctx_);
  os_timer_->expires_at(at);  // cancels a pending wait (it sees operation_aborted)
  os_timer_->async_wait([this](const std::error_code& ec) {
    if (ec != asio::error::operation_aborted) expire_due();
  });
}

void timer_service::discard_all() {
  std::vector<timer_entry*> listed;
  {
    std::lock_guard lock(mutex_);
    for (auto& [d, b] : buckets_) {
      while (b->head) {
        timer_entry* e = b->head;
        unlink_locked(e);
        listed.push_back(e);
      }
    }
    heap_.clear();
    buckets_.clear();
    os_armed_at_ = time_point::max();
    if (os_timer_) os_timer_->cancel();
  }
  for (auto* e : listed) e->discard();
}

std::size_t timer_service::bucket_count() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

}  // namespace otpp::detail
