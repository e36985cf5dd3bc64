// The `otpp` tool against a live cluster of three otpp_test_node processes: every command, its
// text and JSON output, and each error exit code (not reachable, not authorised, no such
// process, timeout, bad input).
#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/process_support.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

struct cli_run {
  int code = -1;
  std::string out;  // stdout, lines joined by '\n'
  std::string err;
  json parsed() const {
    try {
      return json::parse(out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON (" << e.what() << "):\n" << out << "\nstderr: " << err;
      return json();
    }
  }
};

class cli_fixture : public three_processes_fixture {
 protected:
  // Runs `otpp args...` with the cluster's secret; bounded.
  cli_run run(std::vector<std::string> args, bool with_secret = true) {
    if (with_secret) args.insert(args.begin(), {"--secret", test_secret});
    std::string error;
    auto p = child_process::spawn(OTPP_CLI_PATH, args, "otpp", &error);
    cli_run r;
    if (!p) {
      ADD_FAILURE() << "cannot start otpp: " << error;
      return r;
    }
    auto code = p->wait_exit(60s);
    if (!code) {
      ADD_FAILURE() << "otpp did not end in 60 s:\n" << p->transcript();
      return r;
    }
    (void)p->wait_line([](const std::string&) { return false; }, 5s);  // until stdout closes
    r.code = *code;
    for (const auto& l : p->lines()) r.out += (r.out.empty() ? "" : "\n") + l;
    r.err = p->stderr_text();
    EXPECT_FALSE(has_sanitizer_report(r.err)) << r.err;
    return r;
  }
  static std::string pid_of(const node_process* n) {
    return "<" + n->id + "." + std::to_string(n->creation) + "." + std::to_string(n->serial) + ">";
  }
};

TEST_F(cli_fixture, PingAnswersWithTheNodesIdentity) {
  auto r = run({"ping", a->id});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pong from " + a->id), std::string::npos) << r.out;

  auto j = run({"--json", "ping", a->id});
  ASSERT_EQ(j.code, 0) << j.err;
  auto v = j.parsed();
  EXPECT_EQ(v["id"], a->id);
  EXPECT_EQ(v["creation"], a->creation);
  EXPECT_EQ(v["members"], 3);
  EXPECT_GE(v["processes"].get<int>(), 2);
  EXPECT_NE(v["behaviours"].dump().find("test_node.worker"), std::string::npos) << v.dump();

  // host:port works as well: the id is learned from the connection.
  auto by_address = run({"--json", "ping", "127.0.0.1:" + std::to_string(port_of(b))});
  ASSERT_EQ(by_address.code, 0) << by_address.err;
  EXPECT_EQ(by_address.parsed()["id"], b->id);
}

TEST_F(cli_fixture, NodesListsTheMembersButNeverTheTool) {
  auto r = run({"--json", "--node", b->id, "nodes"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto v = r.parsed();
  ASSERT_TRUE(v.is_array());
  ASSERT_EQ(v.size(), 3u) << v.dump();
  for (const auto& m : v) {
    EXPECT_EQ(m["status"], "up") << m.dump();
    EXPECT_TRUE(m["reachable"].get<bool>()) << m.dump();
    EXPECT_EQ(m["id"].get<std::string>().find("otpp-cli"), std::string::npos) << m.dump();
  }
  auto text = run({"--node", b->id, "nodes"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("NODE"), std::string::npos);
  EXPECT_NE(text.out.find(c->id), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("otpp-cli"), std::string::npos) << text.out;
}

TEST_F(cli_fixture, RegistryAndGroupsShowWhatTheClusterHolds) {
  ASSERT_EQ(a->proc->ask("gregister cli.svc", "gregister ").value_or(""), "gregister ok");
  ASSERT_EQ(b->proc->ask("pjoin cli.group", "pjoined").value_or(""), "pjoined");
  // Replication is asynchronous: c may hear of them a moment later.
  json names, groups;
  for (int i = 0; i < 100; ++i) {
    names = run({"--json", "--node", c->id, "registry"}).parsed();
    groups = run({"--json", "--node", c->id, "groups"}).parsed();
    if (names.dump().find("cli.svc") != std::string::npos &&
        groups.dump().find("cli.group") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(names.is_array()) << names.dump();
  bool found = false;
  for (const auto& g : names) {
    if (g["name"] == "cli.svc") {
      found = true;
      EXPECT_EQ(g["pid"], pid_of(a));
      EXPECT_EQ(g["node"], a->id);
    }
  }
  EXPECT_TRUE(found) << names.dump();
  found = false;
  for (const auto& g : groups) {
    if (g["group"] == "cli.group") {
      found = true;
      ASSERT_EQ(g["members"].size(), 1u);
      EXPECT_EQ(g["members"][0], pid_of(b));
    }
  }
  EXPECT_TRUE(found) << groups.dump();
  auto text = run({"--node", c->id, "registry"});
  ASSERT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("cli.svc"), std::string::npos) << text.out;
}

TEST_F(cli_fixture, ProcessesListsNamesMailboxesAndSorts) {
  ASSERT_EQ(a->proc->ask("gregister cli.named", "gregister ").value_or(""), "gregister ok");
  auto r = run({"--json", "processes", a->id, "--sort", "handled"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto v = r.parsed();
  ASSERT_GE(v["total"].get<int>(), 2) << v.dump();
  ASSERT_EQ(v["processes"].size(), v["total"].get<std::size_t>());
  bool worker = false;
  std::uint64_t last = UINT64_MAX;
  for (const auto& p : v["processes"]) {
    auto handled = p["handled"].get<std::uint64_t>();
    EXPECT_LE(handled, last) << "not sorted by handled: " << v.dump();
    last = handled;
    if (p["pid"] == pid_of(a)) {
      worker = true;
      EXPECT_EQ(p["names"], json::array({"worker"})) << p.dump();
      EXPECT_EQ(p["global_names"], json::array({"cli.named"})) << p.dump();
      EXPECT_EQ(p["mailbox"], 0) << p.dump();
      EXPECT_GT(p["memory"].get<int>(), 0) << p.dump();
    }
  }
  EXPECT_TRUE(worker) << v.dump();

  auto limited = run({"--json", "processes", a->id, "--limit", "1"});
  ASSERT_EQ(limited.code, 0) << limited.err;
  EXPECT_EQ(limited.parsed()["processes"].size(), 1u);

  auto text = run({"processes", a->id});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("MAILBOX"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("{global,cli.named}"), std::string::npos) << text.out;

  auto bad_sort = run({"processes", a->id, "--sort", "colour"});
  EXPECT_EQ(bad_sort.code, 2) << bad_sort.out << bad_sort.err;
}

TEST_F(cli_fixture, TopRefreshesThenEnds) {
  auto r = run({"top", a->id, "--iterations", "2", "--interval", "100", "--sort", "mailbox"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::size_t headers = 0;
  for (auto at = r.out.find("otpp top"); at != std::string::npos;
       at = r.out.find("otpp top", at + 1)) {
    ++headers;
  }
  EXPECT_EQ(headers, 2u) << r.out;
  EXPECT_NE(r.out.find(pid_of(a)), std::string::npos) << r.out;
}

TEST_F(cli_fixture, CallAndCastByGlobalNameAndByPid) {
  ASSERT_EQ(a->proc->ask("gregister cli.echo", "gregister ").value_or(""), "gregister ok");
  // By global name, through c (it resolves the name there; the process lives on a).
  std::string reply;
  for (int i = 0; i < 100 && reply.empty(); ++i) {
    auto r = run({"--node", c->id, "call", "cli.echo", R"({"type":"test_node.echo","text":"hi"})"});
    if (r.code == 0) reply = r.out;
    if (r.code != 0 && r.code != 5) FAIL() << r.code << " " << r.err;
    if (reply.empty()) std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(reply, "\"echo:hi\"");
  // By pid, through b.
  auto by_pid =
      run({"--node", b->id, "call", pid_of(a), R"({"type":"test_node.echo","text":"x"})"});
  ASSERT_EQ(by_pid.code, 0) << by_pid.err;
  EXPECT_EQ(by_pid.out, "\"echo:x\"");
  // By a local name of the node asked.
  auto local = run({"--node", a->id, "call", "worker", R"({"type":"test_node.get_count"})"});
  ASSERT_EQ(local.code, 0) << local.err;
  EXPECT_EQ(local.out, "0");
  // A cast, then a call sees its effect (one sender: in order).
  auto cast = run({"--node", a->id, "cast", "worker", R"({"type":"test_node.bump","by":5})"});
  ASSERT_EQ(cast.code, 0) << cast.err;
  EXPECT_EQ(cast.out, "ok");
  std::string count;
  for (int i = 0; i < 50 && count != "5"; ++i) {
    count = run({"--node", a->id, "call", "worker", R"({"type":"test_node.get_count"})"}).out;
    if (count != "5") std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(count, "5");
  auto as_json =
      run({"--json", "--node", a->id, "call", "worker", R"({"type":"test_node.get_count"})"});
  ASSERT_EQ(as_json.code, 0);
  EXPECT_EQ(as_json.parsed(), json(5));
}

TEST_F(cli_fixture, SpawnByBehaviourThenCallIt) {
  auto r = run({"spawn", b->id, "test_node.worker", R"({"init_ms":0,"label":""})", "--global-name",
                "cli.spawned"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.out.rfind("<" + b->id + ".", 0), 0u) << r.out;
  auto call =
      run({"--node", b->id, "call", "cli.spawned", R"({"type":"test_node.echo","text":"s"})"});
  ASSERT_EQ(call.code, 0) << call.err;
  EXPECT_EQ(call.out, "\"spawned:s\"");
  // The processes listing shows its behaviour.
  auto list = run({"--json", "processes", b->id}).parsed();
  bool seen = false;
  for (const auto& p : list["processes"]) {
    if (p["pid"] == r.out) {
      seen = true;
      EXPECT_EQ(p["behaviour"], "test_node.worker") << p.dump();
    }
  }
  EXPECT_TRUE(seen) << list.dump();
  // This behaviour takes arguments: none at all do not decode into them (bad input).
  auto no_args = run({"spawn", c->id, "test_node.worker"});
  EXPECT_EQ(no_args.code, 2) << no_args.out << no_args.err;
  EXPECT_NE(no_args.err.find("arguments"), std::string::npos) << no_args.err;
  auto empty_args = run({"--json", "spawn", c->id, "test_node.worker", "{}"});
  ASSERT_EQ(empty_args.code, 0) << empty_args.err;  // an empty map: every field's default
  EXPECT_NE(empty_args.parsed()["pid"].get<std::string>().find(c->id), std::string::npos);
}

TEST_F(cli_fixture, EachErrorHasItsExitCode) {
  // Not reachable: nothing listens there.
  auto nobody = run({"--timeout", "1000", "ping", node_name("nobody", free_port())});
  EXPECT_EQ(nobody.code, 3) << nobody.out << nobody.err;
  EXPECT_NE(nobody.err.find("not reachable"), std::string::npos) << nobody.err;
  // Another node answers at that address: said at once.
  auto typo = run({"ping", "zz@127.0.0.1:" + std::to_string(port_of(a))});
  EXPECT_EQ(typo.code, 3) << typo.out << typo.err;
  EXPECT_NE(typo.err.find("the node at that address is " + a->id), std::string::npos) << typo.err;
  // Not authorised: a wrong secret.
  auto wrong = run({"--secret", "ffffffffffffffffffffffffffffffff", "ping", a->id}, false);
  EXPECT_EQ(wrong.code, 4) << wrong.out << wrong.err;
  EXPECT_NE(wrong.err.find("not authorised"), std::string::npos) << wrong.err;
  // A secret too short to be one is bad input.
  auto weak = run({"--secret", "short", "ping", a->id}, false);
  EXPECT_EQ(weak.code, 2) << weak.err;
  // No such process: an unknown name, a dead pid, an unknown behaviour.
  auto unknown = run({"--node", a->id, "call", "cli.nobody", R"({"type":"test_node.echo"})"});
  EXPECT_EQ(unknown.code, 5) << unknown.out << unknown.err;
  auto dead =
      run({"--node", a->id, "call", "<" + a->id + "." + std::to_string(a->creation) + ".999999>",
           R"({"type":"test_node.echo","text":"x"})"});
  EXPECT_EQ(dead.code, 5) << dead.out << dead.err;
  auto behaviour = run({"spawn", a->id, "test_node.unknown"});
  EXPECT_EQ(behaviour.code, 5) << behaviour.out << behaviour.err;
  // Timeout: a call the callee never answers.
  auto stalled =
      run({"--timeout", "500", "--node", a->id, "call", "worker", R"({"type":"test_node.stall"})"});
  EXPECT_EQ(stalled.code, 6) << stalled.out << stalled.err;
  // Bad input: JSON that does not parse, a message without a type, arguments that do not fit,
  // a pid that is no pid, an unknown command, a missing node.
  auto bad_json = run({"--node", a->id, "call", "worker", R"({"type":)"});
  EXPECT_EQ(bad_json.code, 2) << bad_json.err;
  EXPECT_NE(bad_json.err.find("not valid JSON"), std::string::npos) << bad_json.err;
  auto no_type = run({"--node", a->id, "call", "worker", R"({"text":"x"})"});
  EXPECT_EQ(no_type.code, 2) << no_type.err;
  auto wrong_fields =
      run({"--node", a->id, "call", "worker", R"({"type":"test_node.echo","text":5})"});
  EXPECT_EQ(wrong_fields.code, 2) << wrong_fields.out << wrong_fields.err;
  auto bad_args = run({"spawn", a->id, "test_node.worker", R"({"init_ms":"soon"})"});
  EXPECT_EQ(bad_args.code, 2) << bad_args.out << bad_args.err;
  auto bad_pid = run({"--node", a->id, "call", "<garbage>", R"({"type":"test_node.echo"})"});
  EXPECT_EQ(bad_pid.code, 2) << bad_pid.out << bad_pid.err;
  auto unknown_command = run({"frobnicate"});
  EXPECT_EQ(unknown_command.code, 2);
  auto no_node = run({"registry"});
  EXPECT_EQ(no_node.code, 2) << no_node.err;
  // --json errors are JSON too.
  auto json_error = run({"--json", "--node", a->id, "call", "cli.nobody", R"({"type":"x"})"});
  EXPECT_EQ(json_error.code, 5);
  EXPECT_EQ(json_error.parsed()["exit_code"], 5);
  // Help works for every command and exits 0.
  for (const char* command : {"ping", "nodes", "registry", "groups", "processes", "top", "call",
                              "cast", "spawn", "stop"}) {
    auto help = run({command, "--help"});
    EXPECT_EQ(help.code, 0) << command;
    EXPECT_NE(help.out.find("Usage"), std::string::npos) << command << ": " << help.out;
  }
  // Nothing above disturbed the cluster.
  EXPECT_EQ(a->members_up(), 3);
}

TEST_F(cli_fixture, StopMakesTheNodeLeaveGracefully) {
  auto r = run({"stop", c->id});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("is stopping"), std::string::npos) << r.out;
  ASSERT_TRUE(c->proc->wait_prefix("stopped", 30s)) << c->proc->transcript();
  auto down = a->wait_event("node_down", c->id, 30s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->reason, "graceful_shutdown");
  EXPECT_EQ(c->proc->wait_exit(30s), 0);
  // It is gone: the tool says so.
  auto again = run({"--timeout", "1000", "ping", c->id});
  EXPECT_EQ(again.code, 3) << again.out << again.err;
}

TEST_F(cli_fixture, CompletionScriptNamesTheCommands) {
  auto r = run({"completion"}, false);
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("complete -F _otpp otpp"), std::string::npos);
  EXPECT_NE(r.out.find("processes"), std::string::npos);
}

}  // namespace
}  // namespace otpp_test
