// A small supervision tree: a top supervisor (one_for_one) with a logger worker and a nested
// "jobs" supervisor (rest_for_one) holding a fetcher and a parser. The fetcher crashes; the
// jobs supervisor restarts it and the parser started after it (rest_for_one), nothing else.
// The program learns of the restarts through the supervisor's events, and reads its counters.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <string>

#include <asio/use_future.hpp>

#include "otpp/supervisor.hpp"

namespace {

struct crash {
  static constexpr std::string_view tag = "crash";
  std::string why;
  MSGPACK_DEFINE_MAP(why)
};

class worker : public otpp::gen_server<worker> {
 public:
  explicit worker(std::string name) : name_(std::move(name)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.cast<crash>([](worker&, crash c) -> void { throw std::runtime_error(c.why); });
  }
  otpp::result<void> init() {
    std::printf("  [%s] started as %s\n", name_.c_str(), self().to_string().c_str());
    return {};
  }
  void terminate(const otpp::exit_reason& r) {
    std::printf("  [%s] %s terminating: %s\n", name_.c_str(), self().to_string().c_str(),
                r.text().c_str());
  }

 private:
  std::string name_;
};

void show(otpp::node& node, const char* title, const otpp::pid& sup) {
  std::printf("%s\n", title);
  auto children = otpp::which_children(node, sup);
  if (!children) return;
  for (const auto& c : *children) {
    std::printf("  %-8s %-10s %s\n", c.id.c_str(),
                c.type == otpp::child_type::supervisor ? "supervisor" : "worker",
                c.child.to_string().c_str());
  }
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  otpp::set_log_level(otpp::log_level::off);
  otpp::node node({.name = "example@localhost", .threads = 2});
  node.start();

  otpp::supervisor_spec jobs{
      .strategy = otpp::restart_strategy::rest_for_one, .max_restarts = 3, .period = 5s};
  jobs.children.push_back(otpp::child<worker>("fetcher", std::string("fetcher")));
  jobs.children.push_back(otpp::child<worker>("parser", std::string("parser")));
  // Restart events, on the supervisor's thread: here, tell main when the parser (restarted
  // last under rest_for_one) runs again.
  auto restarted = std::make_shared<std::promise<void>>();
  auto told = std::make_shared<std::atomic<bool>>(false);
  jobs.on_event = [restarted, told](const otpp::supervisor_event& e) {
    if (e.what == otpp::supervisor_event::kind::child_exited) {
      std::printf("  event: '%s' exited: %s\n", e.child_id.c_str(), e.reason.text().c_str());
    } else if (e.what == otpp::supervisor_event::kind::restarted) {
      std::printf("  event: '%s' restarted as %s\n", e.child_id.c_str(),
                  e.child.to_string().c_str());
      if (e.child_id == "parser" && !told->exchange(true)) restarted->set_value();
    }
  };

  otpp::supervisor_spec top{.max_restarts = 3, .period = 5s, .name = "top"};
  top.children.push_back(otpp::child<worker>("logger", std::string("logger")));
  top.children.push_back(otpp::supervisor_child("jobs", jobs));

  std::printf("starting the tree\n");
  auto sup = otpp::start_supervisor(node, top);
  if (!sup) {
    std::printf("start failed: %s\n", sup.fail().message().c_str());
    return 1;
  }
  otpp::pid jobs_pid;
  auto top_children = otpp::which_children(node, *sup);
  for (const auto& c : top_children.value())
    if (c.id == "jobs") jobs_pid = c.child;
  show(node, "top:", *sup);
  show(node, "jobs:", jobs_pid);

  // Crash the fetcher and wait (bounded) for the restart.
  otpp::pid fetcher;
  auto jobs_children = otpp::which_children(node, jobs_pid);
  for (const auto& c : jobs_children.value())
    if (c.id == "fetcher") fetcher = c.child;
  std::promise<std::string> gone;
  node.watch_process(fetcher, [&](const otpp::exit_reason& r) { gone.set_value(r.text()); });
  std::printf("crashing the fetcher %s\n", fetcher.to_string().c_str());
  (void)otpp::cast(node, fetcher, crash{"connection reset"});
  auto why = gone.get_future();
  if (why.wait_for(5s) != std::future_status::ready) return 1;
  std::printf("fetcher exited: %s\n", why.get().c_str());
  if (restarted->get_future().wait_for(5s) != std::future_status::ready) return 1;
  show(node, "jobs after the restart (newest first):", jobs_pid);
  if (auto stats = otpp::get_supervisor_stats(node, jobs_pid)) {
    std::printf("jobs counters: %llu exit(s), %llu restart(s)\n",
                static_cast<unsigned long long>(stats->child_exits),
                static_cast<unsigned long long>(stats->restarts));
  }

  std::printf("stopping the node (children stop in reverse order)\n");
  node.stop();
  return 0;
}
