// gen_statem: a process that is a state machine. Handlers are chosen by (state, message tag),
// falling back to a handler for the tag in any state; each returns a transition: keep the
// state or move to another, plus actions (postpone, state / event / named timeouts, stop).
//
//   enum class door_state { locked, open };
//   class door : public otpp::gen_statem<door, door_state> {
//    public:
//     door() : gen_statem(door_state::locked) {}
//     static void define_handlers(handler_table& h) {
//       using enum door_state;
//       h.cast<button>(locked, [](door& d, const button& b) -> transition {
//         if (b.code != d.code_) return keep_state();
//         return next_state(open).state_timeout(10s, relock{});  // cancelled by a state change
//       });
//       h.timeout<relock>(open, [](door&, const relock&) { return next_state(locked); });
//       h.cast<button>(open, [](door&, const button&) { return keep_state().postpone(); });
//       h.call<get_state>([](door& d, const get_state&) { return d.state(); });  // any state
//       h.call<unlock>(locked, [](door&, const unlock&, otpp::call_from<bool>& from) {
//         return next_state(open).reply(from, true);  // or from.take(): answer later
//       });
//     }
//     transition on_enter(door_state old, door_state now);  // optional state enter call
//   };
//
// Semantics follow OTP's gen_statem:
// - A postponed event is retried after the next state change (a next state different from the
//   current one), before any newer message, in the order the events were postponed.
// - state_timeout(d, msg): one per machine; cancelled by a state change, replaced by a newer one.
//   event_timeout(d, msg): cancelled by any event (a retried postponed event counts).
//   timeout(name, d, msg): named, survive events and state changes; the same name restarts it.
//   A negative duration (otpp::infinity) cancels. A timeout delivers `msg` to the handler
//   registered with h.timeout<M>; it comes through the mailbox, in order with other messages,
//   and a timeout cancelled after it was queued is never delivered.
// - on_enter(old, new) runs after every state change and for repeat_state() (old == new); also
//   for the initial state (old == new) right after init, unless D declares
//   `static constexpr bool enter_initial_state = false;`. It may set timeouts or stop, but may
//   not change state or postpone (the process ends with an error, as in OTP).
// - Handlers take the message by const reference (the event stays intact for postpone; a
//   handler taking it by value gets a copy). Returning void means keep_state().
// - Call handlers take `otpp::call_from<R>&` and answer with .reply(from, v) / from.reply(v),
//   keep the call for later with from.take() (a reply_to<R>), or postpone it. A call handler
//   that returns without doing any of these answers no_reply. A call handler without
//   call_from returns the reply (R or result<R>) and keeps the state.
// - An event no handler takes: a call is answered bad_message, a cast / info / timeout is
//   logged and dropped (a remote peer cannot crash the machine with a wrong message).
// - A handler that throws ends the process with the exception text as reason.
// - Handlers are synchronous (no coroutine handlers, unlike gen_server).
#pragma once

#include <algorithm>
#include <concepts>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "otpp/call.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"
#include "otpp/node.hpp"
#include "otpp/process.hpp"

namespace otpp {

// A state: a user enum or any copyable, equality-comparable type.
template <class S>
concept statem_state = std::copyable<S> && std::equality_comparable<S>;

namespace detail {

// The runtime's own timer message of a gen_statem: names an armed timeout by generation.
// Local-only (no msgpack mapping) and a system message (never decoded from a dynamic payload).
struct statem_fired {
  static constexpr std::string_view tag = "otpp.gen_statem.timeout";
  std::uint64_t generation = 0;
};

enum class statem_lane : std::uint8_t { call, cast, info, timeout };
enum class statem_timer : std::uint8_t { state, event, named };

inline statem_lane lane_of(const message_envelope& m) {
  switch (m.kind) {
    case envelope_kind::call:
      return statem_lane::call;
    case envelope_kind::cast:
      return statem_lane::cast;
    default:
      return statem_lane::info;
  }
}

inline const char* lane_name(statem_lane l) {
  switch (l) {
    case statem_lane::call:
      return "call";
    case statem_lane::cast:
      return "cast";
    case statem_lane::info:
      return "info";
    case statem_lane::timeout:
      return "timeout";
  }
  return "?";
}

// A timeout action of a transition: arms (msg set) or cancels (msg null) one timeout.
struct statem_timer_action {
  statem_timer kind;
  std::string name;
  clock_type::duration delay{};
  std::unique_ptr<message_envelope> msg;
};

}  // namespace detail

template <>
struct is_system_message<detail::statem_fired> : std::true_type {};

// The caller of a call event: answer it now (reply / fail), keep it to answer later (take), or
// leave it untouched and postpone the event (it is handed over again when the event is retried).
template <class R>
class call_from {
 public:
  call_from(detail::ref_ptr<detail::call_state_base> s, process* owner, pid caller)
      : state_(std::move(s)), owner_(owner), caller_(caller) {}
  call_from(const call_from&) = delete;
  call_from& operator=(const call_from&) = delete;

  // False if the call was already resolved (answered, timed out) or taken.
  bool reply(R value) {
    if (!state_) return false;
    return reply_to<R>(std::move(state_), owner_)(std::move(value));
  }
  bool fail(failure f) {
    if (!state_) return false;
    return reply_to<R>(std::move(state_), owner_).fail(std::move(f));
  }
  // Keeps the call to answer later; a process that ends first answers it with exit.
  reply_to<R> take() {
    taken_ = true;
    return reply_to<R>(std::move(state_), owner_);
  }
  // The calling process (empty for a caller outside any process).
  const pid& caller() const noexcept { return caller_; }
  // Neither answered nor taken.
  bool pending() const noexcept { return state_ != nullptr; }

 private:
  template <class, class>
  friend class statem_handlers;
  detail::ref_ptr<detail::call_state_base> state_;
  process* owner_;
  pid caller_;
  bool taken_ = false;
};

// What a handler returns: the next state (or keep the current one) and actions. Built with
// keep_state() / next_state(s) / repeat_state() and chained: next_state(s).state_timeout(...).
template <statem_state S>
class transition {
 public:
  transition() = default;  // keep_state
  transition(transition&&) noexcept = default;
  transition& operator=(transition&&) noexcept = default;

  static transition keep() { return transition(); }
  static transition to(S s) {
    transition t;
    t.next_.emplace(std::move(s));
    return t;
  }
  static transition repeat() {
    transition t;
    t.repeat_ = true;
    return t;
  }

  // Retry this event after the next state change.
  transition& postpone() & {
    postpone_ = true;
    return *this;
  }
  transition&& postpone() && { return std::move(postpone()); }

  template <message M>
  transition& state_timeout(clock_type::duration d, M msg) & {
    return add(detail::statem_timer::state, {}, d, std::move(msg));
  }
  template <message M>
  transition&& state_timeout(clock_type::duration d, M msg) && {
    return std::move(state_timeout(d, std::move(msg)));
  }
  transition& cancel_state_timeout() & { return cancel(detail::statem_timer::state, {}); }
  transition&& cancel_state_timeout() && { return std::move(cancel_state_timeout()); }

  template <message M>
  transition& event_timeout(clock_type::duration d, M msg) & {
    return add(detail::statem_timer::event, {}, d, std::move(msg));
  }
  template <message M>
  transition&& event_timeout(clock_type::duration d, M msg) && {
    return std::move(event_timeout(d, std::move(msg)));
  }

  template <message M>
  transition& timeout(std::string name, clock_type::duration d, M msg) & {
    return add(detail::statem_timer::named, std::move(name), d, std::move(msg));
  }
  template <message M>
  transition&& timeout(std::string name, clock_type::duration d, M msg) && {
    return std::move(timeout(std::move(name), d, std::move(msg)));
  }
  transition& cancel_timeout(std::string name) & {
    return cancel(detail::statem_timer::named, std::move(name));
  }
  transition&& cancel_timeout(std::string name) && {
    return std::move(cancel_timeout(std::move(name)));
  }

  // Answers a call now (OTP's {reply, From, Reply} action).
  template <class R, class V>
  transition& reply(call_from<R>& from, V&& value) & {
    from.reply(R(std::forward<V>(value)));
    return *this;
  }
  template <class R, class V>
  transition&& reply(call_from<R>& from, V&& value) && {
    return std::move(reply(from, std::forward<V>(value)));
  }

  // Ends the process with `reason` once this event is handled (terminate runs).
  transition& stop(exit_reason reason = exit_reason::normal()) & {
    stop_.emplace(std::move(reason));
    return *this;
  }
  transition&& stop(exit_reason reason = exit_reason::normal()) && {
    return std::move(stop(std::move(reason)));
  }

  const std::optional<S>& next() const noexcept { return next_; }
  bool postponing() const noexcept { return postpone_; }
  bool repeating() const noexcept { return repeat_; }
  const std::optional<exit_reason>& stopping() const noexcept { return stop_; }

 private:
  template <class, statem_state>
  friend class gen_statem;

  template <message M>
  transition& add(detail::statem_timer kind, std::string name, clock_type::duration d, M msg) {
    if (d < clock_type::duration::zero()) return cancel(kind, std::move(name));
    timers_.push_back({kind, std::move(name), d,
                       std::make_unique<detail::typed_envelope<M>>(
                           detail::envelope_kind::system_info, pid{}, std::move(msg))});
    return *this;
  }
  transition& cancel(detail::statem_timer kind, std::string name) {
    timers_.push_back({kind, std::move(name), {}, nullptr});
    return *this;
  }

  std::optional<S> next_;
  bool repeat_ = false;
  bool postpone_ = false;
  std::optional<exit_reason> stop_;
  std::vector<detail::statem_timer_action> timers_;
};

template <statem_state S>
transition<S> next_state(S s) {
  return transition<S>::to(std::move(s));
}
template <statem_state S>
transition<S> keep_state() {
  return transition<S>::keep();
}
template <statem_state S>
transition<S> repeat_state() {
  return transition<S>::repeat();
}

template <class D, statem_state S>
class gen_statem;

// The handler table of a gen_statem, filled once per class by D::define_handlers.
template <class D, class S>
class statem_handlers {
 public:
  using transition_type = transition<S>;
  // Runs a handler; a postponed event comes back as a retained envelope in `keep`.
  using thunk = std::function<transition_type(D&, detail::message_envelope&,
                                              std::unique_ptr<detail::message_envelope>& keep)>;
  struct entry {
    detail::statem_lane lane;
    std::optional<S> state;  // empty: any state
    const message_type* type;
    std::string_view tag;
    thunk run;
  };

  // Calls: f(D&, const M&, call_from<R>&) -> transition / void, or
  //        f(D&, const M&) -> R / result<R> (reply, keep state).
  template <call_message M, class F>
  statem_handlers& call(F f) {
    return add<M>(detail::statem_lane::call, std::nullopt, call_thunk<M>(std::move(f)));
  }
  template <call_message M, class F>
  statem_handlers& call(S state, F f) {
    return add<M>(detail::statem_lane::call, std::move(state), call_thunk<M>(std::move(f)));
  }
  template <call_message M, class F>
  statem_handlers& call(std::initializer_list<S> states, F f) {
    for (const auto& s : states) call<M>(s, f);
    return *this;
  }

  // Casts, plain messages (info) and timeouts: f(D&, const M&) -> transition / void.
  template <message M, class F>
  statem_handlers& cast(F f) {
    return add<M>(detail::statem_lane::cast, std::nullopt, one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& cast(S state, F f) {
    return add<M>(detail::statem_lane::cast, std::move(state), one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& cast(std::initializer_list<S> states, F f) {
    for (const auto& s : states) cast<M>(s, f);
    return *this;
  }
  template <message M, class F>
  statem_handlers& info(F f) {
    return add<M>(detail::statem_lane::info, std::nullopt, one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& info(S state, F f) {
    return add<M>(detail::statem_lane::info, std::move(state), one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& info(std::initializer_list<S> states, F f) {
    for (const auto& s : states) info<M>(s, f);
    return *this;
  }
  // The message of a state / event / named timeout that fired.
  template <message M, class F>
  statem_handlers& timeout(F f) {
    return add<M>(detail::statem_lane::timeout, std::nullopt, one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& timeout(S state, F f) {
    return add<M>(detail::statem_lane::timeout, std::move(state), one_way<M>(std::move(f)));
  }
  template <message M, class F>
  statem_handlers& timeout(std::initializer_list<S> states, F f) {
    for (const auto& s : states) timeout<M>(s, f);
    return *this;
  }

  // The handler for this event in `state`, else the one for any state, else null.
  const entry* find(const S& state, detail::statem_lane lane,
                    const detail::message_envelope& m) const {
    const entry* any = nullptr;
    for (const auto& e : entries_) {
      if (e.lane != lane) continue;
      if (m.type ? e.type != m.type : (e.tag != m.tag || e.type->system)) continue;
      if (!e.state) {
        if (!any) any = &e;
      } else if (*e.state == state) {
        return &e;
      }
    }
    return any;
  }

 private:
  template <message M>
  statem_handlers& add(detail::statem_lane lane, std::optional<S> state, thunk t) {
    entries_.push_back(entry{lane, std::move(state), type_of<M>(), M::tag, std::move(t)});
    return *this;
  }

  template <class T>
  static transition_type as_transition(T&& t) {
    if constexpr (std::is_void_v<std::remove_cvref_t<T>>) {
      return transition_type();
    } else {
      return transition_type(std::forward<T>(t));
    }
  }

  template <message M>
  static M* decode(D& self, detail::message_envelope& m, std::optional<M>& storage) {
    return detail::decode_payload<M>(self, m, storage);
  }

  // A postponed event, kept with its decoded payload and (for a call) its caller.
  template <message M>
  static std::unique_ptr<detail::message_envelope> retain(detail::message_envelope& m, M& msg) {
    auto kept = std::make_unique<detail::typed_envelope<M>>(m.kind, m.from, std::move(msg));
    kept->call = std::move(m.call);
    return kept;
  }

  template <message M, class F>
  static thunk one_way(F f) {
    static_assert(std::is_invocable_v<F, D&, M&>,
                  "a gen_statem cast / info / timeout handler is f(D&, const M&) returning "
                  "otpp::transition<State> or void");
    using ret = std::invoke_result_t<F, D&, M&>;
    static_assert(std::is_void_v<ret> || std::is_convertible_v<ret, transition_type>,
                  "a gen_statem handler returns otpp::transition<State> (keep_state(), "
                  "next_state(s), ...) or void");
    return [f = std::move(f)](D& self, detail::message_envelope& m,
                              std::unique_ptr<detail::message_envelope>& keep) {
      std::optional<M> storage;
      M* msg = decode<M>(self, m, storage);
      if (!msg) return transition_type();
      transition_type t;
      if constexpr (std::is_void_v<ret>) {
        std::invoke(f, self, *msg);
      } else {
        t = std::invoke(f, self, *msg);
      }
      if (t.postponing()) keep = retain(m, *msg);
      return t;
    };
  }

  template <call_message M, class F>
  static thunk call_thunk(F f) {
    using R = typename M::reply;
    return [f = std::move(f)](D& self, detail::message_envelope& m,
                              std::unique_ptr<detail::message_envelope>& keep) {
      std::optional<M> storage;
      M* msg = decode<M>(self, m, storage);
      if (!msg) return transition_type();
      if constexpr (std::is_invocable_v<F, D&, M&, call_from<R>&>) {
        using ret = std::invoke_result_t<F, D&, M&, call_from<R>&>;
        static_assert(std::is_void_v<ret> || std::is_convertible_v<ret, transition_type>,
                      "a gen_statem call handler taking call_from<R>& returns "
                      "otpp::transition<State> or void");
        call_from<R> from(m.call, &self, m.from);
        transition_type t;
        try {
          if constexpr (std::is_void_v<ret>) {
            std::invoke(f, self, *msg, from);
          } else {
            t = std::invoke(f, self, *msg, from);
          }
        } catch (...) {
          from.fail(failure(errc::exit, detail::exception_reason(std::current_exception()).text()));
          throw;
        }
        if (from.taken_) {
          if (m.call && !m.call->done()) self.keep_reply(m.call);
          m.call.reset();
        }
        if (t.postponing()) {
          keep = retain(m, *msg);  // an untouched caller comes back with the retried event
        } else if (from.pending()) {
          from.fail(failure(errc::no_reply,
                            "the gen_statem call handler neither answered nor "
                            "kept the call"));
        }
        return t;
      } else if constexpr (std::is_invocable_v<F, D&, M&>) {
        using ret = std::invoke_result_t<F, D&, M&>;
        reply_to<R> reply(std::move(m.call), &self);
        try {
          if constexpr (detail::is_result<ret>::value) {
            static_assert(std::is_convertible_v<typename detail::is_result<ret>::value_type, R>,
                          "a call handler returning result<T> needs T convertible to the "
                          "message's reply type");
            auto r = std::invoke(f, self, *msg);
            if (r) {
              reply(R(std::move(*r)));
            } else {
              reply.fail(r.fail());
            }
          } else {
            static_assert(std::is_convertible_v<ret, R>,
                          "a gen_statem call handler is f(D&, const M&, otpp::call_from<R>&) "
                          "returning otpp::transition<State> or void, or f(D&, const M&) "
                          "returning the reply R or result<R>");
            reply(R(std::invoke(f, self, *msg)));
          }
        } catch (...) {
          reply.fail(
              failure(errc::exit, detail::exception_reason(std::current_exception()).text()));
          throw;
        }
        return transition_type();
      } else {
        static_assert(std::is_invocable_v<F, D&, M&>,
                      "a gen_statem call handler is f(D&, const M&, otpp::call_from<R>&) or "
                      "f(D&, const M&)");
        return transition_type();
      }
    };
  }

  std::vector<entry> entries_;
};

template <class D, statem_state S>
class gen_statem : public process {
 public:
  using state_type = S;
  using transition = otpp::transition<S>;
  using handler_table = statem_handlers<D, S>;

  // The current state. Read it from the process's own handlers only.
  const S& state() const noexcept { return state_; }

 protected:
  explicit gen_statem(S initial) : state_(std::move(initial)) {}

  static transition keep_state() { return transition::keep(); }
  static transition next_state(S s) { return transition::to(std::move(s)); }
  // Stays in the state but runs the state enter call again (postponed events stay postponed).
  static transition repeat_state() { return transition::repeat(); }

 private:
  friend class statem_handlers<D, S>;

  struct armed {
    detail::statem_timer kind;
    std::string name;
    std::uint64_t generation;
    timer_ref ref;
    std::unique_ptr<detail::message_envelope> msg;
  };
  struct queued_event {
    detail::statem_lane lane;
    std::unique_ptr<detail::message_envelope> msg;
  };

  static const handler_table& table() {
    static const handler_table t = [] {
      handler_table h;
      if constexpr (requires { D::define_handlers(h); }) D::define_handlers(h);
      return h;
    }();
    return t;
  }

  // Functions, not constants: evaluated when used, once D is complete.
  static constexpr bool has_enter() {
    return requires(D & d, const S& s) {
      d.on_enter(s, s);
    };
  }
  static constexpr bool enter_initial() {
    if constexpr (requires { D::enter_initial_state; }) {
      return D::enter_initial_state;
    } else {
      return true;
    }
  }

  result<void> do_init() override {
    D& self = static_cast<D&>(*this);
    if constexpr (requires {
                    { self.init() } -> std::convertible_to<result<void>>;
                  }) {
      auto r = self.init();
      if (!r) return r;
    } else if constexpr (requires { self.init(); }) {
      self.init();
    }
    if constexpr (has_enter()) {
      if (enter_initial()) {
        auto t = enter(state_, state_);
        if (t.stop_) return failure(errc::init_failed, t.stop_->text());
        std::optional<pending_event_timeout> event;
        apply_timers(t, event);
        if (event) arm(detail::statem_timer::event, {}, event->delay, std::move(event->msg));
      }
    }
    return {};
  }

  void do_terminate(const exit_reason& reason) override {
    for (auto& a : armed_) this_node().cancel_timer(a.ref);
    armed_.clear();
    // Postponed and queued calls learn that the machine ended (not noproc).
    auto answer = [&reason](auto& events) {
      for (auto& e : events) {
        auto& call = e.msg->call;
        if (call && call->claim()) call->complete_error(failure(errc::exit, reason.text()));
        if (call) call.reset();
      }
      events.clear();
    };
    answer(queue_);
    answer(postponed_);
    D& self = static_cast<D&>(*this);
    if constexpr (requires { self.terminate(reason); }) self.terminate(reason);
  }

  void dispatch(detail::message_envelope& m) override {
    if (m.type == type_of<detail::inspect_request>() && m.call) {
      // otpp::inspect (sys:get_state): not an event, so no timeout is cancelled.
      auto* req = static_cast<detail::inspect_request*>(m.value());
      reply_to<std::shared_ptr<void>> reply(std::move(m.call), this);
      reply(req->run(*this));
      return;
    }
    if (m.type == type_of<detail::statem_fired>()) {
      auto generation = static_cast<detail::statem_fired*>(m.value())->generation;
      auto it = std::find_if(armed_.begin(), armed_.end(),
                             [&](const armed& a) { return a.generation == generation; });
      if (it == armed_.end()) return;  // cancelled after it was queued
      auto fired = std::move(it->msg);
      armed_.erase(it);
      handle(detail::statem_lane::timeout, *fired);
    } else {
      handle(detail::lane_of(m), m);
    }
    // Retried (postponed) events run before any newer message.
    while (!queue_.empty() && !stopping_) {
      auto next = std::move(queue_.front());
      queue_.pop_front();
      handle(next.lane, *next.msg);
    }
  }

  void handle(detail::statem_lane lane, detail::message_envelope& m) {
    disarm(detail::statem_timer::event, {});  // any event cancels the event timeout
    const auto* e = table().find(state_, lane, m);
    if (!e) {
      unhandled(lane, m);
      return;
    }
    std::unique_ptr<detail::message_envelope> keep;
    auto t = e->run(static_cast<D&>(*this), m, keep);
    if (keep) postponed_.push_back(queued_event{lane, std::move(keep)});
    apply(std::move(t));
  }

  void unhandled(detail::statem_lane lane, detail::message_envelope& m) {
    log(log_level::warning, "gen_statem", self().to_string(), ": ", detail::lane_name(lane), " '",
        m.tag, "' unhandled in the current state");
    if (m.call) {
      if (m.call->claim()) {
        m.call->complete_error(failure(
            errc::bad_message, "no handler for '" + std::string(m.tag) + "' in the current state"));
      }
      m.call.reset();
    }
  }

  struct pending_event_timeout {
    clock_type::duration delay;
    std::unique_ptr<detail::message_envelope> msg;
  };

  void apply(transition t) {
    if (t.stop_) {
      request_stop(std::move(*t.stop_));
      return;
    }
    std::optional<pending_event_timeout> event;
    const bool changed = t.next_ && !(*t.next_ == state_);
    S old = state_;
    if (changed) {
      state_ = std::move(*t.next_);
      disarm(detail::statem_timer::state, {});
    }
    apply_timers(t, event);
    if constexpr (has_enter()) {
      if (changed || t.repeat_) {
        auto entered = enter(old, state_);
        if (entered.stop_) {
          request_stop(std::move(*entered.stop_));
          return;
        }
        apply_timers(entered, event);
      }
    }
    if (changed && !postponed_.empty()) {
      // Postponed events go first, in the order they were postponed, then the events already
      // queued for retry.
      for (auto it = postponed_.rbegin(); it != postponed_.rend(); ++it) {
        queue_.push_front(std::move(*it));
      }
      postponed_.clear();
    }
    // An event timeout is cancelled by an event that has already arrived (a retried one).
    if (event && queue_.empty()) {
      arm(detail::statem_timer::event, {}, event->delay, std::move(event->msg));
    }
  }

  transition enter(const S& old, const S& now) {
    transition t;
    D& self = static_cast<D&>(*this);
    if constexpr (std::is_void_v<decltype(self.on_enter(old, now))>) {
      self.on_enter(old, now);
    } else {
      t = self.on_enter(old, now);
    }
    if (t.next_ && !(*t.next_ == now)) {
      throw std::logic_error("gen_statem: a state enter call cannot change the state");
    }
    if (t.postpone_) throw std::logic_error("gen_statem: a state enter call cannot postpone");
    return t;
  }

  void apply_timers(transition& t, std::optional<pending_event_timeout>& event) {
    for (auto& a : t.timers_) {
      if (a.kind == detail::statem_timer::event) {
        if (a.msg) {
          event.emplace(pending_event_timeout{a.delay, std::move(a.msg)});
        } else {
          event.reset();
        }
      } else if (a.msg) {
        arm(a.kind, std::move(a.name), a.delay, std::move(a.msg));
      } else {
        disarm(a.kind, a.name);
      }
    }
    t.timers_.clear();
  }

  void arm(detail::statem_timer kind, std::string name, clock_type::duration delay,
           std::unique_ptr<detail::message_envelope> msg) {
    disarm(kind, name);
    msg->from = self();
    const auto generation = ++generation_;
    auto ref = this_node().send_after(delay, self(), detail::statem_fired{generation});
    armed_.push_back(armed{kind, std::move(name), generation, ref, std::move(msg)});
  }

  void disarm(detail::statem_timer kind, const std::string& name) {
    auto it = std::find_if(armed_.begin(), armed_.end(), [&](const armed& a) {
      return a.kind == kind && (kind != detail::statem_timer::named || a.name == name);
    });
    if (it == armed_.end()) return;
    // Already fired and queued: its generation is gone, so the queued message is ignored.
    this_node().cancel_timer(it->ref);
    armed_.erase(it);
  }

  void request_stop(exit_reason reason) {
    stopping_ = true;
    stop(std::move(reason));
  }

  void keep_reply(detail::ref_ptr<detail::call_state_base> state) {
    hold_inbound(std::move(state));
  }

  S state_;
  bool stopping_ = false;
  std::uint64_t generation_ = 0;
  std::vector<armed> armed_;
  std::deque<queued_event> postponed_;  // waiting for a state change
  std::deque<queued_event> queue_;      // retried before the next message of the mailbox
};

}  // namespace otpp
