// Mailbox entries. One heap allocation per message (the message itself), nothing else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include <msgpack.hpp>

#include "otpp/detail/intrusive.hpp"
#include "otpp/detail/timer_entry.hpp"
#include "otpp/message.hpp"
#include "otpp/result.hpp"

namespace otpp::detail {

class call_state_base;

// Messages (cast, info, call, system_info) are handled in arrival order, one at a time, and
// wait while a coroutine handler is suspended. Signals (task and everything after it) are
// urgent: they never wait behind messages nor behind a suspended handler, and are never bounded.
enum class envelope_kind : std::uint8_t {
  cast,
  info,
  call,
  system_info,  // down / EXIT / timer / idle timeout: made by the runtime, never bounded
  task,         // a continuation to run on the process (coroutine resumption)
  exit_signal,
  link,
  unlink,
  monitor,
  demonitor,
  stop,
  // Local only: the watcher records a monitor its target's node already holds (remote spawn's
  // monitor option). Handled as it is fetched, so a down fetched after it finds the monitor.
  adopt_monitor,
};

struct envelope {
  envelope* next = nullptr;
  envelope_kind kind;
  explicit envelope(envelope_kind k) : kind(k) {}
  virtual ~envelope() = default;
  envelope(const envelope&) = delete;
  envelope& operator=(const envelope&) = delete;
};

// A message for a handler, typed (local path) or dynamic (msgpack from the wire or a tool).
struct message_envelope : envelope {
  pid from;
  std::string_view tag;
  const message_type* type;       // nullptr: dynamic, decode `body`
  ref_ptr<call_state_base> call;  // set for calls: the caller's pending state
  message_envelope(envelope_kind k, pid f, std::string_view t, const message_type* ty)
      : envelope(k), from(f), tag(t), type(ty) {}
  // A call whose request is destroyed unhandled (its process ended first) answers noproc.
  ~message_envelope() override;
  virtual void* value() { return nullptr; }                        // typed payload
  virtual const msgpack::object* body() const { return nullptr; }  // dynamic payload
  // The payload as msgpack (what crosses the wire); false if its type has no msgpack mapping.
  bool pack_body(msgpack::packer<msgpack::sbuffer>& out) {
    if (type) {
      if (!type->pack) return false;
      type->pack(out, value());
      return true;
    }
    out.pack(*body());
    return true;
  }
};

template <message M>
struct typed_envelope final : message_envelope {
  M payload;
  typed_envelope(envelope_kind k, pid f, M&& m)
      : message_envelope(k, f, M::tag, type_of<M>()), payload(std::move(m)) {}
  void* value() override { return &payload; }
};

struct dynamic_envelope final : message_envelope {
  std::string tag_storage;
  msgpack::object_handle handle;
  dynamic_envelope(envelope_kind k, pid f, std::string t, msgpack::object_handle h)
      : message_envelope(k, f, {}, nullptr), tag_storage(std::move(t)), handle(std::move(h)) {
    tag = tag_storage;
  }
  const msgpack::object* body() const override { return &handle.get(); }
};

struct signal_envelope final : envelope {
  pid from;
  exit_reason reason;      // exit_signal, stop
  monitor_ref ref;         // monitor, demonitor
  bool from_link = false;  // exit_signal caused by a link (kill is then trappable)
  std::function<void(const exit_reason&)> on_exit;  // monitor by callback (watch_process)
  signal_envelope(envelope_kind k, pid f) : envelope(k), from(f) {}
};

struct task_envelope_base : envelope {
  task_envelope_base() : envelope(envelope_kind::task) {}
  virtual void run() = 0;
};

template <class F>
struct task_envelope final : task_envelope_base {
  F fn;
  explicit task_envelope(F&& f) : fn(std::move(f)) {}
  void run() override { std::move(fn)(); }
};

// The caller's side of a call. Completed exactly once: by a reply, a timeout, noproc, or the
// callee's exit. Subclasses hold the caller's completion handler. A call is found by its
// pointer when both ends are local, and by its id (set when the request leaves the node) when
// the reply comes back over the wire.
class call_state_base : public ref_counted, public timer_entry {
 public:
  // Claim the right to complete. Exactly one claimant wins.
  bool claim() noexcept { return !done_.exchange(true, std::memory_order_acq_rel); }
  bool done() const noexcept { return done_.load(std::memory_order_acquire); }

  // value points to an object of the call's reply type (the handler was registered for the
  // message whose ::reply is that type), or is encoded through `codec` for dynamic callers.
  // A null codec means the reply type has no msgpack mapping (local replies only).
  virtual void complete_value(void* value, const value_codec* codec) = 0;
  virtual void complete_error(failure f) = 0;
  // A reply that came back encoded (from another node): decoded to the call's reply type, or
  // answered bad_message if it does not decode.
  virtual void complete_encoded(const msgpack::object& reply) = 0;
  // The caller went away (its process died): drop the handler without invoking it.
  virtual void abandon() = 0;

  // Timeout (the node's timer service lists the call while it waits; the list holds a
  // reference).
  void expire() override {
    if (claim()) complete_error(failure(errc::timeout));
    release();
  }
  void discard() override {
    if (claim()) complete_error(failure(errc::node_stopped));
    release();
  }

  std::uint64_t call_id = 0;  // non-zero once the request left for another node
  // Set when a remote_call_gate admitted the call: hears its outcome (router.hpp).
  std::function<void(const failure*)> gate_done;

 private:
  std::atomic<bool> done_{false};
};

inline message_envelope::~message_envelope() {
  if (call && call->claim()) call->complete_error(failure(errc::noproc));
}

}  // namespace otpp::detail
