// The examples of issue 13 end to end: each binary runs as a real OS process and the key lines of
// what it prints are checked (the examples check their own story and exit 1 on any failure;
// this checks that the story is the one the example's comment tells). example_embedding serves
// until signalled: these tests start two of them, the second joining through the first, and stop
// them with SIGTERM and SIGINT.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "cluster/process_support.hpp"

namespace {

using namespace std::chrono_literals;
using otpp_test::child_process;

// Starts `path` with `args`, `env` set for it (and only it).
std::unique_ptr<child_process> spawn(const std::string& path, const std::vector<std::string>& args,
                                     const std::map<std::string, std::string>& env = {}) {
  for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
  std::string error;
  auto p = child_process::spawn(path, args, path.substr(path.rfind('/') + 1), &error);
  for (const auto& [k, v] : env) ::unsetenv(k.c_str());
  EXPECT_TRUE(p) << error;
  return p;
}

// Waits (bounded) until the reader thread has all of its output: both pipes closed.
void drain(child_process& p) {
  (void)p.wait_line([](const std::string&) { return false; }, 10s);
}

struct finished {
  std::optional<int> code;
  std::vector<std::string> lines;
  std::string transcript;
};
// Runs an example that ends by itself, at most `bound`.
finished run(const std::string& path, std::chrono::seconds bound = 240s) {
  finished f;
  auto p = spawn(path, {});
  if (!p) return f;
  f.code = p->wait_exit(bound);
  drain(*p);
  f.lines = p->lines();
  f.transcript = p->transcript();
  for (const auto& l : f.lines) std::cout << "  | " << l << "\n";  // the story, in the log
  return f;
}

std::size_t count(const std::vector<std::string>& lines, const std::string& re) {
  std::regex pattern(re);
  std::size_t n = 0;
  for (const auto& l : lines) n += std::regex_match(l, pattern);
  return n;
}

std::string random_secret() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 32; ++i) s += "0123456789abcdef"[rd() % 16];
  return s;
}

// ---- embedding

// One example_embedding process, ready (its port was free: retried on another if it was taken
// meanwhile).
std::unique_ptr<child_process> start_app(const std::string& name, std::vector<std::string> args,
                                         const std::string& secret, std::string* id) {
  for (int attempt = 1; attempt <= 3; ++attempt) {
    *id = otpp_test::node_name(name, otpp_test::free_port());
    std::vector<std::string> all{"--node", *id};
    all.insert(all.end(), args.begin(), args.end());
    auto p = spawn(OTPP_EXAMPLE_EMBEDDING_PATH, all, {{"OTPP_SECRET", secret}});
    if (!p) return nullptr;
    if (p->wait_prefix("ready: node " + *id + " serves greeter." + name, 30s)) return p;
    auto code = p->wait_exit(10s);
    drain(*p);
    if (code == 2 && p->stderr_text().find("in use") != std::string::npos) continue;
    ADD_FAILURE() << name << " not ready\n" << p->transcript();
    return nullptr;
  }
  return nullptr;
}

TEST(Embedding, JoinsServesAndStopsGracefullyOnSigtermAndSigint) {
  auto secret = random_secret();
  std::string a_id, b_id;
  auto a = start_app("a", {}, secret, &a_id);
  ASSERT_TRUE(a);
  auto seed = a_id.substr(a_id.find('@') + 1);  // host:port, as a seed list names it
  auto b = start_app("b", {"--seeds", seed, "--call", "greeter.a"}, secret, &b_id);
  ASSERT_TRUE(b) << a->transcript();
  // b called a's service by its global name, over the cluster.
  auto called = b->wait_prefix("called greeter.a: ", 60s);
  ASSERT_TRUE(called) << b->transcript();
  EXPECT_EQ(*called, "called greeter.a: hello greeter.b, " + a_id + " greeted you 1 time(s)");
  ASSERT_TRUE(a->wait_prefix("node event: node_up " + b_id, 30s)) << a->transcript();

  // SIGTERM: b leaves (a sees a graceful leave, not a crash), its service terminates, exit 0.
  ASSERT_TRUE(b->kill(SIGTERM));
  EXPECT_EQ(b->wait_exit(60s), 0) << b->transcript();
  EXPECT_TRUE(b->wait_prefix("got SIGTERM: leaving the cluster", 10s)) << b->transcript();
  EXPECT_TRUE(b->wait_prefix("greeter: terminate (shutdown)", 10s)) << b->transcript();
  EXPECT_TRUE(b->wait_prefix("stopped", 10s)) << b->transcript();
  EXPECT_TRUE(a->wait_prefix("node event: node_down " + b_id + " (graceful_shutdown)", 30s))
      << a->transcript();

  // SIGINT (Ctrl-C) the same way.
  ASSERT_TRUE(a->kill(SIGINT));
  EXPECT_EQ(a->wait_exit(60s), 0) << a->transcript();
  EXPECT_TRUE(a->wait_prefix("got SIGINT: leaving the cluster", 10s)) << a->transcript();
  EXPECT_TRUE(a->wait_prefix("stopped", 10s)) << a->transcript();
}

TEST(Embedding, BadConfigurationExitsTwo) {
  auto p = spawn(OTPP_EXAMPLE_EMBEDDING_PATH, {"--seeds", "127.0.0.1:1"});  // no --node
  ASSERT_TRUE(p);
  EXPECT_EQ(p->wait_exit(30s), 2);
  drain(*p);
  EXPECT_NE(p->stderr_text().find("usage:"), std::string::npos) << p->transcript();

  // The node id from the environment; a secret too short to join with.
  auto id = otpp_test::node_name("c", otpp_test::free_port());
  p = spawn(OTPP_EXAMPLE_EMBEDDING_PATH, {}, {{"OTPP_NODE_ID", id}, {"OTPP_SECRET", "short"}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->wait_exit(30s), 2);
  drain(*p);
  EXPECT_NE(p->stderr_text().find(id + ": join_cluster: weak_secret"), std::string::npos)
      << p->transcript();
  EXPECT_TRUE(p->lines().empty()) << p->transcript();  // never ready
}

// Both nodes accept only AES-256-GCM records: they join and call each other over encrypted
// records; an unknown protection name is a configuration error.
TEST(Embedding, EncryptedRecordsAndABadProtectionName) {
  auto secret = random_secret();
  std::string a_id, b_id;
  auto a = start_app("a", {"--protection", "aes-256-gcm"}, secret, &a_id);
  ASSERT_TRUE(a);
  auto seed = a_id.substr(a_id.find('@') + 1);
  auto b = start_app("b", {"--seeds", seed, "--call", "greeter.a", "--protection", "aes-256-gcm"},
                     secret, &b_id);
  ASSERT_TRUE(b) << a->transcript();
  auto called = b->wait_prefix("called greeter.a: ", 60s);
  ASSERT_TRUE(called) << b->transcript();
  EXPECT_EQ(*called, "called greeter.a: hello greeter.b, " + a_id + " greeted you 1 time(s)");
  ASSERT_TRUE(b->kill(SIGTERM));
  EXPECT_EQ(b->wait_exit(60s), 0) << b->transcript();
  ASSERT_TRUE(a->kill(SIGTERM));
  EXPECT_EQ(a->wait_exit(60s), 0) << a->transcript();

  auto id = otpp_test::node_name("c", otpp_test::free_port());
  auto p = spawn(OTPP_EXAMPLE_EMBEDDING_PATH, {"--node", id, "--protection", "aes-128-cbc"},
                 {{"OTPP_SECRET", secret}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->wait_exit(30s), 2);
  drain(*p);
  EXPECT_NE(p->stderr_text().find("unknown record protection 'aes-128-cbc'"), std::string::npos)
      << p->transcript();
}

// --call of a name nobody holds: it says so (after its bounded wait for the name), serves on,
// and exits 1 at the stop.
TEST(Embedding, AFailedCallIsReportedAndExitsOne) {
  std::string id;
  auto p = start_app("d", {"--call", "greeter.nobody"}, random_secret(), &id);
  ASSERT_TRUE(p);
  auto failed = p->wait_prefix("call greeter.nobody FAILED: ", 60s);
  ASSERT_TRUE(failed) << p->transcript();
  EXPECT_EQ(*failed, "call greeter.nobody FAILED: noproc: no such process or name");
  ASSERT_TRUE(p->kill(SIGTERM));
  EXPECT_EQ(p->wait_exit(60s), 1) << p->transcript();
  EXPECT_TRUE(p->wait_prefix("stopped", 10s)) << p->transcript();
}

// ---- the examples that run their story by themselves

TEST(ClusterEvents, RefusesArguments) {
  auto p = spawn(OTPP_EXAMPLE_CLUSTER_EVENTS_PATH, {"--bogus"});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->wait_exit(30s), 2);
  drain(*p);
  EXPECT_NE(p->stderr_text().find("usage:"), std::string::npos) << p->transcript();
  EXPECT_TRUE(p->lines().empty()) << p->transcript();  // it started nothing
}

TEST(ClusterEvents, SurvivorsSeeUnreachableReachableDownAndLeave) {
  auto r = run(OTPP_EXAMPLE_CLUSTER_EVENTS_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  const auto& l = r.lines;
  // Each of the 3 saw the other 2 come up.
  for (const auto* n : {"a", "b", "c"}) {
    for (const auto* m : {"a", "b", "c"}) {
      if (std::string(n) == m) continue;
      EXPECT_EQ(count(l, std::string("  ") + n + " saw node_up " + m), 1u) << n << m;
    }
  }
  for (const auto* survivor : {"a", "b"}) {
    std::string s = survivor;
    EXPECT_GE(count(l, "  " + s + " saw node_unreachable c"), 1u) << r.transcript;
    EXPECT_GE(count(l, "  " + s + " saw node_reachable c"), 1u) << r.transcript;
    EXPECT_EQ(count(l, "  " + s + " saw node_down c \\(connection_closed\\)"), 1u) << r.transcript;
  }
  EXPECT_EQ(count(l, "  a saw node_down b \\(graceful_shutdown\\)"), 1u) << r.transcript;
  ASSERT_FALSE(l.empty());
  EXPECT_EQ(l.back(), "a and b exited 0");
}

TEST(CoroutineCall, QuotesCombineAwaitedRemoteCalls) {
  auto r = run(OTPP_EXAMPLE_COROUTINE_CALL_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  EXPECT_EQ(count(r.lines,
                  "nodes prices@127\\.0\\.0\\.1:\\d+ and shop@127\\.0\\.0\\.1:\\d+, "
                  "joined over TCP"),
            1u)
      << r.transcript;
  EXPECT_EQ(count(r.lines, "  total 930 cents"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "  total 750 cents, missing: caviar \\(no price\\)"), 1u)
      << r.transcript;
  EXPECT_EQ(r.lines.back(), "done");
}

TEST(Pubsub, EverySubscriberGetsWhatItShouldAndNoMore) {
  auto r = run(OTPP_EXAMPLE_PUBSUB_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  const auto& l = r.lines;
  EXPECT_EQ(count(l, "n2 publishes headline 1 to the 4 subscribers its replica lists"), 1u)
      << r.transcript;
  for (const auto* s : {"alice on n1", "bob on n2", "carol on n3", "dave on n3"}) {
    EXPECT_EQ(count(l, std::string("  ") + s + "@127\\.0\\.0\\.1:\\d+ got headline 1: .*"), 1u)
        << s << "\n"
        << r.transcript;
  }
  EXPECT_EQ(count(l, "n2 publishes headline 2 to the 2 subscribers its replica lists"), 1u)
      << r.transcript;
  EXPECT_EQ(count(l, "  (alice on n1|dave on n3)@127\\.0\\.0\\.1:\\d+ got headline 2: .*"), 2u)
      << r.transcript;
  EXPECT_EQ(count(l, "  (bob|carol) .* got headline 2: .*"), 0u) << r.transcript;
  EXPECT_EQ(l.back(), "done");
}

// ---- the earlier examples: the key lines of their stories.

TEST(OtpBasics, TellsItsStory) {
  auto r = run(OTPP_EXAMPLE_OTP_BASICS_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  EXPECT_EQ(count(r.lines, "second start: already_registered \\(holder <.*>\\)"), 1u)
      << r.transcript;
  EXPECT_EQ(count(r.lines, "apple: reserved, 2 left"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "pear: out of stock: pear"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "inventory stopped: ok"), 1u) << r.transcript;
}

TEST(Statem, TellsItsStory) {
  auto r = run(OTPP_EXAMPLE_STATEM_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  EXPECT_EQ(count(r.lines, "  locked -> open"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "  took in parcel (books|tea)"), 2u) << r.transcript;
  EXPECT_EQ(count(r.lines, "  open -> locked"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "locked again with 2 parcels inside"), 1u) << r.transcript;
}

TEST(SupervisionTree, TellsItsStory) {
  auto r = run(OTPP_EXAMPLE_SUPERVISION_TREE_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  EXPECT_EQ(count(r.lines, "fetcher exited: connection reset"), 1u) << r.transcript;
  EXPECT_EQ(count(r.lines, "  event: '(fetcher|parser)' restarted as <.*>"), 2u) << r.transcript;
  EXPECT_EQ(count(r.lines, "jobs counters: 1 exit\\(s\\), 2 restart\\(s\\)"), 1u) << r.transcript;
}

TEST(ClusterDemo, TellsItsStory) {
  auto r = run(OTPP_OTPP_DEMO_PATH);
  ASSERT_TRUE(r.code) << "still running\n" << r.transcript;
  ASSERT_EQ(*r.code, 0) << r.transcript;
  const auto& l = r.lines;
  EXPECT_EQ(count(l, "full mesh .* ms after the first start: .*"), 1u) << r.transcript;
  EXPECT_EQ(count(l, "alice calls bob's counter: add 5 -> 5"), 1u) << r.transcript;
  EXPECT_EQ(count(l,
                  "carol casts add 1 to alice's counter 1000 times, then calls it: add 0 -> "
                  "1000"),
            1u)
      << r.transcript;
  EXPECT_EQ(count(l, "bob calls counter.carol by global name: add 3 -> 3"), 1u) << r.transcript;
  EXPECT_EQ(count(l, "carol calls counter.bob by global name: add 4 -> 4"), 1u) << r.transcript;
  EXPECT_EQ(count(l, "  (alice|bob): node_down carol, reason connection_closed, .*"), 2u)
      << r.transcript;
  EXPECT_EQ(count(l, "  alice: monitor of counter.carol fired: down noconnection, .*"), 1u)
      << r.transcript;
  EXPECT_EQ(count(l, "alice calls the old counter <.*> -> noproc .*"), 1u) << r.transcript;
  EXPECT_EQ(count(l, "carol, bob, alice quit in turn: .*all exited 0"), 1u) << r.transcript;
  EXPECT_EQ(count(l, "done in .* s"), 1u) << r.transcript;
}

}  // namespace
