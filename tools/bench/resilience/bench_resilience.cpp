// otpp_bench_resilience: what the resilience policies add to a call in the closed, no-failure
// state. The call is an operation that completes at once (so the figure is the policies'
// own cost, not a message's); each line is the median of 5 rounds, ns per call:
//   resilience.bare.ns_per_call            the operation alone
//   resilience.<policy>.overhead_ns        one policy around it, minus bare
//   resilience.pipeline.overhead_ns        all six in the default order (decorated once)
//   resilience.pipeline_execute.overhead_ns  the same through pipeline::execute (wraps per call)
// Target: pipeline under 200 ns. Options: --quick (tiny counts: a smoke run, not figures);
// --only <name> (one line, e.g. pipeline: what a profiler such as callgrind should look at).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "otpp/log.hpp"
#include "otpp/resilience.hpp"

namespace res = otpp::resilience;
using otpp::result;

namespace {

std::size_t calls = 2'000'000;
int rounds = 5;
std::string only;

void print(const std::string& name, const char* unit, double value) {
  std::printf("{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f}\n", name.c_str(), unit, value);
  std::fflush(stdout);
}

// Completes at once with a value, as a call answered without waiting would.
struct instant_op {
  template <class Token>
  auto operator()(Token&& token) const {
    return asio::async_initiate<Token, void(result<int>)>(
        [](auto h) { std::move(h)(result<int>(1)); }, token);
  }
};

// ns per call of starting `op` `calls` times with a callback, median of the rounds.
template <class Op>
double measure(const Op& op) {
  std::vector<double> per_call;
  long sum = 0;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < calls; ++i) op([&sum](result<int> v) { sum += *v; });
    auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start);
    per_call.push_back(ns.count() / static_cast<double>(calls));
  }
  if (sum != static_cast<long>(calls) * rounds) std::fprintf(stderr, "lost completions\n");
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--quick") == 0) {
      calls = 2'000;
      rounds = 1;
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    }
  otpp::set_log_level(otpp::log_level::warning);
  otpp::node node({.name = "bench_resilience", .threads = 1});
  node.start();

  res::retry retry(node);
  res::circuit_breaker breaker(node);
  res::rate_limiter limiter(node, {.capacity = 1'000'000'000, .refill = 1'000'000'000});
  res::timeout timeout(node, std::chrono::seconds(10));
  res::bulkhead bulkhead(node);
  res::fallback fallback([](const otpp::failure&) -> result<int> { return 0; });

  const double bare = measure(instant_op{});
  print("resilience.bare.ns_per_call", "ns", bare);
  auto overhead = [&](const char* name, const auto& op) {
    if (!only.empty() && only != name) return;
    print(std::string("resilience.") + name + ".overhead_ns", "ns", measure(op) - bare);
  };
  overhead("fallback", res::decorate(fallback, instant_op{}));
  overhead("retry", res::decorate(retry, instant_op{}));
  overhead("circuit_breaker", res::decorate(breaker, instant_op{}));
  overhead("rate_limiter", res::decorate(limiter, instant_op{}));
  overhead("timeout", res::decorate(timeout, instant_op{}));
  overhead("bulkhead", res::decorate(bulkhead, instant_op{}));

  res::pipeline all(fallback, retry, breaker, limiter, timeout, bulkhead);
  overhead("pipeline", all.decorate(instant_op{}));
  overhead("pipeline_execute",
           [&all](auto&& token) { return all.execute(instant_op{}, std::move(token)); });
  node.stop();
  return 0;
}
