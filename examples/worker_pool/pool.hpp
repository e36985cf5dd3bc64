// Shared by the worker pool's director (main.cpp) and its node processes (node.cpp): the
// worker's messages and the pool's shape.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <otpp/message.hpp>

namespace pool {

inline constexpr std::string_view supervisor = "pool";  // the distributed supervisor's name
inline constexpr int workers = 12;                      // w1 .. w12
inline constexpr std::string_view behaviour = "worker";

// How long a silent member stays reachable (the default is 600 ms). A loaded machine (a busy
// 2-core CI box) can hold a process's heartbeats back longer than that, and a member wrongly
// unreachable at the moment of the kill would leave the survivors without a majority (their
// hosts would stand by). A SIGKILLed node is detected by its refused reconnect, at once,
// whatever this says.
inline constexpr std::chrono::milliseconds unreachable_after{3000};

inline std::string worker_id(int i) {
  return "w" + std::to_string(i);
}
// Callers find a worker by this global name, wherever it runs.
inline std::string global_name_of(const std::string& id) {
  return "pool." + id;
}

struct worker_args {  // what the supervisor passes when it starts a worker (by behaviour name)
  std::string id;
  MSGPACK_DEFINE_MAP(id)
};

struct job_done {
  std::uint64_t steps = 0;   // the answer
  std::string worker;        // its child id
  std::string node;          // the node that served it
  std::uint64_t served = 0;  // jobs this process served, this one included (its own state)
  MSGPACK_DEFINE_MAP(steps, worker, node, served)
};
struct job {  // a call: how many Collatz steps take n to 1
  static constexpr std::string_view tag = "pool.job";
  using reply = job_done;
  std::uint64_t n = 1;
  MSGPACK_DEFINE_MAP(n)
};
struct where {  // a call that is no job (not counted): answers the node it runs on
  static constexpr std::string_view tag = "pool.where";
  using reply = std::string;
  OTPP_NO_FIELDS()
};

inline std::uint64_t collatz_steps(std::uint64_t n) {
  std::uint64_t steps = 0;
  for (; n > 1; ++steps) n = n % 2 ? 3 * n + 1 : n / 2;
  return steps;
}

// Node mode: cluster node `id` (name@127.0.0.1:port) joining through `seeds` (comma-separated
// node ids), with the shared secret from the environment. Returns the exit code.
int run_node(const std::string& id, const std::string& seeds);

inline constexpr const char* secret_env = "OTPP_WORKER_POOL_SECRET";

}  // namespace pool
