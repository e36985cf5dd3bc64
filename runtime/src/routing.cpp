// The one door: every envelope that leaves a process (message, call, reply-bearing request,
// exit, link, monitor, down) is routed here.
#include "node_impl.hpp"
#include "otpp/log.hpp"

namespace otpp::detail {

// The local path is the hot one (every local send): kept inline in the door.
[[gnu::always_inline]] inline node_impl::outcome node_impl::dispatch_local(const pid& to,
                                                                           envelope* e,
                                                                           failure* why) {
  auto p = find(to);
  if (!p) return outcome::dead;
  // Only user messages count against a mailbox bound: runtime messages and signals never do.
  const bool bounded = p->bound_ != 0 && e->kind <= envelope_kind::call;
  if (bounded && p->queued_.fetch_add(1, std::memory_order_relaxed) >= p->bound_) {
    p->queued_.fetch_sub(1, std::memory_order_relaxed);
    if (why) *why = failure(errc::mailbox_full, to.to_string());
    return outcome::refused;
  }
  if (!enqueue(*p, e)) {
    if (bounded) p->queued_.fetch_sub(1, std::memory_order_relaxed);
    return outcome::dead;
  }
  return outcome::delivered;
}

node_impl::outcome node_impl::dispatch(const pid& to, envelope* e, failure* why) {
  if (to.node() == atom_) [[likely]] {
    if (to.creation() == creation_) [[likely]]
      return dispatch_local(to, e, why);
    return outcome::dead;  // an earlier (or later) incarnation of this node: never this one's
  }
  return dispatch_remote(to, e, why);
}

node_impl::outcome node_impl::dispatch_remote(const pid& to, envelope* e, failure* why) {
  otpp::router* r = router();
  if (!r || !to.valid()) return outcome::dead;
  auto* m = e->kind <= envelope_kind::system_info ? static_cast<message_envelope*>(e) : nullptr;
  if (m && m->call) register_remote_call(m->call.get(), to);
  result<void> sent = [&]() -> result<void> {
    try {
      return r->route(to, *e);
    } catch (const std::exception& ex) {
      return failure(errc::nodedown, std::string("router threw: ") + ex.what());
    }
  }();
  if (!sent) {
    if (why) *why = sent.fail();
    if (m && m->call) call_finished(m->call.get());
    return outcome::refused;
  }
  // The request travels; its call waits in the pending table, not in this envelope (whose
  // destruction would answer noproc). The router serialised what it needed.
  if (m) m->call.reset();
  delete e;
  return outcome::delivered;
}

result<void> node_impl::route(const pid& to, message_envelope* e) {
  // Local and delivered: the hot path builds no failure object.
  if (is_local(to)) [[likely]] {
    auto out = dispatch_local(to, e, nullptr);
    if (out == outcome::delivered) [[likely]]
      return {};
    return route_failed(to, e, out, failure(errc::mailbox_full, to.to_string()));
  }
  failure why;
  auto out = dispatch(to, e, &why);
  if (out == outcome::delivered) return {};
  return route_failed(to, e, out, std::move(why));
}

// A message that was not delivered: logged, its call answered, freed. `why` is the refusal
// (a local refusal is always a full mailbox); a dead target answers noproc.
result<void> node_impl::route_failed(const pid& to, message_envelope* e, outcome out, failure why) {
  if (out == outcome::dead) why = failure(errc::noproc, to.to_string());
  log(out == outcome::dead ? log_level::debug : log_level::warning, "node", name_, ": ",
      e->call ? "call" : "message", " '", e->tag, "' to ", to.to_string(), ": ", why.message());
  if (e->call && e->call->claim()) e->call->complete_error(why);
  delete e;  // an unanswered call request answers noproc as it is destroyed
  return why;
}

bool node_impl::send_signal(const pid& to, envelope* e) {
  if (dispatch(to, e) == outcome::delivered) return true;
  delete e;
  return false;
}

bool node_impl::send_signal(envelope_kind k, const pid& from, const pid& to, exit_reason reason,
                            monitor_ref ref, bool from_link) {
  auto* e = new signal_envelope(k, from);
  e->reason = std::move(reason);
  e->ref = ref;
  e->from_link = from_link;
  return send_signal(to, e);
}

}  // namespace otpp::detail
