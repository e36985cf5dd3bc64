// examples/worker_pool end to end: the real binary, its 3 node processes, the SIGKILL and the
// failover. The director checks every step itself and exits 1 on any failure; this test checks
// its exit code and that the story it prints says what happened (placement, the kill, where
// the lost workers went, the graceful stop), and that a failing run leaves no process behind.
#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "cluster/process_support.hpp"

namespace {

using namespace std::chrono_literals;
using otpp_test::child_process;

struct run {
  std::optional<int> code;
  std::vector<std::string> lines;
  std::string err;
  std::string transcript;
};

// Runs the example with `args`, `env` set for it (and only it), waiting at most `bound`.
run run_example(const std::vector<std::string>& args = {},
                const std::map<std::string, std::string>& env = {},
                std::chrono::seconds bound = 240s) {
  for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
  std::string error;
  auto p = child_process::spawn(OTPP_WORKER_POOL_PATH, args, "otpp_worker_pool", &error);
  for (const auto& [k, v] : env) ::unsetenv(k.c_str());
  run r;
  if (!p) {
    r.err = error;
    return r;
  }
  r.code = p->wait_exit(bound);
  // The reader thread has all of it once both pipes closed: wait for the last line.
  (void)p->wait_line([](const std::string&) { return false; }, 10s);
  r.lines = p->lines();
  r.err = p->stderr_text();
  r.transcript = p->transcript();
  return r;
}

// The lines matching `re`, with their groups.
std::vector<std::smatch> matching(const std::vector<std::string>& lines, const std::string& re) {
  std::vector<std::smatch> out;
  std::regex pattern(re);
  for (const auto& l : lines) {
    std::smatch m;
    if (std::regex_match(l, m, pattern)) out.push_back(m);
  }
  return out;
}

TEST(WorkerPool, KillsANodeAndItsWorkersComeBackOnTheSurvivors) {
  auto r = run_example();
  ASSERT_TRUE(r.code.has_value()) << "still running after 240 s\n" << r.transcript;
  for (const auto& l : r.lines) std::cout << "  | " << l << "\n";  // the story, in the log
  ASSERT_EQ(*r.code, 0) << r.transcript;
  const auto& lines = r.lines;

  // Placement: round robin, 4 workers per node, none on the director.
  auto placed = matching(lines, R"(  (n[123]) runs((?: w\d+)+))");
  ASSERT_EQ(placed.size(), 3u) << r.transcript;
  std::map<std::string, std::set<std::string>> on;
  for (const auto& m : placed) {
    std::istringstream in(m[2].str());
    for (std::string w; in >> w;) on[m[1]].insert(w);
  }
  for (const auto& [node, ws] : on) EXPECT_EQ(ws.size(), 4u) << node;
  ASSERT_EQ(matching(lines, R"(round 1: 12 jobs .*n1 served 4, n2 served 4, n3 served 4)").size(),
            1u)
      << r.transcript;

  // The kill, and the supervisor's node noticing it as a closed connection.
  auto kill = matching(
      lines, R"(kill -9 (n[123]) \(OS pid \d+\): it runs 4 workers but not the supervisor .*)");
  ASSERT_EQ(kill.size(), 1u) << r.transcript;
  std::string victim = kill[0][1];
  auto noticed = matching(lines, R"(  after +([0-9.]+) ms: (n[123]) \(the supervisor's node\) saw )"
                                 R"(node_down (n[123]), reason connection_closed)");
  ASSERT_EQ(noticed.size(), 1u) << r.transcript;
  EXPECT_NE(noticed[0][2], victim);
  EXPECT_EQ(noticed[0][3], victim);
  // Generous bounds only (a loaded machine): the story's own timings are positive and finite.
  for (const auto* re :
       {R"(  after +([0-9.]+) ms: the supervisor lists all 12 workers running again, )"
        R"(none on n[123])",
        R"(  after +([0-9.]+) ms: every lost worker answers by its global name again)"}) {
    auto m = matching(lines, re);
    ASSERT_EQ(m.size(), 1u) << re << "\n" << r.transcript;
    EXPECT_GT(std::stod(m[0][1]), 0.0);
    EXPECT_LT(std::stod(m[0][1]), 60000.0);
  }

  // Exactly the victim's workers moved, to the survivors, with a higher epoch.
  std::set<std::string> moved;
  for (const auto& m : matching(lines, R"(  moved to (n[123]): (.*))")) {
    EXPECT_NE(m[1], victim);
    // "(epoch 1 -> 3, after 1 failed start)": a restart may be retried (its target had not yet
    // seen the node go and still held the dead worker's name).
    std::regex entry(R"((w\d+) \(epoch (\d+) -> (\d+)(, after \d+ failed starts?)?\))");
    std::string list = m[2];
    for (std::sregex_iterator it(list.begin(), list.end(), entry), end; it != end; ++it) {
      moved.insert((*it)[1]);
      EXPECT_GT(std::stoul((*it)[3]), std::stoul((*it)[2])) << (*it)[0];
    }
  }
  EXPECT_EQ(moved, on[victim]) << r.transcript;
  EXPECT_EQ(
      matching(lines, R"(  the other 8 kept their process \(same pid, same epoch\): .*)").size(),
      1u)
      << r.transcript;

  // Round 2 on the survivors only (6 each unless a retried restart changed the round robin);
  // then the graceful stop.
  auto round2 =
      matching(lines, R"(round 2: 12 jobs in [0-9.]+ ms: (n[123]) served (\d+), )"
                      R"((n[123]) served (\d+); the 8 that stayed count their 2nd job .*)");
  ASSERT_EQ(round2.size(), 1u) << r.transcript;
  EXPECT_NE(round2[0][1], victim);
  EXPECT_NE(round2[0][3], victim);
  EXPECT_EQ(std::stoi(round2[0][2]) + std::stoi(round2[0][4]), 12) << r.transcript;
  EXPECT_EQ(matching(lines, R"(SIGTERM to n[123] and n[123]: both left the cluster )"
                            R"(\(graceful_shutdown\) and exited 0)")
                .size(),
            1u)
      << r.transcript;
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(std::regex_match(lines.back(), std::regex(R"(done in [0-9.]+ s)"))) << lines.back();
  EXPECT_TRUE(matching(lines, ".*FAILED.*").empty()) << r.transcript;
}

// A bound that expires (patience 0: every wait gives up at once) is a failure like any other:
// the director says what it waited for, kills its node processes, reaps them and exits 1.
TEST(WorkerPool, AFailedWaitKillsTheNodesAndExitsOne) {
  auto r = run_example({}, {{"OTPP_WORKER_POOL_PATIENCE", "0"}}, 60s);
  ASSERT_TRUE(r.code.has_value()) << r.transcript;
  EXPECT_EQ(*r.code, 1) << r.transcript;
  EXPECT_EQ(matching(r.lines, R"(worker_pool FAILED: n1 did not report ready within 0 s)").size(),
            1u)
      << r.transcript;
  auto killed = matching(r.lines, R"(killed its node processes \(OS pids((?: \d+)+)\))");
  ASSERT_EQ(killed.size(), 1u) << r.transcript;
  std::istringstream pids(killed[0][1].str());
  int count = 0;
  for (pid_t p; pids >> p; ++count) {
    EXPECT_EQ(::kill(p, 0), -1) << "node process " << p << " is still there";
    EXPECT_EQ(errno, ESRCH) << p;
  }
  EXPECT_EQ(count, 3) << "all three nodes were started before the first wait";
}

// Nodes that die before they are ready (here: a secret too short to join with) are a failure
// too: the director says which and how it ended, kills the others and exits 1.
TEST(WorkerPool, ANodeThatDiesEarlyFailsTheRun) {
  auto r = run_example({}, {{"OTPP_WORKER_POOL_SECRET", "short"}}, 60s);
  ASSERT_TRUE(r.code.has_value()) << r.transcript;
  EXPECT_EQ(*r.code, 1) << r.transcript;
  EXPECT_EQ(
      matching(r.lines, R"(worker_pool FAILED: n1 exited \(code 2\) before it reported ready)")
          .size(),
      1u)
      << r.transcript;
  EXPECT_NE(r.err.find("join_cluster: weak_secret"), std::string::npos) << r.err;
  auto killed = matching(r.lines, R"(killed its node processes \(OS pids((?: \d+)+)\))");
  ASSERT_EQ(killed.size(), 1u) << r.transcript;
  std::istringstream pids(killed[0][1].str());
  for (pid_t p; pids >> p;) EXPECT_EQ(::kill(p, 0), -1) << "node process " << p << " remains";
}

TEST(WorkerPool, RefusesArgumentsAndABadPatience) {
  auto r = run_example({"--bogus"}, {}, 30s);
  ASSERT_TRUE(r.code.has_value());
  EXPECT_EQ(*r.code, 2);
  EXPECT_NE(r.err.find("usage:"), std::string::npos) << r.err;

  r = run_example({}, {{"OTPP_WORKER_POOL_PATIENCE", "slow"}}, 30s);
  ASSERT_TRUE(r.code.has_value());
  EXPECT_EQ(*r.code, 2);
  EXPECT_NE(r.err.find("OTPP_WORKER_POOL_PATIENCE must be a factor from 0 to 100, not 'slow'"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(r.lines.empty()) << r.transcript;  // it started nothing
}

// A node that cannot join says why on stderr and exits 2 (the director then reports that it
// exited before it was ready).
TEST(WorkerPool, ANodeThatCannotJoinExitsTwo) {
  auto id = otpp_test::node_name("n1", otpp_test::free_port());
  auto r = run_example({"--node", id, otpp_test::node_name("n2", otpp_test::free_port())},
                       {{"OTPP_WORKER_POOL_SECRET", "short"}}, 30s);
  ASSERT_TRUE(r.code.has_value());
  EXPECT_EQ(*r.code, 2) << r.transcript;
  EXPECT_NE(r.err.find(id + ": join_cluster: weak_secret"), std::string::npos) << r.err;
  EXPECT_TRUE(r.lines.empty()) << r.transcript;  // never ready
}

}  // namespace
