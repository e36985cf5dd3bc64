// Lock-free multi-producer inbox (the shape CAF uses): producers push onto a LIFO stack with
// one CAS; the single consumer takes the whole stack at once and reverses it into FIFO order.
// The head also encodes the reader's state, so one CAS both enqueues and tells the producer
// whether it found the process idle (then it must schedule it): no separate flag, no lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "otpp/detail/envelope.hpp"

namespace otpp::detail {

class inbox {
 public:
  enum class push_result { queued, woke_reader, closed };

  // Starts "awake" (the spawner runs init before the first turn).
  inbox() = default;

  push_result push(envelope* e) noexcept {
    envelope* old = head_.load(std::memory_order_relaxed);
    for (;;) {
      if (old == closed_tag()) return push_result::closed;
      e->next = old == blocked_tag() ? nullptr : old;
      // acq_rel: release publishes `e` to the reader; acquire pairs with the reader's
      // try_block, so a producer that wakes the reader sees everything the reader did before
      // going idle (its scheduling epoch among it: a stale epoch would make the wake-up a no-op
      // and the process would never run again; x86 hides this, ARM and POWER do not).
      if (head_.compare_exchange_weak(old, e, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        return old == blocked_tag() ? push_result::woke_reader : push_result::queued;
      }
    }
  }

  // Takes everything queued, oldest first (nullptr if empty). Only the reader calls this.
  envelope* take_all() noexcept {
    envelope* h = head_.load(std::memory_order_relaxed);
    if (h == nullptr || h == blocked_tag() || h == closed_tag()) return nullptr;
    h = head_.exchange(nullptr, std::memory_order_acquire);
    if (h == nullptr || h == blocked_tag() || h == closed_tag()) return nullptr;
    return reverse(h);
  }

  // The reader goes idle; fails if something arrived meanwhile (then take_all and go on).
  bool try_block() noexcept {
    envelope* expected = nullptr;
    return head_.compare_exchange_strong(expected, blocked_tag(), std::memory_order_acq_rel);
  }

  // Closes the inbox; returns what was still queued (oldest first). Later pushes fail.
  envelope* close() noexcept {
    envelope* h = head_.exchange(closed_tag(), std::memory_order_acq_rel);
    if (h == blocked_tag() || h == closed_tag()) return nullptr;
    return reverse(h);
  }

  // Polls up to `polls` times for a new arrival (the reader only). True if one came.
  bool wait_for_more(int polls) noexcept {
    for (int i = 0; i < polls; ++i) {
      envelope* h = head_.load(std::memory_order_relaxed);
      if (h != nullptr && h != blocked_tag() && h != closed_tag()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    return false;
  }

 private:
  // The stack is newest first; consumers want oldest first.
  static envelope* reverse(envelope* h) noexcept {
    envelope* fifo = nullptr;
    while (h) {
      envelope* n = h->next;
      h->next = fifo;
      fifo = h;
      h = n;
    }
    return fifo;
  }
  static envelope* blocked_tag() noexcept {
    return reinterpret_cast<envelope*>(std::uintptr_t{1});
  }
  static envelope* closed_tag() noexcept {
    return reinterpret_cast<envelope*>(std::uintptr_t{2});
  }
  std::atomic<envelope*> head_{nullptr};
};

// Single-consumer FIFO of envelopes (the reader's local queues).
struct envelope_fifo {
  envelope* head = nullptr;
  envelope* tail = nullptr;
  std::size_t size = 0;  // for introspection (process_info::mailbox)
  bool empty() const { return head == nullptr; }
  void push(envelope* e) {
    ++size;
    e->next = nullptr;
    if (tail) {
      tail->next = e;
    } else {
      head = e;
    }
    tail = e;
  }
  void push_front(envelope* e) {
    ++size;
    e->next = head;
    head = e;
    if (!tail) tail = e;
  }
  envelope* pop() {
    envelope* e = head;
    if (e) {
      --size;
      head = e->next;
      if (!head) tail = nullptr;
      e->next = nullptr;
    }
    return e;
  }
};

}  // namespace otpp::detail
