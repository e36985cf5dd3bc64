// Links against the installed package and runs one call: proves headers, libraries and the
// CMake package config are complete.
#include <asio/use_future.hpp>
#include <cstdio>

#include <otpp/registry.hpp>
#include <otpp/runtime.hpp>

struct square {
  static constexpr std::string_view tag = "square";
  using reply = int;
  int x = 0;
  MSGPACK_DEFINE_MAP(x)
};

class squarer : public otpp::gen_server<squarer> {
 public:
  static void define_handlers(otpp::handlers<squarer>& h) {
    h.call<square>([](squarer&, square s) { return s.x * s.x; });
  }
};

int main() {
  otpp::node node({.name = "consumer", .threads = 1});
  node.start();
  auto p = node.spawn<squarer>();
  if (!p || !otpp::register_name(node, "sq", *p)) return 1;
  auto r = otpp::call(node, otpp::by_name("sq"), square{7}, asio::use_future).get();
  std::printf("consumer: 7^2 = %d\n", r ? *r : -1);
  return r && *r == 49 ? 0 : 1;
}
