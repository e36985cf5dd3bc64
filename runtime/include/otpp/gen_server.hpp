// gen_server: a process whose handlers are chosen by message tag.
//
//   class counter : public otpp::gen_server<counter> {
//    public:
//     static void define_handlers(otpp::handlers<counter>& h) {
//       h.call<increment>(&counter::on_increment);   // int on_increment(increment)
//       h.cast<reset>(&counter::on_reset);           // void on_reset(reset)
//       h.info<otpp::down>(&counter::on_down);       // void on_down(otpp::down)
//     }
//     otpp::result<void> init();                     // optional; a failure aborts spawn
//     void terminate(const otpp::exit_reason&);       // optional
//   };
//
// Call handlers answer by returning the reply (R), by returning asio::awaitable<R> (a
// coroutine: the process takes no other message until it finishes), or by taking a
// otpp::reply_to<R> as second parameter and answering later. Cast and info handlers return
// void or asio::awaitable<void>. A handler that throws ends the process with the exception
// text as reason; the node lives on.
#pragma once

#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>

#include "otpp/call.hpp"
#include "otpp/log.hpp"
#include "otpp/process.hpp"

namespace otpp {

namespace detail {
template <class T>
struct is_awaitable : std::false_type {};
template <class T, class E>
struct is_awaitable<asio::awaitable<T, E>> : std::true_type {
  using value_type = T;
};

template <class T>
struct is_result : std::false_type {};
template <class T>
struct is_result<result<T>> : std::true_type {
  using value_type = T;
};

std::string describe(std::exception_ptr e);
// Logs a message no handler takes (or whose payload does not decode); a call is answered `f`.
void reject(process& p, message_envelope& m, failure f);

// The payload as an M: the typed value on the local path, else decoded from msgpack. A
// payload that does not decode, or a local-only type in dynamic form, is refused (a call is
// answered bad_message) and logged; nullptr then.
template <message M>
M* decode_payload(process& self, message_envelope& m, std::optional<M>& storage) {
  if (m.type == type_of<M>()) return static_cast<M*>(m.value());
  if constexpr (wire_encodable<M> && std::is_default_constructible_v<M>) {
    try {
      storage.emplace();
      m.body()->convert(*storage);
      return &*storage;
    } catch (const std::exception& e) {
      reject(self, m, failure(errc::bad_message, std::string(m.tag) + ": " + e.what()));
      return nullptr;
    }
  } else {
    reject(self, m, failure(errc::bad_message, std::string(m.tag) + ": local-only message type"));
    return nullptr;
  }
}

// The exit reason for an exception a handler threw (never reads as normal/shutdown/killed).
exit_reason exception_reason(std::exception_ptr e);

}  // namespace detail

// What a catch-all handler sees of a message no handler takes.
struct unknown_message {
  std::string_view tag;
  pid from;
  bool is_call = false;
  bool is_cast = false;                   // else an info
  const msgpack::object* body = nullptr;  // dynamic (wire) payloads only
};

namespace detail {
// Runs right after init, before any other message (Erlang's {continue, C}).
struct continue_message {
  static constexpr std::string_view tag = "$continue";
};
// Runs a function on the process and answers its result (inspect()).
struct inspect_request {
  static constexpr std::string_view tag = "$inspect";
  using reply = std::shared_ptr<void>;
  std::function<std::shared_ptr<void>(process&)> run;
};
// Answers an inspect request. Out of line on purpose: inlined into dispatch, g++ 12 at -O2
// speculatively devirtualises complete_value to a call_state<R> the translation unit happens to
// instantiate (a vector, say) and warns (-Warray-bounds) about that path, which never runs.
void reply_inspected(ref_ptr<call_state_base> call, process* owner, std::shared_ptr<void> value);
}  // namespace detail
template <>
struct is_system_message<detail::continue_message> : std::true_type {};
template <>
struct is_system_message<detail::inspect_request> : std::true_type {};

template <class D>
class handlers {
 public:
  using thunk = std::function<void(D&, detail::message_envelope&)>;
  struct entry {
    detail::envelope_kind lane;
    const message_type* type;
    std::string_view tag;
    thunk run;
  };

  template <call_message M, class F>
  handlers& call(F f) {
    using R = typename M::reply;
    static_assert(std::is_invocable_v<F, D&, M&&> || std::is_invocable_v<F, D&, M&&, reply_to<R>>,
                  "otpp: a call handler for M is callable as f(D&, M) returning M::reply, "
                  "result<M::reply> or asio::awaitable<M::reply>, or as f(D&, M, "
                  "otpp::reply_to<M::reply>) (a member function: R D::f(M))");
    add<M>(detail::envelope_kind::call, [f](D& self, detail::message_envelope& m) {
      std::optional<M> storage;
      M* msg = decode<M>(self, m, storage);
      if (!msg) return;
      if constexpr (std::is_invocable_v<F, D&, M&&, reply_to<R>>) {
        auto state = m.call;
        std::invoke(f, self, std::move(*msg), reply_to<R>(std::move(m.call), &self));
        hold_if_unanswered(self, std::move(state));
      } else if constexpr (detail::is_awaitable<std::invoke_result_t<F, D&, M&&>>::value) {
        auto state = m.call;
        self.start_coroutine(
            std::invoke(f, self, std::move(*msg)),
            [reply = reply_to<R>(std::move(m.call), &self)](auto&&... value) mutable {
              reply(R(std::forward<decltype(value)>(value)...));
            });
        hold_if_unanswered(self, std::move(state));
      } else if constexpr (detail::is_result<std::invoke_result_t<F, D&, M&&>>::value) {
        // A handler may answer an error value (a domain error reaches the caller intact).
        static_assert(
            std::is_convertible_v<
                typename detail::is_result<std::invoke_result_t<F, D&, M&&>>::value_type, R>,
            "a call handler returning result<T> needs T convertible to the message's reply type");
        reply_to<R> reply(std::move(m.call), &self);
        try {
          auto r = std::invoke(f, self, std::move(*msg));
          if (r) {
            reply(R(std::move(*r)));
          } else {
            reply.fail(r.fail());
          }
        } catch (...) {
          reply.fail(
              failure(errc::exit, detail::exception_reason(std::current_exception()).text()));
          throw;
        }
      } else {
        static_assert(std::is_convertible_v<std::invoke_result_t<F, D&, M&&>, R>,
                      "a call handler returns the message's reply type R, result<R>, "
                      "asio::awaitable<R>, or takes otpp::reply_to<R> as its last parameter");
        reply_to<R> reply(std::move(m.call), &self);
        try {
          reply(std::invoke(f, self, std::move(*msg)));
        } catch (...) {
          reply.fail(
              failure(errc::exit, detail::exception_reason(std::current_exception()).text()));
          throw;
        }
      }
    });
    return *this;
  }

  template <message M, class F>
  handlers& cast(F f) {
    add<M>(detail::envelope_kind::cast, one_way<M>(f));
    return *this;
  }
  template <message M, class F>
  handlers& info(F f) {
    add<M>(detail::envelope_kind::info, one_way<M>(f));
    return *this;
  }

  // Catch-all for casts and infos no handler takes (calls still answer bad_message after it):
  // f(D&, const unknown_message&).
  template <class F>
  handlers& unknown(F f) {
    static_assert(std::is_invocable_v<F, D&, const unknown_message&>,
                  "otpp: an unknown-message handler is callable as f(D&, const "
                  "otpp::unknown_message&)");
    unknown_ = [f](D& self, const unknown_message& u) { std::invoke(f, self, u); };
    return *this;
  }
  const std::function<void(D&, const unknown_message&)>& unknown_handler() const {
    return unknown_;
  }

  const entry* find(const detail::message_envelope& m) const {
    auto lane = m.kind == detail::envelope_kind::system_info ? detail::envelope_kind::info : m.kind;
    if (m.type) {
      for (const auto& e : entries_)
        if (e.type == m.type && e.lane == lane) return &e;
    } else {
      // Dynamic payloads never reach the runtime's own message types (no forged DOWN/EXIT).
      for (const auto& e : entries_)
        if (e.tag == m.tag && e.lane == lane && !e.type->system) return &e;
    }
    return nullptr;
  }

 private:
  template <message M>
  void add(detail::envelope_kind lane, thunk t) {
    entries_.push_back(entry{lane, type_of<M>(), M::tag, std::move(t)});
  }

  template <message M>
  static M* decode(D& self, detail::message_envelope& m, std::optional<M>& storage) {
    return detail::decode_payload<M>(self, m, storage);
  }

  // A deferred or coroutine handler still holds the reply: the process answers it with exit if
  // it ends first.
  static void hold_if_unanswered(D& self, detail::ref_ptr<detail::call_state_base> state) {
    if (!state->done()) self.hold_inbound(std::move(state));
  }

  template <message M, class F>
  static thunk one_way(F f) {
    static_assert(std::is_invocable_v<F, D&, M&&>,
                  "otpp: a cast or info handler for M is callable as f(D&, M) returning void or "
                  "asio::awaitable<void> (a member function: void D::f(M))");
    return [f](D& self, detail::message_envelope& m) {
      std::optional<M> storage;
      M* msg = decode<M>(self, m, storage);
      if (!msg) return;
      using ret = std::invoke_result_t<F, D&, M&&>;
      if constexpr (detail::is_awaitable<ret>::value) {
        self.start_coroutine(std::invoke(f, self, std::move(*msg)), [](auto&&...) {});
      } else {
        std::invoke(f, self, std::move(*msg));
      }
    };
  }

  std::vector<entry> entries_;
  std::function<void(D&, const unknown_message&)> unknown_;
};

template <class D>
class gen_server : public process {
 public:
  using handler_table = handlers<D>;

 protected:
  gen_server() = default;

 private:
  friend class handlers<D>;

  static const handlers<D>& table() {
    static const handlers<D> t = [] {
      handlers<D> h;
      if constexpr (requires { D::define_handlers(h); }) D::define_handlers(h);
      return h;
    }();
    return t;
  }

  result<void> do_init() override {
    D& self = static_cast<D&>(*this);
    result<void> r;
    if constexpr (requires {
                    { self.init() } -> std::convertible_to<result<void>>;
                  }) {
      r = self.init();
    } else if constexpr (requires { self.init(); }) {
      self.init();
    }
    if constexpr (requires { self.handle_continue(); }) {
      // Work right after init without holding the spawner: first in the queue, before any
      // message that arrived during init.
      if (r) {
        run_first(new detail::typed_envelope<detail::continue_message>(
            detail::envelope_kind::system_info, self.self(), detail::continue_message{}));
      }
    }
    return r;
  }

  void do_terminate(const exit_reason& reason) override {
    D& self = static_cast<D&>(*this);
    if constexpr (requires { self.terminate(reason); }) self.terminate(reason);
  }

  void dispatch(detail::message_envelope& m) override {
    D& self = static_cast<D&>(*this);
    // The runtime's own messages first (one flag test on the hot path).
    if (m.type && m.type->system)
      dispatch_system(m);
    else if (const auto* e = table().find(m)) {
      e->run(self, m);
    } else {
      dispatch_unknown(m);
    }
  }

  void dispatch_system(detail::message_envelope& m) {
    D& self = static_cast<D&>(*this);
    if (m.type == type_of<detail::continue_message>()) {
      if constexpr (requires { self.handle_continue(); }) {
        if constexpr (detail::is_awaitable<decltype(self.handle_continue())>::value) {
          start_coroutine(self.handle_continue(), [](auto&&...) {});
        } else {
          self.handle_continue();
        }
      }
      return;
    }
    if (m.type == type_of<detail::inspect_request>() && m.call) {
      auto* req = static_cast<detail::inspect_request*>(m.value());
      detail::reply_inspected(std::move(m.call), this, req->run(*this));
      return;
    }
    if (const auto* e = table().find(m)) {  // down, EXIT, idle_timeout
      e->run(self, m);
    } else {
      dispatch_unknown(m);
    }
  }

  void dispatch_unknown(detail::message_envelope& m) {
    D& self = static_cast<D&>(*this);
    if (const auto& any = table().unknown_handler(); any && !m.call) {
      any(self,
          unknown_message{m.tag, m.from, false, m.kind == detail::envelope_kind::cast, m.body()});
      return;
    }
    detail::reject(*this, m,
                   failure(errc::bad_message, "no handler for '" + std::string(m.tag) + "'"));
  }

  // Runs a handler coroutine on this process; no user message is taken until it completes.
  template <class T, class Done>
  void start_coroutine(asio::awaitable<T> aw, Done done) {
    mark_suspended(true);
    detail::ref_ptr<process> keep(this);
    asio::co_spawn(
        get_executor(), std::move(aw),
        [this, keep, done = std::move(done)](std::exception_ptr e, auto&&... value) mutable {
          mark_suspended(false);
          if (e) {
            fail(detail::exception_reason(e));
            return;  // `done` (holding any reply_to) answers exit as it is dropped
          }
          done(std::forward<decltype(value)>(value)...);
        });
  }
};

}  // namespace otpp

namespace otpp {

// Debugging (Erlang's sys:get_state): runs f(const D&) on process `p`, in its turn, and
// completes with its result. invalid_argument if `p` is not a D; the errors of a call
// otherwise. R = f's result type, copied out of the process.
template <class D, class F, class Token>
auto inspect(node& n, const pid& p, F f, Token&& token) {
  using R = std::decay_t<std::invoke_result_t<F, const D&>>;
  return asio::async_initiate<Token, void(result<R>)>(
      [&n, p](auto handler, F fn) {
        if (detail::refuse_blocking_wait<Token, R>(handler)) return;
        detail::inspect_request request{
            [fn = std::move(fn)](process& proc) -> std::shared_ptr<void> {
              auto* d = dynamic_cast<const D*>(&proc);
              if (!d) return nullptr;
              return std::make_shared<R>(fn(*d));
            }};
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        call(n, p, std::move(request), default_call_timeout,
             [&n, shared](result<std::shared_ptr<void>> r) {
               result<R> out = !r    ? result<R>(r.fail())
                               : !*r ? result<R>(failure(errc::invalid_argument,
                                                         "the process is not of that type"))
                                     : result<R>(std::move(*std::static_pointer_cast<R>(*r)));
               detail::complete_on(n.impl(), std::move(*shared), std::move(out));
             });
      },
      token, std::move(f));
}

}  // namespace otpp
