// Shared by the demo driver (main.cpp) and its node processes (node.cpp).
#pragma once

#include <string>
#include <string_view>

#include <otpp/message.hpp>

namespace demo {

struct add {  // a call: adds and answers the new total
  static constexpr std::string_view tag = "demo.add";
  using reply = long;
  long amount = 0;
  MSGPACK_DEFINE_MAP(amount)
};
struct add_later {  // a cast: adds, answers nothing
  static constexpr std::string_view tag = "demo.add_later";
  long amount = 0;
  MSGPACK_DEFINE_MAP(amount)
};

// Node mode: one cluster node named `id` (name@127.0.0.1:port) joining through `seeds`
// (comma-separated), driven through stdin/stdout. Returns the exit code.
int run_node(const std::string& id, const std::string& seeds);

}  // namespace demo
