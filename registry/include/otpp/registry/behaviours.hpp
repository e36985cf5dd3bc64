// Behaviour registry and remote spawn (Erlang's spawn on another node, by name: C++ cannot ship
// a function, so each node registers the servers it can start under a name, with the type of
// their start argument, and any member or hidden node asks for one by that name).
//
//   struct worker_args { int size = 0; MSGPACK_DEFINE_MAP(size) };
//   otpp::register_behaviour<worker, worker_args>(node, "worker");     // on every node
//   ...
//   otpp::spawn_remote(node, "b@10.0.0.2:4370", "worker", worker_args{3},
//                      {.monitor = true}, [](otpp::result<otpp::remote_spawned> r) { ... });
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <msgpack.hpp>

#include "otpp/call.hpp"
#include "otpp/node.hpp"
#include "otpp/registry/global.hpp"
#include "otpp/result.hpp"

namespace otpp {

struct behaviour_options {
  // Empty: any node may spawn it; else only these node ids (Ergo's allow list). A spawn from
  // this node itself counts as one from its own id.
  std::vector<std::string> allowed_nodes;
  // Mailbox bound, trap_exit, idle timeout of the spawned processes (the hooks are the spawn's).
  spawn_options spawn{};
};

struct remote_spawn_options {
  // Link the caller and the child before the child's init runs (the caller must be a process:
  // else invalid_argument). A spawn that fails leaves no link behind.
  bool link = false;
  // The caller monitors the child from before its init runs: a child that crashes right after
  // init is still seen (remote_spawned::monitor is the reference).
  bool monitor = false;
  // Registers the child under this local name on its node, atomically (as spawn_named: init
  // never runs if the name is taken, and the spawn answers already_registered).
  std::string local_name;
  // Registers the child under this global name before its init runs (Erlang's
  // gen_server:start({global, Name})): the child takes no message until the name is its own; a
  // name already held answers already_registered (the holder as reason) and init never runs.
  // The name goes with the child's exit, everywhere.
  std::string global_name;
  // The global name's epoch (fencing token; 0: none; needs global_name, else invalid_argument):
  // the name is claimed with global_register_options::epoch = this, so a start below the
  // name's highest epoch (or at it, after another process registered it) answers stale_epoch
  // and init never runs.
  std::uint64_t global_epoch = 0;
  // Bounds the whole spawn, init included. A success that arrives later kills the child it
  // names (nothing runs that nobody knows of).
  std::chrono::milliseconds timeout{5000};
};

struct remote_spawned {
  pid child;
  monitor_ref monitor;  // valid if options.monitor
};

namespace detail {

// A behaviour with its argument type erased: decodes the args and spawns with `o`.
using behaviour_start =
    std::function<result<pid>(node&, const msgpack::object& args, const spawn_options& o)>;
result<void> add_behaviour(node& n, std::string name, behaviour_options o, behaviour_start start);

// Starts one spawn; `done` is called exactly once, on any thread.
void start_spawn(node& n, std::string_view target_node, std::string behaviour,
                 std::shared_ptr<msgpack::sbuffer> args, remote_spawn_options o, pid caller,
                 std::function<void(result<remote_spawned>)> done);

inline bool is_nil_or_empty(const msgpack::object& o) {
  return o.type == msgpack::type::NIL || (o.type == msgpack::type::MAP && o.via.map.size == 0) ||
         (o.type == msgpack::type::ARRAY && o.via.array.size == 0);
}

}  // namespace detail

// Registers `Server` under `name` on this node (before or after the cluster is joined).
// Server is constructed from an Args decoded from the spawn's msgpack arguments (Args needs a
// msgpack mapping); with Args = void it is default-constructed and the arguments must be nil or
// an empty map/array. already_registered if the name is taken, invalid_argument if empty.
template <class Server, class Args = void>
result<void> register_behaviour(node& n, std::string name, behaviour_options o = {}) {
  static_assert(std::is_base_of_v<process, Server>, "a behaviour is a process (gen_server)");
  if constexpr (std::is_void_v<Args>) {
    return detail::add_behaviour(
        n, std::move(name), std::move(o),
        [](node& on, const msgpack::object& args, const spawn_options& so) -> result<pid> {
          if (!detail::is_nil_or_empty(args)) {
            return failure(errc::bad_message, "this behaviour takes no arguments");
          }
          return on.spawn_opt<Server>(so);
        });
  } else {
    static_assert(wire_encodable<Args>, "a behaviour's Args needs a msgpack mapping");
    return detail::add_behaviour(
        n, std::move(name), std::move(o),
        [](node& on, const msgpack::object& args, const spawn_options& so) -> result<pid> {
          std::optional<Args> decoded;
          try {
            decoded.emplace(args.as<Args>());
          } catch (const std::exception& e) {
            return failure(errc::bad_message, std::string("arguments: ") + e.what());
          }
          return on.spawn_opt<Server>(so, std::move(*decoded));
        });
  }
}
// not_found if no behaviour has that name. Spawns already started are not affected.
result<void> unregister_behaviour(node& n, std::string_view name);
std::vector<std::string> registered_behaviours(node& n);

// Behaviours registered before cluster::join are served once the spawn channel is open:
// register_behaviour and spawn_remote open it themselves when the node has joined; a node that
// registered everything before joining and never spawns calls this after join.
// nodedown if the node has not joined a cluster.
result<void> serve_remote_spawn(node& n);

// Spawns behaviour `behaviour` on node `target_node` (a member, a hidden node, or this node
// itself: then locally, through the same lookup, without the wire) with `args` as its
// arguments. Completes (through any Asio completion token: a callback, asio::use_future,
// asio::use_awaitable, asio::deferred) with void(result<remote_spawned>) once the child's init
// succeeded, or with one of:
//   unknown_behaviour   no behaviour of that name on the target
//   bad_message         the arguments do not decode into the behaviour's Args
//   init_failed         init refused (its reason in reason())
//   already_registered  options.local_name (or global_name) is taken
//   stale_epoch         options.global_epoch is below the global name's highest epoch
//   not_authorised      this node is not in the behaviour's allowed_nodes
//   nodedown            no connection to the target, or it was lost with the spawn pending
//   timeout             no answer within options.timeout (a late success kills the child)
//   node_stopped        this node (or the target) is stopping
//   invalid_argument    link or monitor without a calling process, global_epoch without a
//                       global_name
//   would_block         use_future from a process thread (use use_awaitable or a callback)
namespace detail {
template <class Token>
auto spawn_packed(node& n, std::string_view target_node, std::string behaviour,
                  std::shared_ptr<msgpack::sbuffer> args, remote_spawn_options o, Token&& token) {
  return asio::async_initiate<Token, void(result<remote_spawned>)>(
      [&n, target = std::string(target_node), args](auto handler, std::string name,
                                                    remote_spawn_options opts) {
        if (refuse_blocking_wait<Token, remote_spawned>(handler)) return;
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        // The caller is whoever starts the operation (a deferred one: where it is launched).
        start_spawn(n, target, std::move(name), args, std::move(opts), current_self(),
                    [&n, shared](result<remote_spawned> r) {
                      complete_on(n.impl(), std::move(*shared), std::move(r));
                    });
      },
      token, std::move(behaviour), std::move(o));
}
}  // namespace detail

template <class Args, class Token>
auto spawn_remote(node& n, std::string_view target_node, std::string behaviour, Args args,
                  remote_spawn_options o, Token&& token) {
  static_assert(wire_encodable<Args>, "spawn arguments need a msgpack mapping");
  auto packed = std::make_shared<msgpack::sbuffer>();
  msgpack::pack(*packed, args);
  return detail::spawn_packed(n, target_node, std::move(behaviour), std::move(packed), std::move(o),
                              std::forward<Token>(token));
}

// The same with arguments in dynamic form (a tool, a script: JSON turned into msgpack): they
// are decoded into the behaviour's Args on the target (bad_message if they do not fit).
template <class Token>
auto spawn_remote_dynamic(node& n, std::string_view target_node, std::string behaviour,
                          const msgpack::object& args, remote_spawn_options o, Token&& token) {
  auto packed = std::make_shared<msgpack::sbuffer>();
  msgpack::pack(*packed, args);
  return detail::spawn_packed(n, target_node, std::move(behaviour), std::move(packed), std::move(o),
                              std::forward<Token>(token));
}

// The same, with nil arguments (a behaviour registered with Args = void).
template <class Token>
auto spawn_remote(node& n, std::string_view target_node, std::string behaviour,
                  remote_spawn_options o, Token&& token) {
  auto packed = std::make_shared<msgpack::sbuffer>();
  msgpack::packer<msgpack::sbuffer>(*packed).pack_nil();
  return detail::spawn_packed(n, target_node, std::move(behaviour), std::move(packed), std::move(o),
                              std::forward<Token>(token));
}

}  // namespace otpp
