// The registry over real OS processes: spawn by behaviour name, global names, process groups
// and remote monitors when a node process is SIGKILLed (otpp_test_node, process_support.hpp).
#include <gtest/gtest.h>

#include "cluster/process_support.hpp"

namespace {

using namespace otpp_test;
using namespace std::chrono_literals;

class registry_three_processes : public three_processes_fixture {
 protected:
  // Polls `command` on `p` until its answer (the first line after it starting with `prefix`)
  // is `expected`, at most `bound`.
  static bool answers(node_process* p, const std::string& command, const std::string& prefix,
                      const std::string& expected, std::chrono::seconds bound = 30s) {
    auto until = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < until) {
      auto l = p->proc->ask(command, prefix, 10s);
      if (l && *l == expected) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  static std::optional<std::string> spawn(node_process* from, const std::string& command,
                                          std::chrono::seconds bound = 60s) {
    auto from_line = from->proc->line_count();
    if (!from->proc->send(command)) return std::nullopt;
    return from->proc->wait_line(
        [](const std::string& l) {
          return l.rfind("spawned ", 0) == 0 || l.rfind("spawn error ", 0) == 0;
        },
        bound, from_line);
  }
  void kill_c() {
    ASSERT_TRUE(c->proc->kill(SIGKILL));
    for (auto* p : {a, b}) {
      ASSERT_TRUE(p->wait_event("node_down", c->id, 30s, c->creation)) << p->id;
    }
  }
};

TEST_F(registry_three_processes, SpawnByBehaviourNameOnEachNode) {
  for (auto* target : {a, b, c}) {
    auto r = spawn(a, "spawn " + target->id + " test_node.worker");
    ASSERT_TRUE(r) << a->proc->transcript();
    auto f = child_process::fields(*r);
    ASSERT_EQ(f.at(0), "spawned") << *r;
    EXPECT_EQ(f.at(1), target->id);
    EXPECT_EQ(f.at(2), std::to_string(target->creation));
    // The child answers calls from any node.
    auto reply = b->proc->ask("call " + f[1] + " " + f[2] + " " + f[3] + " hi", "reply ");
    ASSERT_TRUE(reply);
    EXPECT_EQ(child_process::fields(*reply).at(1), "spawned:hi");
  }
  auto unknown = spawn(a, "spawn " + c->id + " test_node.unknown");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(child_process::fields(*unknown).at(2), "unknown_behaviour") << *unknown;
}

TEST_F(registry_three_processes, SpawnToANodeKilledMidSpawnAnswersNodedown) {
  // The child's init takes 20 s; its node is killed meanwhile. The spawn's own timeout is 30 s:
  // the answer must be nodedown, from the lost connection.
  auto from = a->proc->line_count();
  ASSERT_TRUE(a->proc->send("spawn " + c->id + " test_node.worker 20000"));
  std::this_thread::sleep_for(300ms);  // the request is on its way or being served
  kill_c();
  auto r =
      a->proc->wait_line([](const std::string& l) { return l.rfind("spawn", 0) == 0; }, 25s, from);
  ASSERT_TRUE(r) << a->proc->transcript();
  EXPECT_EQ(child_process::fields(*r).at(2), "nodedown") << *r;
}

TEST_F(registry_three_processes, GlobalNameIsFreedWhenItsNodeIsKilled) {
  auto r = c->proc->ask("gregister svc", "gregister ", 30s);
  ASSERT_TRUE(r);
  ASSERT_EQ(*r, "gregister ok");
  for (auto* p : {a, b, c}) {
    EXPECT_TRUE(answers(p, "gwhereis svc", "gwhereis ", "gwhereis " + c->worker())) << p->id;
  }
  // Taken: another node's claim loses.
  auto lost = b->proc->ask("gregister svc", "gregister ", 30s);
  ASSERT_TRUE(lost);
  EXPECT_EQ(*lost, "gregister error already_registered");
  kill_c();
  for (auto* p : {a, b}) {
    EXPECT_TRUE(answers(p, "gwhereis svc", "gwhereis ", "gwhereis none")) << p->id;
  }
  // Free again: b takes it.
  auto again = b->proc->ask("gregister svc", "gregister ", 30s);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, "gregister ok");
  EXPECT_TRUE(answers(a, "gwhereis svc", "gwhereis ", "gwhereis " + b->worker()));
}

TEST_F(registry_three_processes, GroupMembersAreRightEverywhereAfterAMembersNodeIsKilled) {
  for (auto* p : {a, b, c}) {
    auto r = p->proc->ask("pjoin workers", "pjoin", 10s);
    ASSERT_TRUE(r);
    ASSERT_EQ(*r, "pjoined");
  }
  auto count_is = [&](node_process* p, const std::string& n) {
    auto until = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < until) {
      auto l = p->proc->ask("pmembers workers", "pmembers ", 10s);
      if (l && child_process::fields(*l).at(1) == n) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  };
  for (auto* p : {a, b, c}) EXPECT_TRUE(count_is(p, "3")) << p->id;
  kill_c();
  for (auto* p : {a, b}) {
    EXPECT_TRUE(count_is(p, "2")) << p->id;
    auto l = p->proc->ask("pmembers workers", "pmembers ", 10s);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->find(c->id), std::string::npos) << *l;
  }
}

TEST_F(registry_three_processes, RemoteMonitorFiresOnceWithNoconnectionWhenItsNodeIsKilled) {
  auto r = a->proc->ask("monitor " + c->worker(), "monitoring ", 10s);
  ASSERT_TRUE(r);
  kill_c();  // whether or not the monitor reached c: a's end fires noconnection
  auto down = a->proc->wait_prefix("down ", 30s);
  ASSERT_TRUE(down) << a->proc->transcript();
  EXPECT_EQ(*down, "down " + std::to_string(c->serial) + " noconnection");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(a->proc->count([](const std::string& l) { return l.rfind("down ", 0) == 0; }), 1u);
}

// A cluster singleton (supervisor layer) whose node is SIGKILLed moves to a survivor: exactly
// one holder before, one (another node's) after, agreed by every survivor.
TEST_F(registry_three_processes, SingletonMovesWhenItsNodeIsKilled) {
  for (auto* p : {a, b, c}) {
    auto r = p->proc->ask("singleton solo", "singleton ", 10s);
    ASSERT_TRUE(r);
    ASSERT_EQ(*r, "singleton ok") << p->id;
  }
  // One holder, the same everywhere.
  std::string holder;
  auto until = std::chrono::steady_clock::now() + 30s;
  while (holder.empty() && std::chrono::steady_clock::now() < until) {
    auto l = a->proc->ask("gwhereis solo", "gwhereis ", 10s);
    if (l && *l != "gwhereis none") holder = *l;
    if (holder.empty()) std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(holder.empty()) << "no node started the singleton";
  for (auto* p : {b, c}) EXPECT_TRUE(answers(p, "gwhereis solo", "gwhereis ", holder)) << p->id;
  node_process* owner = nullptr;
  for (auto* p : {a, b, c}) {
    if (child_process::fields(holder).at(1) == p->id) owner = p;
  }
  ASSERT_TRUE(owner);
  std::vector<node_process*> rest;
  for (auto* p : {a, b, c}) {
    if (p != owner) rest.push_back(p);
  }
  auto killed_at = now_us();
  ASSERT_TRUE(owner->proc->kill(SIGKILL));
  // A survivor takes over; both agree on it.
  std::string next;
  until = std::chrono::steady_clock::now() + 30s;
  while (next.empty() && std::chrono::steady_clock::now() < until) {
    auto l = rest[0]->proc->ask("gwhereis solo", "gwhereis ", 10s);
    if (l && *l != "gwhereis none" && *l != holder) next = *l;
    if (next.empty()) std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(next.empty()) << "nobody took the singleton over";
  std::cout << "[ measured ] singleton takeover seen " << (now_us() - killed_at) / 1000
            << " ms after SIGKILL of its node\n";
  EXPECT_NE(child_process::fields(next).at(1), owner->id);
  EXPECT_TRUE(answers(rest[1], "gwhereis solo", "gwhereis ", next));
  // The new instance answers calls.
  auto f = child_process::fields(next);
  auto reply = rest[1]->proc->ask("call " + f[1] + " " + f[2] + " " + f[3] + " hi", "reply ");
  ASSERT_TRUE(reply);
  EXPECT_EQ(child_process::fields(*reply).at(1), "spawned:hi");
}

}  // namespace
