#include "http.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <thread>

#include <httplib.h>
#include <asio/ip/address.hpp>

#include "otpp/log.hpp"

namespace otpp::health {

namespace {

constexpr const char* json_type = "application/json";

// Waits (bounded, real time) for a report: the HTTP thread is not a node thread, and a stuck
// node may never fire its own timers.
template <class Start>
health_report wait_for_report(Start start, std::chrono::milliseconds bound, const char* what) {
  auto promise = std::make_shared<std::promise<health_report>>();
  auto answer = promise->get_future();
  start([promise](health_report r) { promise->set_value(std::move(r)); });
  if (answer.wait_for(bound) == std::future_status::ready) return answer.get();
  health_report late;
  late.state = status::unhealthy;
  late.duration = bound;
  late.checks.push_back({what, status::unhealthy,
                         "no report within " + std::to_string(bound.count()) + "ms", bound, true});
  return late;
}

void answer(httplib::Response& res, const health_report& r) {
  res.status = r.state == status::unhealthy ? 503 : 200;
  res.set_header("Cache-Control", "no-store");
  res.set_content(to_json(r), json_type);
}

}  // namespace

struct registry::http::impl {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> listening_ended{false};
  std::once_flag stopped;
};

registry::http::http(std::unique_ptr<impl> i, std::uint16_t port)
    : impl_(std::move(i)), port_(port) {}

registry::http::~http() {
  stop();
}

void registry::http::stop() {
  std::call_once(impl_->stopped, [this] {
    // httplib's stop() does nothing until its listen loop has begun (is_running): a stop
    // right after serve() would leave the loop blocked in accept. Repeat until it ended.
    while (!impl_->listening_ended.load()) {
      impl_->server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (impl_->thread.joinable()) impl_->thread.join();
  });
}

result<std::unique_ptr<registry::http>> registry::http::start(registry& owner, http_options o) {
  if (o.threads == 0) return failure(errc::invalid_argument, "http_options::threads is 0");
  std::error_code bad;
  (void)asio::ip::make_address(o.bind_address, bad);
  if (bad) {
    return failure(errc::invalid_argument,
                   "http_options::bind_address '" + o.bind_address + "' is not an IP address");
  }
  auto i = std::make_unique<impl>();
  auto& s = i->server;
  // No SO_REUSEPORT (httplib's default sets it): a second endpoint on a taken port must fail,
  // not share the port and split the requests. SO_REUSEADDR only lets a restart bind at once.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  const auto threads = o.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_keep_alive_max_count(20);
  s.set_keep_alive_timeout(2);
  s.set_read_timeout(5, 0);
  s.set_write_timeout(5, 0);
  s.set_payload_max_length(4096);  // GET only: nothing to upload

  registry* reg = &owner;
  const auto check_wait = o.check_timeout;
  const auto bound = o.liveness_bound;
  s.Get("/health/live", [reg, bound](const httplib::Request&, httplib::Response& res) {
    answer(res, wait_for_report([&](auto h) { reg->live(bound, std::move(h)); },
                                bound + std::chrono::milliseconds(1000), "liveness"));
  });
  s.Get("/health/ready", [reg, check_wait](const httplib::Request&, httplib::Response& res) {
    answer(res,
           wait_for_report([&](auto h) { reg->ready(std::move(h)); }, check_wait, "readiness"));
  });
  s.Get("/metrics", [reg](const httplib::Request&, httplib::Response& res) {
    res.set_content(reg->metrics().render(), "text/plain; version=0.0.4; charset=utf-8");
  });

  errno = 0;
  int port = 0;
  if (o.port == 0) {
    port = s.bind_to_any_port(o.bind_address);
  } else {
    port = s.bind_to_port(o.bind_address, o.port) ? o.port : -1;
  }
  if (port <= 0) {
    const int e = errno != 0 ? errno : EADDRNOTAVAIL;
    return failure(std::error_code(e, std::generic_category()),
                   "health endpoint on " + o.bind_address + ":" + std::to_string(o.port));
  }
  i->thread = std::thread([state = i.get()] {
    state->server.listen_after_bind();
    state->listening_ended.store(true);
  });
  log(log_level::info, "health", "endpoint on http://", o.bind_address, ":", port);
  return std::make_unique<http>(std::move(i), static_cast<std::uint16_t>(port));
}

}  // namespace otpp::health
