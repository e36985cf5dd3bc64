// timeout: bounds a whole operation. When the limit (node clock) passes first, the caller gets
// errc::timeout at once, the operation's cancellation slot is emitted (an Asio operation that
// supports cancellation stops; otpp::call does not, and drops its late reply) and its late
// result is dropped.
//
// Cheap per call: every call of one policy has the same limit, so their deadlines come in
// the order the calls start; the policy keeps its calls in flight in that order and one node
// timer, armed for the oldest, instead of a timer per call.
//
// The cancellation is emitted on the node thread that fires the timer: an operation whose
// cancellation handler must run on a strand binds itself to that strand.
#pragma once

#include <atomic>
#include <memory>
#include <new>
#include <optional>
#include <utility>

#include <asio/cancellation_signal.hpp>

#include "otpp/resilience/async.hpp"

namespace otpp::resilience {

class timeout {
 public:
  timeout(node& n, clock_type::duration limit,
          asio::cancellation_type cancel = asio::cancellation_type::terminal);

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  clock_type::duration limit() const noexcept;
  std::size_t in_flight() const;

  // The parts execute uses. One call in flight: whoever sets `done` first (the call's
  // completion, or expiry) completes the caller. A call is listed (its deadline watched) only
  // once its operation has returned without completing: one that completes at once (a cached
  // answer, an inner policy's refusal) never touches the list.
  enum entry_state : std::uint8_t { starting, listed, done };
  struct entry;
  // An owning reference to an entry: a count inside the entry (no control block), moved, never
  // copied.
  class entry_ref {
   public:
    entry_ref() = default;
    explicit entry_ref(entry* e) noexcept : e_(e) {}  // adopts one of e's references
    entry_ref(entry_ref&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    entry_ref& operator=(entry_ref&& o) noexcept {
      if (this != &o) {
        reset();
        e_ = std::exchange(o.e_, nullptr);
      }
      return *this;
    }
    ~entry_ref() { reset(); }
    void reset() noexcept;
    entry* release() noexcept { return std::exchange(e_, nullptr); }  // hands the reference on
    entry* get() const noexcept { return e_; }
    entry& operator*() const noexcept { return *e_; }
    entry* operator->() const noexcept { return e_; }

   private:
    entry* e_ = nullptr;
  };
  struct entry {
    // One entry per call: its memory comes from a small per-thread cache (timeout.cpp).
    static void* operator new(std::size_t size);
    static void operator delete(void* p, std::size_t size) noexcept;
    static void* operator new(std::size_t size, std::align_val_t a) {
      return ::operator new(size, a);
    }
    // The global unsized forms: sized deallocation is optional (clang: -fsized-deallocation).
    static void operator delete(void* p, std::size_t, std::align_val_t a) noexcept {
      ::operator delete(p, a);
    }
    virtual ~entry() = default;
    virtual void expire(asio::cancellation_type cancel, clock_type::duration limit) = 0;
    std::atomic<std::uint8_t> state{starting};
    // Two at creation: the operation's handler's and the starter's (start(), which hands its
    // own to the list). References are only ever handed on or dropped, never added.
    std::atomic<std::uint32_t> refs{2};
    bool linked = false;  // on the policy's list, which then holds a reference (under its lock)
    entry* prev = nullptr;
    entry* next = nullptr;
    time_point due{};
  };
  // Lists e (due = now + limit) unless it completed meanwhile. Inline: a call that completed
  // at once (the common case) needs neither the lock nor a call into the library.
  void start(entry_ref e) const {
    if (e->state.load(std::memory_order_acquire) != done) list(std::move(e));
  }
  // The call completed: true when the caller should be completed (not expired already).
  bool finish(entry& e) const {
    const auto was = e.state.exchange(done, std::memory_order_acq_rel);
    if (was == done) return false;  // expired first
    if (was == listed) unlist(e);
    return true;
  }

 private:
  void list(entry_ref e) const;  // start's slow path: under the lock
  void unlist(entry& e) const;   // finish's for a listed call
  template <class T, class Handler>
  struct run final : entry {
    explicit run(Handler h) : handler(std::move(h)) {}
    void expire(asio::cancellation_type cancel, clock_type::duration limit) override {
      auto h = std::move(*handler);
      handler.reset();
      signal.emit(cancel);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit).count();
      detail::complete(
          h, result<T>(failure(errc::timeout, "no result within " + std::to_string(ms) + "ms")));
    }
    std::optional<Handler> handler;
    asio::cancellation_signal signal;
  };
  // The operation's handler; its cancellation slot is the run's signal (emitted on expiry). A
  // named type, rather than a lambda in asio::bind_cancellation_slot (one move less).
  template <class T, class Handler>
  struct call_handler;
  struct core;
  std::shared_ptr<core> core_;
};

template <class T, class Handler>
struct timeout::call_handler {
  using cancellation_slot_type = asio::cancellation_slot;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return ref.get() ? call().signal.slot() : cancellation_slot_type();  // none once moved from
  }
  template <class R>
  void operator()(R&& res) {
    if (!self.finish(*ref)) return;  // late: the caller already has its timeout
    // Completed where it lies (no move out): finish() made this the handler's only user.
    auto& h = call().handler;
    detail::complete(*h, std::forward<R>(res));
    h.reset();
  }
  run<T, Handler>& call() const noexcept { return static_cast<run<T, Handler>&>(*ref); }
  timeout self;
  entry_ref ref;  // a run<T, Handler>
};

inline void timeout::entry_ref::reset() noexcept {
  entry* e = std::exchange(e_, nullptr);
  if (!e) return;
  // No reference is ever added, so a count of 1 is this one alone, and the acquire load sees
  // the other holders' releases (their acq_rel decrements): the last one needs no
  // read-modify-write (the common case: the starter drops its reference after the handler).
  if (e->refs.load(std::memory_order_acquire) == 1 ||
      e->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
    delete e;
}

template <class Op, class Token>
auto timeout::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  return detail::initiate<void(result<T>)>(
      *this, op, std::forward<Token>(token),
      [](auto&& handler, const auto& op, const timeout& self) {
        using H = std::decay_t<decltype(handler)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        auto* r = new run<T, H>(std::move(handler));  // two references: handler's, starter's
        entry_ref starter(r);
        op(call_handler<T, H>{self, entry_ref(r)});
        self.start(std::move(starter));  // not done at once: its deadline is watched from now
      });
}

}  // namespace otpp::resilience
