// Calls: start, deadlines, completion from the wire, dynamic calls.
#include <functional>
#include <thread>

#include "node_impl.hpp"
#include "otpp/call.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"

namespace otpp {
namespace detail {

void node_impl::start_call(const pid& to, call_state_base* state, message_envelope* request,
                           std::chrono::milliseconds timeout) {
  ref_ptr<call_state_base> keep(state);
  request->call = keep;
  process* self = current_process();
  // Fail fast where waiting could only end in a timeout (Erlang: calling_self).
  if (self && self->self() == to) {
    log(log_level::warning, "node", name_, ": ", to.to_string(), " called itself ('", request->tag,
        "'): calling_self");
    if (state->claim()) state->complete_error(failure(errc::calling_self, to.to_string()));
    delete request;
    return;
  }
  if (!started()) {
    log(log_level::warning, "node", name_, ": call '", request->tag,
        "' before node.start(): not_started");
    if (state->claim()) state->complete_error(failure(errc::not_started, name_));
    delete request;
    return;
  }
  // A call to another node passes the remote call gate (per-node breakers) before its timer
  // is armed: the gate's outcome callback is set before anything can complete the call.
  if (to.valid() && to.node() != atom_) {
    if (auto admitted = admit_remote_call(state, to); !admitted) {
      log(log_level::debug, "node", name_, ": call '", request->tag, "' to ", to.to_string(), ": ",
          admitted.fail().message());
      if (state->claim()) state->complete_error(admitted.fail());
      delete request;
      return;
    }
  }
  if (self) track_call(*self, keep);
  if (timeout.count() >= 0) {
    state->add_ref();  // the timer list holds a reference
    timers_.arm(state, timeout);
  }
  (void)route(to, request);
}

void node_impl::call_finished(call_state_base* s) {
  if (timers_.cancel(s)) s->release();
  if (s->call_id) {
    ref_ptr<call_state_base> drop;  // released outside the lock
    std::lock_guard lock(remote_calls_mutex_);
    auto it = remote_calls_.find(s->call_id);
    if (it != remote_calls_.end() && it->second.state.get() == s) {
      drop = std::move(it->second.state);
      remote_calls_.erase(it);
    }
  }
}

void node_impl::count_call(const failure* outcome) noexcept {
  thread_local const std::size_t stripe =
      std::hash<std::thread::id>{}(std::this_thread::get_id()) % 4;
  std::size_t slot = 0;
  if (outcome) {
    const int v = outcome->code.value();
    slot = outcome->code.category() == error_category() && v > 0 &&
                   static_cast<std::size_t>(v) < node_counters::other_outcome
               ? static_cast<std::size_t>(v)
               : node_counters::other_outcome;
  }
  call_outcomes_[stripe].by_outcome[slot].fetch_add(1, std::memory_order_relaxed);
}

void node_impl::set_gate(std::shared_ptr<remote_call_gate> g) {
  std::lock_guard lock(gate_mutex_);
  gate_set_.store(g != nullptr, std::memory_order_release);
  gate_ = std::move(g);
}

void node_impl::report_outcome(call_state_base* s, const failure* outcome) {
  if (!s->gate_done) return;
  auto done = std::move(s->gate_done);
  s->gate_done = nullptr;
  done(outcome);
}

result<void> node_impl::admit_remote_call(call_state_base* s, const pid& to) {
  if (!gate_set_.load(std::memory_order_acquire)) return {};
  std::shared_ptr<remote_call_gate> gate;
  {
    std::lock_guard lock(gate_mutex_);
    gate = gate_;
  }
  if (!gate) return {};
  auto admitted = gate->admit(to.node());
  if (!admitted) return admitted.fail();
  s->gate_done = std::move(*admitted);
  return {};
}

void node_impl::register_remote_call(call_state_base* s, const pid& to) {
  if (!s->call_id) s->call_id = new_ref();
  std::lock_guard lock(remote_calls_mutex_);
  // A call cancelled (or timed out) before its request left is not listed: no reply is awaited.
  if (s->done()) return;
  remote_calls_[s->call_id] = remote_call{ref_ptr<call_state_base>(s), to.node()};
}

result<void> node_impl::complete_remote_call(std::uint64_t call_id,
                                             result<msgpack::object_handle> reply,
                                             std::optional<node_atom> from) {
  ref_ptr<call_state_base> s;
  {
    std::lock_guard lock(remote_calls_mutex_);
    auto it = remote_calls_.find(call_id);
    if (it != remote_calls_.end() && from && it->second.peer != *from) {
      // Only the node the request went to may answer it.
      log(log_level::warning, "node", name_, ": reply to call ", call_id, " from ", from->name(),
          ", which was not asked: dropped");
      return failure(errc::not_found, "call " + std::to_string(call_id) + " did not go there");
    }
    if (it != remote_calls_.end()) {
      s = std::move(it->second.state);
      remote_calls_.erase(it);
    }
  }
  if (!s || !s->claim()) {
    log(log_level::debug, "node", name_, ": late reply to call ", call_id, " dropped");
    return failure(errc::not_found, "call " + std::to_string(call_id) + " is not waiting");
  }
  if (reply) {
    s->complete_encoded(reply->get());
  } else {
    s->complete_error(reply.fail());
  }
  return {};
}

std::size_t node_impl::fail_remote_calls(std::optional<node_atom> peer, const failure& why) {
  std::vector<ref_ptr<call_state_base>> failed;
  {
    std::lock_guard lock(remote_calls_mutex_);
    for (auto it = remote_calls_.begin(); it != remote_calls_.end();) {
      if (!peer || it->second.peer == *peer) {
        failed.push_back(std::move(it->second.state));
        it = remote_calls_.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::size_t n = 0;
  for (auto& s : failed) {
    if (s->claim()) {
      s->complete_error(why);
      ++n;
    }
  }
  return n;
}

std::size_t node_impl::pending_remote_calls(std::optional<node_atom> peer) const {
  std::lock_guard lock(remote_calls_mutex_);
  if (!peer) return remote_calls_.size();
  std::size_t n = 0;
  for (const auto& [id, c] : remote_calls_) n += c.peer == *peer ? 1 : 0;
  return n;
}

void node_impl::track_call(process& self, const ref_ptr<call_state_base>& state) {
  auto& out = self.extras().outstanding;
  if (out.size() >= 16) {
    std::erase_if(out, [](const ref_ptr<call_state_base>& s) { return s->done(); });
  }
  out.push_back(state);
}

void call_canceller::operator()(asio::cancellation_type type) const {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
      asio::cancellation_type::none) {
    return;  // total: a call may already have been handled, it cannot be undone
  }
  auto s = state;  // completing may destroy this canceller (a coroutine's next operation)
  if (s && s->claim())
    s->complete_error(failure(errc::operation_canceled, "the call was cancelled"));
}

// ---- entry points used by inline templates
void start_call(node_impl& n, const pid& to, call_state_base* state, message_envelope* request,
                std::chrono::milliseconds timeout) {
  n.start_call(to, state, request, timeout);
}
void call_finished(node_impl& n, call_state_base* state) {
  n.call_finished(state);
  static const failure gone(errc::operation_canceled, "the caller went away");
  n.count_call(&gone);
  n.report_outcome(state, &gone);
}
void call_finished(node_impl& n, call_state_base* state, const failure* outcome) {
  n.call_finished(state);
  n.count_call(outcome);
  n.report_outcome(state, outcome);
}
asio::io_context& node_context(node_impl& n) {
  return n.context();
}

std::string dropped_reply_reason(process* owner) {
  // The exit reason is recorded before suspended frames and pending replies are dropped; it is
  // only read on the owner's own thread (elsewhere the owner may be running).
  if (owner && owner == current_process()) {
    if (const exit_reason* r = ending_reason(owner)) return r->text();
  }
  return {};
}

encoded_call_state::encoded_call_state(node_impl& n,
                                       std::function<void(result<msgpack::object_handle>)> d)
    : node_(n), done_(std::move(d)) {}

void encoded_call_state::complete_value(void* value, const value_codec* codec) {
  if (!codec) {
    finish(failure(errc::not_serializable, "the reply type has no msgpack mapping"));
    return;
  }
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  codec->pack(packer, value);
  finish(msgpack::unpack(buffer.data(), buffer.size()));
}
void encoded_call_state::complete_error(failure f) {
  finish(std::move(f));
}
void encoded_call_state::complete_encoded(const msgpack::object& reply) {
  auto zone = std::make_unique<msgpack::zone>();
  msgpack::object copy(reply, *zone);
  finish(msgpack::object_handle(copy, std::move(zone)));
}
void encoded_call_state::abandon() {
  detail::call_finished(node_, this);
  done_ = nullptr;
}
void encoded_call_state::finish(result<msgpack::object_handle> r) {
  detail::call_finished(node_, this, r ? nullptr : &r.fail());
  auto d = std::move(done_);
  if (d) d(std::move(r));
}

namespace {
// gen_server:stop: first of {the process ended, the timeout} completes.
struct stop_waiter final : timer_entry {
  std::atomic<bool> done{false};
  std::function<void(result<void>)> on_done;
  std::shared_ptr<stop_waiter> self_while_listed;
  bool claim() { return !done.exchange(true, std::memory_order_acq_rel); }
  void expire() override {
    auto keep = std::move(self_while_listed);
    if (claim()) on_done(failure(errc::timeout, "the process did not end in time"));
  }
  void discard() override {
    auto keep = std::move(self_while_listed);
    if (claim()) on_done(failure(errc::node_stopped));
  }
};
}  // namespace

void stop_and_wait(node_impl& n, const pid& p, exit_reason reason,
                   std::chrono::milliseconds timeout, std::function<void(result<void>)> done) {
  if (process* self = current_process(); self && self->self() == p) {
    done(failure(errc::calling_self, "a process cannot wait for its own stop"));
    return;
  }
  auto w = std::make_shared<stop_waiter>();
  w->on_done = std::move(done);
  if (timeout.count() >= 0) {
    w->self_while_listed = w;
    n.timers().arm(w.get(), timeout);
  }
  auto not_alive = n.watch(p, [w, &n](const exit_reason&) {
    if (!w->claim()) return;
    if (n.timers().cancel(w.get())) w->self_while_listed.reset();
    w->on_done({});
  });
  if (not_alive) {
    if (w->claim()) {
      if (n.timers().cancel(w.get())) w->self_while_listed.reset();
      w->on_done(failure(errc::noproc, p.to_string()));
    }
    return;
  }
  n.owner().stop_process(p, std::move(reason));
}

namespace {
// A dynamic message as an envelope: the map's string "type" field is the tag.
result<dynamic_envelope*> make_dynamic(node& n, const pid& to, msgpack::object_handle map,
                                       envelope_kind k) {
  const msgpack::object& o = map.get();
  std::string tag;
  if (o.type == msgpack::type::MAP) {
    for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR && kv.key.as<std::string_view>() == "type" &&
          kv.val.type == msgpack::type::STR) {
        tag = kv.val.as<std::string>();
      }
    }
  }
  if (tag.empty()) {
    log(log_level::warning, "node", n.name(), ": dynamic message to ", to.to_string(),
        " has no string 'type' field: refused");
    return failure(errc::bad_message, "dynamic message needs a map with a string 'type' field");
  }
  return new dynamic_envelope(k, current_self(), std::move(tag), std::move(map));
}

result<void> route_dynamic(node& n, const pid& to, msgpack::object_handle map, envelope_kind k) {
  auto e = make_dynamic(n, to, std::move(map), k);
  if (!e) return e.fail();
  return n.impl().route(to, *e);
}
}  // namespace

void reply_inspected(ref_ptr<call_state_base> call, process* owner, std::shared_ptr<void> value) {
  reply_to<std::shared_ptr<void>> reply(std::move(call), owner);
  reply(std::move(value));
}

}  // namespace detail

result<void> cast_dynamic(node& n, const pid& to, msgpack::object_handle map) {
  return detail::route_dynamic(n, to, std::move(map), detail::envelope_kind::cast);
}
result<void> send_dynamic(node& n, const pid& to, msgpack::object_handle map) {
  return detail::route_dynamic(n, to, std::move(map), detail::envelope_kind::info);
}

void call_dynamic(node& n, const pid& to, msgpack::object_handle map,
                  std::chrono::milliseconds timeout,
                  std::function<void(result<msgpack::object_handle>)> done) {
  auto* state = new detail::encoded_call_state(n.impl(), std::move(done));
  detail::ref_ptr<detail::call_state_base> keep(state);
  auto request = detail::make_dynamic(n, to, std::move(map), detail::envelope_kind::call);
  if (!request) {
    if (state->claim()) state->complete_error(request.fail());
    return;
  }
  n.impl().start_call(to, state, *request, timeout);
}

result<void> complete_remote_call(node& n, std::uint64_t call_id,
                                  result<msgpack::object_handle> reply) {
  return n.impl().complete_remote_call(call_id, std::move(reply));
}
result<void> complete_remote_call(node& n, node_atom from, std::uint64_t call_id,
                                  result<msgpack::object_handle> reply) {
  return n.impl().complete_remote_call(call_id, std::move(reply), from);
}
std::size_t fail_remote_calls(node& n, node_atom peer, const failure& why) {
  return n.impl().fail_remote_calls(peer, why);
}
void set_remote_call_gate(node& n, std::shared_ptr<remote_call_gate> g) {
  n.impl().set_gate(std::move(g));
}
std::size_t pending_remote_calls(node& n) {
  return n.impl().pending_remote_calls(std::nullopt);
}
std::size_t pending_remote_calls(node& n, node_atom peer) {
  return n.impl().pending_remote_calls(peer);
}
inbound_scope::inbound_scope(node& n) noexcept : began_(detail::inbound_scope_begin(n.impl())) {}

bool deliver_signal(node& n, detail::envelope_kind kind, const pid& from, const pid& to,
                    exit_reason reason, monitor_ref ref, bool from_link) {
  // Only this node's own processes: a frame must never make the node route onwards.
  if (!n.impl().is_local(to)) return false;
  return n.impl().send_signal(kind, from, to, std::move(reason), ref, from_link);
}

}  // namespace otpp

namespace otpp {

monitor_ref new_monitor_ref(node& n) {
  return monitor_ref{n.impl().new_ref()};
}

bool adopt_monitor(node& n, const pid& watcher, monitor_ref ref, const pid& target) {
  auto& impl = n.impl();
  if (!impl.is_local(watcher)) return false;
  return impl.send_signal(detail::envelope_kind::adopt_monitor, target, watcher, {}, ref);
}

}  // namespace otpp
