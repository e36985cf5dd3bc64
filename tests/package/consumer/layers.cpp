// Uses one symbol from each layer, linked by its documented target name (see CMakeLists.txt):
// proves each exported layer carries its headers, library and dependencies.
#include <cstdio>
#include <string_view>

#include <otpp/cluster/node_id.hpp>
#include <otpp/error.hpp>
#include <otpp/health.hpp>
#include <otpp/registry.hpp>
#include <otpp/resilience.hpp>
#include <otpp/resilience/sqlite_saga_store.hpp>
#include <otpp/runtime.hpp>
#include <otpp/supervisor.hpp>
#include <otpp/transport/crypto.hpp>

class idle : public otpp::gen_server<idle> {
 public:
  static void define_handlers(otpp::handlers<idle>&) {}
};

int main() {
  // otpp::base
  std::error_code ec = otpp::errc::not_found;
  // otpp::transport
  auto digest = otpp::transport::sha256({otpp::transport::as_bytes("otpp")});
  // otpp::cluster
  auto id = otpp::cluster::node_id::parse("layers@127.0.0.1:4370");
  // otpp::resilience
  bool transient = otpp::resilience::is_transient(otpp::errc::nodedown);
  // otpp::resilience_sqlite
  auto sagas = otpp::resilience::sqlite_saga_store::open(":memory:");
  // otpp::health (its HTTP endpoint links cpp-httplib)
  otpp::health::metrics_registry metrics;
  bool health =
      metrics.make_counter("consumer_total", "h").has_value() &&
      std::string_view(otpp::health::to_string(otpp::health::status::degraded)) == "degraded";
  // otpp::runtime, otpp::registry, otpp::supervisor
  otpp::node node({.name = "layers", .threads = 1});
  node.start();
  otpp::supervisor_spec spec{.name = "top"};
  spec.children.push_back(otpp::child<idle>("idle"));
  auto sup = otpp::start_supervisor(node, spec);
  auto port = otpp::health::of(node).serve();  // 127.0.0.1, an ephemeral port
  health = health && port && *port != 0;
  bool ok = ec && transient && sagas && (*sagas)->unfinished() && health && digest.size() == 32 &&
            id && id->port == 4370 && sup && otpp::whereis(node, "top").has_value();
  auto kids = sup ? otpp::which_children(node, *sup)
                  : otpp::result<std::vector<otpp::child_info>>(otpp::failure(otpp::errc::noproc));
  ok = ok && kids && kids->size() == 1 && kids->front().child;
  node.stop();
  std::printf("consumer layers: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
