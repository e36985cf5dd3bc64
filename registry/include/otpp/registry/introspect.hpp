// Introspection of a live node, for any caller (Erlang's processes/process_info, global's
// registered_names, pg's which_groups, net_kernel's nodes, rpc:call to stop a node): what a
// node answers about itself, locally or to any authenticated peer, hidden nodes included. The
// `otpp` command-line tool is one such peer; an application may serve its own admin page the
// same way.
//
//   otpp::introspect::serve(node);   // join_cluster does it
//   otpp::introspect::remote_processes(tool_node, "api@10.0.0.2:4370", {.sort = "mailbox"}, 2s,
//       [](otpp::result<otpp::introspect::process_list> r) { ... });
//
// Requests travel on cluster channel `introspect` as versioned msgpack arrays (see
// registry/src/introspect.cpp); a target that is this node itself is answered without the
// wire. Every remote request completes exactly once: with its answer, or nodedown (no
// connection to the target, or lost with the request pending), timeout, not_authorised (the
// target refuses calls or stops: serve_options), or the error the request met there (noproc
// for an unknown pid or global name, bad_message, invalid_argument, ...).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "otpp/node.hpp"
#include "otpp/result.hpp"

namespace otpp::introspect {

struct serve_options {
  bool allow_call = true;  // call and cast on behalf of a peer (a tool's `otpp call`)
  bool allow_stop = true;  // a peer may stop this node (gracefully)
  // Most processes one answer lists (the rest are counted in process_list::total): a frame
  // stays far below the transport's bound even on a node with millions of processes.
  std::size_t max_processes = 10000;
};

// The node, as `otpp ping` shows it.
struct node_summary {
  std::string id;
  std::uint32_t creation = 0;
  std::int64_t uptime_ms = 0;
  std::uint64_t processes = 0;
  std::uint64_t members = 0;  // up members it knows, itself included (1 without a cluster)
  std::string version;        // otpp's version
  std::vector<std::string> behaviours;  // what spawn_remote can start there
  MSGPACK_DEFINE_MAP(id, creation, uptime_ms, processes, members, version, behaviours)
};

struct process_entry {
  std::string pid;                        // "<node.creation.serial>" (pid::parse reads it)
  std::vector<std::string> names;         // local registered names
  std::vector<std::string> global_names;  // global names it holds
  std::string behaviour;                  // spawn_options::label (a remote spawn's behaviour)
  std::string type;                       // the C++ class
  std::uint64_t mailbox = 0;
  std::uint64_t handled = 0;
  std::uint64_t memory = 0;
  std::int64_t uptime_ms = 0;
  MSGPACK_DEFINE_MAP(pid, names, global_names, behaviour, type, mailbox, handled, memory, uptime_ms)
};

struct process_query {
  // pid (default), mailbox, memory, handled, uptime: the largest first except pid.
  std::string sort = "pid";
  std::size_t limit = 0;  // 0: serve_options::max_processes
  MSGPACK_DEFINE_MAP(sort, limit)
};

struct process_list {
  std::uint64_t total = 0;  // processes on the node (the list may be cut at the limit)
  std::vector<process_entry> processes;
  MSGPACK_DEFINE_MAP(total, processes)
};

struct member_entry {
  std::string id;
  std::uint32_t creation = 0;
  std::string status;  // up, leaving, down
  bool self = false;
  bool connected = false;
  bool reachable = true;
  std::int64_t uptime_ms = 0;  // since the answering node saw it up
  std::map<std::string, std::string> tags;
  MSGPACK_DEFINE_MAP(id, creation, status, self, connected, reachable, uptime_ms, tags)
};

struct global_entry {
  std::string name;
  std::string pid;
  std::string node;
  std::uint64_t epoch = 0;
  MSGPACK_DEFINE_MAP(name, pid, node, epoch)
};

struct group_entry {
  std::string group;
  std::vector<std::string> members;  // pids, a pid once per join
  MSGPACK_DEFINE_MAP(group, members)
};

// Answers requests from peers on the node's cluster (after cluster::join; join_cluster calls
// it). nodedown if the node has not joined. Serving again replaces the options.
result<void> serve(node& n, serve_options o = {});

// This node's own answers (any thread).
node_summary summary(node& n);
process_list processes(node& n, const process_query& q = {});
std::vector<member_entry> members(node& n);
std::vector<global_entry> globals(node& n);
std::vector<group_entry> groups(node& n);

// The same, asked of `target` (a node id; this node itself works too). `done` runs once, on a
// node thread, outside any process: keep it short.
using millis = std::chrono::milliseconds;
void remote_summary(node& n, std::string_view target, millis timeout,
                    std::function<void(result<node_summary>)> done);
void remote_processes(node& n, std::string_view target, process_query q, millis timeout,
                      std::function<void(result<process_list>)> done);
void remote_members(node& n, std::string_view target, millis timeout,
                    std::function<void(result<std::vector<member_entry>>)> done);
void remote_globals(node& n, std::string_view target, millis timeout,
                    std::function<void(result<std::vector<global_entry>>)> done);
void remote_groups(node& n, std::string_view target, millis timeout,
                   std::function<void(result<std::vector<group_entry>>)> done);
// `target` calls (or casts to) `to` (a pid's text, or a global name as the target sees it)
// with `message` in dynamic form (a map with a "type" field); the reply comes back encoded.
// The call's own errors (noproc, timeout, bad_message, exit...) are the answer's; `timeout`
// bounds the call there, and the whole request gets a little longer.
void remote_call(node& n, std::string_view target, std::string to, msgpack::object_handle message,
                 millis timeout, std::function<void(result<msgpack::object_handle>)> done);
void remote_cast(node& n, std::string_view target, std::string to, msgpack::object_handle message,
                 millis timeout, std::function<void(result<void>)> done);
// Asks `target` to stop gracefully (leave the cluster, stop every process): answered before it
// begins.
void remote_stop(node& n, std::string_view target, millis timeout,
                 std::function<void(result<void>)> done);

}  // namespace otpp::introspect
