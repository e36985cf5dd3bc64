// The distributed supervisor (supervisor layer) over real OS processes: children spread over 3
// node processes; a node SIGKILLed: its children come back on the survivors with their global
// names; the supervisor's own node SIGKILLed: the standby adopts the running children (same
// pids, same epochs) and restarts only the lost ones; a node's host joining late: a rebalance
// moves children to it, never two copies of one alive at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "cluster/process_support.hpp"

namespace {

using namespace otpp_test;
using namespace std::chrono_literals;

struct child_row {
  std::string node;
  std::string serial;
  std::string epoch;
  std::string state;
};

class distributed_three_processes : public three_processes_fixture {
 protected:
  // which_dist_children as rows by child id (empty if the supervisor does not answer).
  static std::map<std::string, child_row> children(node_process* p, const std::string& sup,
                                                   std::size_t* running = nullptr) {
    std::map<std::string, child_row> out;
    auto l = p->proc->ask("dchildren " + sup, "dchildren ", 20s);
    if (!l) return out;
    auto f = child_process::fields(*l);
    if (f.size() < 2 || f[1] == "error") return out;
    if (running) *running = std::stoul(f[1]);
    for (std::size_t i = 2; i < f.size(); ++i) {
      std::vector<std::string> parts;
      std::string part;
      std::istringstream in(f[i]);
      while (std::getline(in, part, ':')) parts.push_back(part);
      // id : node id (name@host:port, itself with a colon) : serial : epoch : state
      if (parts.size() != 6) continue;
      out[parts[0]] = {parts[1] + ":" + parts[2], parts[3], parts[4], parts[5]};
    }
    return out;
  }
  // Waits until `n` children run, none on `not_on`; answers them.
  static std::map<std::string, child_row> wait_running(node_process* p, const std::string& sup,
                                                       std::size_t n,
                                                       const std::string& not_on = {},
                                                       std::chrono::seconds bound = 60s) {
    auto until = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < until) {
      std::size_t running = 0;
      auto rows = children(p, sup, &running);
      bool clean = running == n;
      for (const auto& [id, r] : rows) clean = clean && (not_on.empty() || r.node != not_on);
      if (clean) return rows;
      std::this_thread::sleep_for(50ms);
    }
    return {};
  }
  void start_all(const std::string& sup, int n) {
    for (auto* p : {a, b, c}) {
      auto r = p->proc->ask("dsup " + sup + " " + std::to_string(n) + " 3", "dsup ", 30s);
      ASSERT_TRUE(r) << p->proc->transcript();
      ASSERT_EQ(*r, "dsup ok") << p->id;
    }
  }
  node_process* supervisor_node(const std::string& sup) {
    auto l = a->proc->ask("gwhereis otpp.dsup/" + sup, "gwhereis ", 10s);
    if (!l || *l == "gwhereis none") return nullptr;
    auto id = child_process::fields(*l).at(1);
    for (auto* p : {a, b, c}) {
      if (p->id == id) return p;
    }
    return nullptr;
  }
};

// OTPP_TEST_DSUP_CHILDREN (default 9, a multiple of 3) makes it a failover measurement.
int children_wanted() {
  const char* v = std::getenv("OTPP_TEST_DSUP_CHILDREN");
  return v ? std::max(3, std::atoi(v) / 3 * 3) : 9;
}

TEST_F(distributed_three_processes, ChildrenOfAKilledNodeComeBackOnTheSurvivors) {
  const int total = children_wanted();
  const auto n = static_cast<std::size_t>(total);
  start_all("jobs", total);
  auto rows = wait_running(a, "jobs", n);
  ASSERT_EQ(rows.size(), n) << a->proc->transcript();
  std::map<std::string, int> per_node;
  for (const auto& [id, r] : rows) ++per_node[r.node];
  for (auto* p : {a, b, c}) EXPECT_EQ(per_node[p->id], total / 3) << p->id << " (round robin)";
  // The victim: a node that does not run the supervisor process.
  auto* sup = supervisor_node("jobs");
  ASSERT_TRUE(sup);
  node_process* victim = sup == c ? b : c;
  node_process* other = nullptr;
  for (auto* p : {a, b, c}) {
    if (p != victim && p != sup) other = p;
  }
  std::set<std::string> lost;
  for (const auto& [id, r] : rows) {
    if (r.node == victim->id) lost.insert(id);
  }
  auto killed_at = now_us();
  ASSERT_TRUE(victim->proc->kill(SIGKILL));
  auto after = wait_running(sup, "jobs", n, victim->id);
  ASSERT_EQ(after.size(), n) << sup->proc->transcript();
  std::cout << "[ measured ] " << lost.size() << " children of a SIGKILLed node running again "
            << (now_us() - killed_at) / 1000 << " ms after the kill (as which_children shows)\n";
  // Every lost child answers by its global name again, from any survivor.
  for (const auto& id : lost) {
    bool answered = false;
    auto until = std::chrono::steady_clock::now() + 30s;
    while (!answered && std::chrono::steady_clock::now() < until) {
      auto r = other->answer("gcall jobs." + id + " hi", 10s);
      answered = r && r->rfind("reply spawned:hi", 0) == 0;
      if (!answered) std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(answered) << id;
  }
  std::cout << "[ measured ] " << lost.size()
            << " children of a SIGKILLed node running and answering by name "
            << (now_us() - killed_at) / 1000 << " ms after the kill\n";
  // The others did not move or restart.
  for (const auto& [id, r] : rows) {
    if (lost.count(id)) {
      EXPECT_NE(after[id].epoch, r.epoch) << id << " was restarted with a new epoch";
    } else {
      EXPECT_EQ(after[id].serial, r.serial) << id;
      EXPECT_EQ(after[id].epoch, r.epoch) << id;
    }
  }
}

TEST_F(distributed_three_processes, TheSupervisorsNodeKilledTheStandbyAdoptsTheRunningChildren) {
  start_all("pool", 6);
  auto rows = wait_running(a, "pool", 6);
  ASSERT_EQ(rows.size(), 6u) << a->proc->transcript();
  auto* sup = supervisor_node("pool");
  ASSERT_TRUE(sup);
  node_process* asker = sup == a ? b : a;
  auto killed_at = now_us();
  ASSERT_TRUE(sup->proc->kill(SIGKILL));
  auto after = wait_running(asker, "pool", 6, sup->id);
  ASSERT_EQ(after.size(), 6u) << asker->proc->transcript();
  std::cout << "[ measured ] supervisor taken over and its lost children restarted "
            << (now_us() - killed_at) / 1000 << " ms after SIGKILL of its node\n";
  for (const auto& [id, r] : rows) {
    if (r.node == sup->id) {
      EXPECT_NE(after[id].node, sup->id) << id;
    } else {
      // Adopted: the same process, the same epoch, not restarted.
      EXPECT_EQ(after[id].node, r.node) << id;
      EXPECT_EQ(after[id].serial, r.serial) << id;
      EXPECT_EQ(after[id].epoch, r.epoch) << id;
    }
  }
}

// The supervisor runs on a and b (6 children, 3 each); c starts its host later: nothing moves
// until rebalance_dist_supervisor, which moves one child from each to c (2/2/2). The children
// log their lives (child_up / child_down with the host's monotonic clock): a moved child's new
// copy starts only after the old one ended.
TEST_F(distributed_three_processes, RebalanceMovesChildrenToALateNodeNeverTwoCopies) {
  for (auto* p : {a, b}) {
    auto r = p->proc->ask("dsup pool 6 2", "dsup ", 30s);
    ASSERT_TRUE(r) << p->proc->transcript();
    ASSERT_EQ(*r, "dsup ok") << p->id;
  }
  auto rows = wait_running(a, "pool", 6);
  ASSERT_EQ(rows.size(), 6u) << a->proc->transcript();
  auto r = c->proc->ask("dsup pool 6 2", "dsup ", 30s);
  ASSERT_TRUE(r && *r == "dsup ok") << c->proc->transcript();
  // c's host is known where the supervisor runs (any node's replica: wait for all three).
  for (auto* p : {a, b, c}) {
    bool known = false;
    auto until = std::chrono::steady_clock::now() + 30s;
    while (!known && std::chrono::steady_clock::now() < until) {
      auto l = p->proc->ask("gwhereis otpp.dsup.host/pool/" + c->id, "gwhereis ", 10s);
      known = l && *l != "gwhereis none";
      if (!known) std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(known) << p->id << " does not know c's host";
  }
  for (const auto& [id, row] : children(a, "pool")) EXPECT_NE(row.node, c->id) << id;
  auto started = now_us();
  auto l = b->proc->ask("drebalance pool", "drebalance ", 90s);
  ASSERT_TRUE(l) << b->proc->transcript();
  auto f = child_process::fields(*l);
  ASSERT_GE(f.size(), 3u) << *l;
  ASSERT_EQ(f[1], "2") << *l;
  ASSERT_EQ(f[2], "0") << *l;
  ASSERT_EQ(f.size(), 3u + 2 * 3) << *l;
  std::set<std::string> from;
  std::set<std::string> moved;
  for (std::size_t i = 3; i + 2 < f.size(); i += 3) {
    moved.insert(f[i]);
    from.insert(f[i + 1]);
    EXPECT_EQ(f[i + 2], c->id) << *l;
  }
  EXPECT_EQ(from, (std::set<std::string>{a->id, b->id})) << *l;
  std::cout << "[ measured ] rebalance of 2 children to a late node: "
            << (now_us() - started) / 1000 << " ms\n";
  auto after = wait_running(a, "pool", 6);
  ASSERT_EQ(after.size(), 6u);
  std::map<std::string, int> per_node;
  for (const auto& [id, row] : after) ++per_node[row.node];
  for (auto* p : {a, b, c}) EXPECT_EQ(per_node[p->id], 2) << p->id;
  for (const auto& [id, row] : rows) {
    if (moved.count(id)) {
      EXPECT_EQ(after[id].node, c->id) << id;
      EXPECT_GT(std::stoull(after[id].epoch), std::stoull(row.epoch)) << id;
    } else {
      EXPECT_EQ(after[id].serial, row.serial) << id << " moved or restarted";
    }
  }
  // No two copies of a child alive at once (each process's log of its children's lives).
  struct life {
    long long up = 0, down = 0;
  };
  std::map<std::string, std::vector<life>> lives;
  const long long end = now_us();
  for (auto* p : {a, b, c}) {
    std::map<std::string, std::size_t> open;
    for (const auto& line : p->proc->lines()) {
      auto x = child_process::fields(line);
      if (x.size() < 3) continue;
      if (x[0] == "child_up") {
        open[x[1]] = lives[x[1]].size();
        lives[x[1]].push_back({std::stoll(x[2]), end});
      } else if (x[0] == "child_down" && open.count(x[1])) {
        lives[x[1]][open[x[1]]].down = std::stoll(x[2]);
        open.erase(x[1]);
      }
    }
  }
  ASSERT_EQ(lives.size(), 6u);
  for (auto& [label, ls] : lives) {
    EXPECT_EQ(ls.size(), moved.count(label) ? 2u : 1u) << label;
    std::sort(ls.begin(), ls.end(), [](const life& x, const life& y) { return x.up < y.up; });
    for (std::size_t k = 1; k < ls.size(); ++k) {
      EXPECT_LE(ls[k - 1].down, ls[k].up) << label << ": two copies alive at once";
    }
  }
}

}  // namespace
