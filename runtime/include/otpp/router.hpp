// The seam between a node and the rest of a cluster. Every envelope that leaves a process goes
// through one door of the node (routing.cpp): a pid of this node incarnation is delivered
// locally; a pid of an earlier incarnation of this node is dead; a pid of any other node goes
// to the router the node holds. With no router, a node is a complete single-machine runtime
// and other nodes' pids answer noproc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include <msgpack.hpp>

#include "otpp/detail/envelope.hpp"
#include "otpp/pid.hpp"
#include "otpp/result.hpp"

namespace otpp {

class node;

class router {
 public:
  virtual ~router() = default;

  // Forwards `e` (kind, sender, and for a message its tag and msgpack body through
  // message_envelope::pack_body; for a call its reference: e.from and e.call->call_id; for a
  // signal its reason, monitor ref and link flag) toward `to`, serialising it once. Runs on the
  // sender's thread: must not block. The node frees `e` afterwards. On failure the node answers
  // a call in `e` with the returned error at once, and a link or monitor signal as for a dead
  // process.
  virtual result<void> route(const pid& to, detail::envelope& e) = 0;
};

// Installs `r` (nullptr: none) on node `n`. `r` must outlive every send through it, including
// one in flight on another thread: keep it in a service of the node (node::use_service;
// services are destroyed after every process ended) or let it outlive the node.
void set_router(node& n, router* r);

// A check every call to another node passes before its request leaves (the resilience
// layer's per-node circuit breakers). admit answers a completion that hears the call's
// outcome once (null on success), or the failure the call completes with at once (the
// request is not sent). Runs on the caller's thread: must not block.
class remote_call_gate {
 public:
  virtual ~remote_call_gate() = default;
  virtual result<std::function<void(const failure*)>> admit(node_atom peer) = 0;
};
// Installs `g` on node `n` (nullptr: none); any thread.
void set_remote_call_gate(node& n, std::shared_ptr<remote_call_gate> g);

// A reply that came back over the wire for call `call_id` (a node-unique reference set when
// the request left this node). The waiting caller gets it decoded to its reply type (or
// bad_message); a reply for a call already resolved (timed out, answered) is dropped and
// answers not_found.
result<void> complete_remote_call(node& n, std::uint64_t call_id,
                                  result<msgpack::object_handle> reply);
// The same, for a reply that arrived from node `from`: dropped (not_found, logged) unless the
// call's request went to `from`, so a peer cannot answer calls made to another node.
result<void> complete_remote_call(node& n, node_atom from, std::uint64_t call_id,
                                  result<msgpack::object_handle> reply);
// Completes every call waiting on node `peer` with `why` (a peer going down): returns how many.
std::size_t fail_remote_calls(node& n, node_atom peer, const failure& why);
// Calls whose request left this node and that wait for a reply.
std::size_t pending_remote_calls(node& n);
// Those waiting on node `peer`.
std::size_t pending_remote_calls(node& n, node_atom peer);

namespace detail {
bool inbound_scope_begin(node_impl& n) noexcept;
void inbound_scope_end() noexcept;
}  // namespace detail

// Open while a frame from the wire is delivered on one of the node's threads (outside any
// process): the first process the delivery wakes runs next on this thread, right after the
// I/O handler, instead of waking another thread, just as a process that sends does. At most
// one wake-up per thread waits like this between process turns (a burst for many processes
// still spreads over the workers), and the watchman takes it over if the thread stays busy.
class inbound_scope {
 public:
  explicit inbound_scope(node& n) noexcept;
  ~inbound_scope() {
    if (began_) detail::inbound_scope_end();
  }
  inbound_scope(const inbound_scope&) = delete;
  inbound_scope& operator=(const inbound_scope&) = delete;

 private:
  bool began_;
};

// A signal that arrived from another node (kind: exit_signal, link, unlink, monitor,
// demonitor) for local process `to`, sent by `from` (a pid of that node). False when `to` is
// not alive here: the caller answers the sender (exit noproc for a link, down noproc for a
// monitor), as a local sender would be answered.
bool deliver_signal(node& n, detail::envelope_kind kind, const pid& from, const pid& to,
                    exit_reason reason = {}, monitor_ref ref = {}, bool from_link = false);

// A fresh monitor reference of node `n` (as process::monitor makes), for a monitor that is set
// up on the monitored process's node before the watcher learns the target's pid (remote spawn).
monitor_ref new_monitor_ref(node& n);
// Records on local process `watcher` (in order with what is routed to it: a down routed
// afterwards finds the monitor) that it monitors `target` with `ref`, as if it had called
// monitor(target) and the monitor signal had already reached the target. demonitor(ref) and the
// down then work as usual. False if `watcher` is not alive.
bool adopt_monitor(node& n, const pid& watcher, monitor_ref ref, const pid& target);

}  // namespace otpp
