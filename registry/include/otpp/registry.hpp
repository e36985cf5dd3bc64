// Local name registry: names for processes of one node (Erlang's register/whereis).
// A name is freed when its process ends. call / cast / send by name resolve the name first
// and answer noproc for a name nobody holds.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "otpp/call.hpp"
#include "otpp/node.hpp"

namespace otpp {

// A locally registered name, for the by-name overloads below.
struct registered_name {
  std::string name;
};
inline registered_name by_name(std::string name) {
  return {std::move(name)};
}

// already_registered if the name is taken or the process already has a name;
// noproc if `p` is not a live local process; invalid_argument for an empty name.
result<void> register_name(node& n, std::string name, const pid& p);
// not_found if nobody holds the name.
result<void> unregister_name(node& n, std::string_view name);

// Spawns Server(args...) under `name`, atomically (Erlang's gen_server:start({local, Name})):
// the name is taken before init runs, so init can be found by name, and a start that loses the
// name never runs init: it answers already_registered with the holder's pid as reason.
template <class Server, class... Args>
result<pid> spawn_named(node& n, std::string name, spawn_options options, Args&&... args) {
  options.before_init = [&n, name = std::move(name)](const pid& p) {
    return register_name(n, name, p);
  };
  return n.spawn_opt<Server>(options, std::forward<Args>(args)...);
}
// noproc if nobody holds the name.
result<pid> whereis(node& n, std::string_view name);
std::vector<std::string> registered_names(node& n);

template <message M>
result<void> cast(node& n, const registered_name& to, M msg) {
  auto p = whereis(n, to.name);
  if (!p) return p.fail();
  return cast(n, *p, std::move(msg));
}
template <message M>
result<void> send(node& n, const registered_name& to, M msg) {
  auto p = whereis(n, to.name);
  if (!p) return p.fail();
  return send(n, *p, std::move(msg));
}
// An unknown name completes with noproc through the token, like an unknown pid.
template <call_message M, class Token>
auto call(node& n, const registered_name& to, M msg, std::chrono::milliseconds timeout,
          Token&& token) {
  auto p = whereis(n, to.name);
  return call(n, p ? *p : pid{}, std::move(msg), timeout, std::forward<Token>(token));
}
template <call_message M, class Token>
auto call(node& n, const registered_name& to, M msg, Token&& token) {
  return call(n, to, std::move(msg), default_call_timeout, std::forward<Token>(token));
}

}  // namespace otpp
