// otpp_saga_node: one node per OS process running the order saga with an SQLite store, for
// the kill-and-restart test (saga_multiprocess_test.cpp).
//
//   otpp_saga_node --db PATH --effects PATH (--run | --recover) [--resume]
//
// Every action and compensation appends one line to the effects file ("do <step> <key>",
// "undo <step> <key>"): the side effects a test counts across process lifetimes.
// --run       starts one run; its `charge` action never completes: prints
//             "blocked <run id>" and waits to be killed.
// --recover   recover(): prints "recovered <runs> <undefined> <errors>" and one line per run,
//             "outcome <run id> <status> <failed step or ->", then exits 0.
// --resume    the saga's on_recovery is resume (default: compensate).
// Exit codes: 0 done, 2 bad arguments or the store cannot be opened, 3 recover failed.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>

#include <asio/use_future.hpp>

#include "otpp/resilience/saga.hpp"
#include "otpp/resilience/sqlite_saga_store.hpp"
#include "otpp/runtime.hpp"

namespace {

namespace res = otpp::resilience;

void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());  // one write: a line is never torn by a kill
  ::close(fd);
}

// An operation completing at once with `r` (from a pool thread: never inside the caller).
template <class T, class Token>
auto complete_with(otpp::node& n, otpp::result<T> r, Token&& token) {
  return asio::async_initiate<Token, void(otpp::result<T>)>(
      [&n](auto h, otpp::result<T> r) {
        asio::post(n.context(),
                   [h = std::move(h), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
      },
      token, std::move(r));
}

}  // namespace

int main(int argc, char** argv) {
  std::string db, effects;
  bool run = false, recover = false, resume = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--db" && i + 1 < argc) {
      db = argv[++i];
    } else if (a == "--effects" && i + 1 < argc) {
      effects = argv[++i];
    } else if (a == "--run") {
      run = true;
    } else if (a == "--recover") {
      recover = true;
    } else if (a == "--resume") {
      resume = true;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (db.empty() || effects.empty() || run == recover) {
    std::fprintf(stderr, "usage: otpp_saga_node --db P --effects P (--run|--recover)\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  otpp::node node({.name = "saga_node", .threads = 2});
  node.start();
  auto store = res::sqlite_saga_store::open(db);
  if (!store) {
    std::fprintf(stderr, "open %s: %s\n", db.c_str(), store.fail().message().c_str());
    return 2;
  }
  auto& runner = res::saga_runner::of(node);
  runner.use_store(*store);

  auto effect_step = [&](const std::string& name, bool block) {
    return res::saga_step::make(
        name,
        [&, name, block](const res::saga_context& c, auto&& token) {
          append_line(effects, "do " + name + " " + c.idempotency_key);
          if (block) {
            std::printf("blocked %s\n", c.run_id.c_str());
            // Never completes: the handler is dropped; the process waits to be killed.
            return asio::async_initiate<decltype(token), void(otpp::result<std::string>)>(
                [](auto) {}, token);
          }
          return complete_with<std::string>(node, name + "-done",
                                            std::forward<decltype(token)>(token));
        },
        [&, name](const res::saga_context& c, auto&& token) {
          append_line(effects, "undo " + name + " " + c.idempotency_key);
          return complete_with<void>(node, {}, std::forward<decltype(token)>(token));
        });
  };
  res::saga_definition order{.name = "order"};
  order.steps = {effect_step("reserve", false), effect_step("charge", run),
                 effect_step("confirm", false)};
  order.on_recovery = resume ? res::recovery_mode::resume : res::recovery_mode::compensate;
  if (!runner.define(std::move(order))) return 2;

  if (run) {
    runner.start("order", "sku-1", [](otpp::result<res::saga_outcome> r) {
      std::printf("finished %s\n", r ? res::to_string(r->status) : r.fail().message().c_str());
    });
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));  // killed by the test
  }
  auto rec = runner.recover(asio::use_future).get();
  if (!rec) {
    std::printf("recover error %s\n", rec.fail().message().c_str());
    return 3;
  }
  std::printf("recovered %zu %zu %zu\n", rec->runs.size(), rec->undefined.size(),
              rec->errors.size());
  for (const auto& o : rec->runs) {
    std::printf("outcome %s %s %s\n", o.run_id.c_str(), res::to_string(o.status),
                o.failed_step ? o.failed_step->step.c_str() : "-");
  }
  node.stop();
  return 0;
}
