// Embedding a node in an application binary: the node's configuration comes from command-line
// flags and the environment, the application starts the node, joins the cluster, runs its own
// service (a gen_server under a global name) and prints a ready line; on SIGINT or SIGTERM it
// leaves the cluster, stops the node (every process runs terminate) and exits 0.
//
// Run two of them (the second joins through the first) and stop them with Ctrl-C:
//   export OTPP_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
//   example_embedding --node a@127.0.0.1:4370
//   example_embedding --node b@127.0.0.1:4371 --seeds 127.0.0.1:4370 --call greeter.a
// Flags win over the environment: --node / OTPP_NODE_ID (not OTPP_NODE: the otpp tool reads
// that as the node to ask), --seeds / OTPP_SEEDS (comma-separated),
// --call <global name> (greet that service once ready), --protection / OTPP_PROTECTION (the
// record protections this node accepts, preferred first, comma-separated: hmac-sha256,
// aes-256-gcm, chacha20-poly1305; e.g. aes-256-gcm to encrypt all cluster traffic). The
// secret comes from OTPP_SECRET
// (never a flag: ps shows flags), else the cookie file at --cookie / OTPP_COOKIE, else
// ~/.otpp.cookie. Exit codes: 0 after a graceful stop, 1 when --call failed, 2 bad
// configuration or the node could not start.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <asio/signal_set.hpp>
#include <asio/use_future.hpp>

#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

namespace {

using namespace std::chrono_literals;

struct hello {
  static constexpr std::string_view tag = "embedding.hello";
  using reply = std::string;
  std::string from;
  MSGPACK_DEFINE_MAP(from)
};

// The application's service.
class greeter : public otpp::gen_server<greeter> {
 public:
  static void define_handlers(otpp::handlers<greeter>& h) {
    h.call<hello>([](greeter& self, hello m) {
      return "hello " + m.from + ", " + self.this_node().name() + " greeted you " +
             std::to_string(++self.greeted_) + " time(s)";
    });
  }
  void terminate(const otpp::exit_reason& why) {
    std::printf("greeter: terminate (%s)\n", why.text().c_str());
  }

 private:
  int greeted_ = 0;
};

struct config {
  std::string node, seeds, cookie, call, protection;
};

// --flag value, else the environment variable, else the default.
int parse(int argc, char** argv, config& c) {
  auto env = [](const char* name) { return std::getenv(name) ? std::getenv(name) : ""; };
  c = {env("OTPP_NODE_ID"), env("OTPP_SEEDS"), env("OTPP_COOKIE"), "", env("OTPP_PROTECTION")};
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    auto* field = flag == "--node"         ? &c.node
                  : flag == "--seeds"      ? &c.seeds
                  : flag == "--cookie"     ? &c.cookie
                  : flag == "--call"       ? &c.call
                  : flag == "--protection" ? &c.protection
                                           : nullptr;
    if (!field || i + 1 >= argc) return 2;
    *field = argv[i + 1];
  }
  return c.node.empty() ? 2 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config c;
  if (parse(argc, argv, c) != 0) {
    std::fprintf(stderr,
                 "usage: %s --node name@host:port [--seeds host:port,...] [--cookie path] "
                 "[--call global-name] [--protection aes-256-gcm,...]   (or OTPP_NODE_ID, "
                 "OTPP_SEEDS, OTPP_COOKIE, OTPP_PROTECTION; OTPP_SECRET)\n",
                 argv[0]);
    return 2;
  }

  otpp::node node({.name = c.node, .threads = 2});
  node.start();
  // Signals go through asio (a self-pipe), so the handler runs on a node thread as ordinary
  // code, not in a signal handler. Installed before anything can take long.
  asio::signal_set signals(node.context(), SIGINT, SIGTERM);
  auto stop_signal = std::make_shared<std::promise<int>>();  // outlives an early return
  auto stopped_by = stop_signal->get_future();
  auto once = std::make_shared<std::once_flag>();
  auto wake = [stop_signal, once](int why) {
    std::call_once(*once, [&] { stop_signal->set_value(why); });
  };
  signals.async_wait([wake](std::error_code e, int sig) { wake(e ? 0 : sig); });
  // The node may also be stopped from inside (a handler, or a peer: `otpp stop`): main wakes
  // up then too, instead of waiting for a signal that no longer comes.
  node.add_stop_hook([wake] { wake(0); });

  otpp::cluster::options o;
  std::istringstream seeds(c.seeds);
  for (std::string s; std::getline(seeds, s, ',');) o.seeds.push_back(s);
  const char* secret = std::getenv("OTPP_SECRET");
  o.transport.secret = secret ? secret : "";
  o.transport.cookie_path = c.cookie;
  if (!c.protection.empty()) {
    o.transport.record_protections.clear();
    std::istringstream modes(c.protection);
    for (std::string m; std::getline(modes, m, ',');) {
      const auto p = otpp::transport::parse_record_protection(m);
      if (!p) {
        std::fprintf(stderr,
                     "%s: unknown record protection '%s' (hmac-sha256, aes-256-gcm, "
                     "chacha20-poly1305)\n",
                     c.node.c_str(), m.c_str());
        return 2;
      }
      o.transport.record_protections.push_back(*p);
    }
  }
  // Node events from the first (set before joining: a seed may answer before join returns).
  o.on_event = [](const otpp::cluster::node_event& e) {    // runs on a node thread
    auto why = otpp::make_error_code(e.reason).message();  // "graceful_shutdown: the node left..."
    why = e.reason == otpp::errc::ok ? "" : " (" + why.substr(0, why.find(':')) + ")";
    std::printf("node event: %s %s%s\n", std::string(otpp::cluster::to_string(e.kind)).c_str(),
                e.node.c_str(), why.c_str());
  };
  auto cluster = otpp::join_cluster(node, o);  // + global names, process groups, remote spawn
  if (!cluster) {
    std::fprintf(stderr, "%s: join_cluster: %s\n", c.node.c_str(),
                 cluster.error().message().c_str());
    return 2;
  }

  // The service, under a global name any node can call: greeter.<the node's short name>.
  auto service_name = "greeter." + c.node.substr(0, c.node.find('@'));
  auto service = node.spawn<greeter>();
  if (!service) {
    std::fprintf(stderr, "%s: spawn greeter: %s\n", c.node.c_str(),
                 service.error().message().c_str());
    return 2;
  }
  if (auto r = otpp::register_name(node, otpp::global(service_name), *service); !r) {
    std::fprintf(stderr, "%s: register %s: %s\n", c.node.c_str(), service_name.c_str(),
                 r.error().message().c_str());
    return 2;
  }
  std::printf("ready: node %s serves %s (port %u)\n", c.node.c_str(), service_name.c_str(),
              static_cast<unsigned>((*cluster)->port()));

  int code = 0;
  if (!c.call.empty()) {
    // A global name is known everywhere once its registration reached this node's replica:
    // a node that just joined may have to wait for it (bounded).
    auto until = std::chrono::steady_clock::now() + 10s;
    otpp::result<std::string> answer = otpp::failure(otpp::errc::noproc, "not yet");
    while (!answer && std::chrono::steady_clock::now() < until) {
      answer =
          otpp::call(node, otpp::global(c.call), hello{service_name}, 5s, asio::use_future).get();
      if (!answer) std::this_thread::sleep_for(50ms);
    }
    if (answer) {
      std::printf("called %s: %s\n", c.call.c_str(), answer->c_str());
    } else {
      std::printf("call %s FAILED: %s\n", c.call.c_str(), answer.error().message().c_str());
      code = 1;
    }
  }

  // Serve until SIGINT or SIGTERM.
  int sig = stopped_by.get();
  if (sig == 0) {
    std::printf("the node was stopped from inside (otpp stop?)\n");
  } else {
    std::printf("got %s: leaving the cluster\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    (*cluster)->leave();  // peers see node_down graceful_shutdown, not a crash
  }
  node.stop();  // every process runs terminate(shutdown); the threads end (waits for a stop
                // already under way)
  std::printf("stopped\n");
  return code;
}
