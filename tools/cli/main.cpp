// otpp: inspects and drives a live otpp cluster from a shell (Erlang's erl_call and observer).
// It joins as a hidden node (listed by no member, runs no user process) with the cluster's
// secret, asks one node through the introspection service every node serves
// (otpp/registry/introspect.hpp), prints the answer and leaves.
//
//   otpp ping api@127.0.0.1:4370
//   OTPP_NODE=api@127.0.0.1:4370 otpp registry --json
//   otpp call --node api@127.0.0.1:4370 counter '{"type":"get"}'
//
// Exit codes (scripts rely on them): 0 ok, 1 another error, 2 bad input (usage, JSON),
// 3 not reachable, 4 not authorised (wrong secret, or the node refuses), 5 no such process,
// name or behaviour, 6 timeout.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include "otpp/cluster/cluster.hpp"
#include "otpp/log.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/registry/introspect.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

namespace {

using json = nlohmann::ordered_json;
using millis = std::chrono::milliseconds;

enum exit_code : int {
  ok = 0,
  other_error = 1,
  bad_input = 2,
  not_reachable = 3,
  not_authorised = 4,
  no_such_process = 5,
  timed_out = 6,
};

int exit_code_of(const std::error_code& e) {
  if (e.category() != otpp::error_category()) return other_error;
  switch (static_cast<otpp::errc>(e.value())) {
    case otpp::errc::nodedown:
    case otpp::errc::connection_refused:
    case otpp::errc::connection_closed:
    case otpp::errc::node_stopped:
    case otpp::errc::handshake_failed:
      return not_reachable;
    case otpp::errc::not_authorised:
      return not_authorised;
    case otpp::errc::noproc:
    case otpp::errc::unknown_behaviour:
    case otpp::errc::not_found:
      return no_such_process;
    case otpp::errc::timeout:
      return timed_out;
    case otpp::errc::invalid_argument:
    case otpp::errc::bad_message:
    case otpp::errc::weak_secret:
      return bad_input;
    default:
      return other_error;
  }
}

struct settings {
  std::string node;  // the node to ask (--node, OTPP_NODE, or a command's NODE)
  std::string secret;
  std::string cookie;
  std::string name;  // this tool's node id
  int timeout_ms = 5000;
  bool json_output = false;
  bool verbose = false;
};

// An error the tool reports: a message and its exit code.
struct fatal {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message) {
  throw fatal{code, std::move(message)};
}
[[noreturn]] void fail(const otpp::failure& f, std::string_view what) {
  fail(exit_code_of(f.code), std::string(what) + ": " + f.message());
}

// msgpack <-> JSON through nlohmann's msgpack codec (both are the same data model).
json to_json(const msgpack::object& o) {
  msgpack::sbuffer buffer;
  msgpack::pack(buffer, o);
  return json::from_msgpack(buffer.data(), buffer.data() + buffer.size());
}
template <class T>
json to_json_value(const T& value) {
  msgpack::sbuffer buffer;
  msgpack::pack(buffer, value);
  return json::from_msgpack(buffer.data(), buffer.data() + buffer.size());
}
msgpack::object_handle to_msgpack(const json& j) {
  auto bytes = json::to_msgpack(j);
  return msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}
json parse_json(const std::string& text, std::string_view what) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(bad_input, std::string(what) + " is not valid JSON: " + e.what());
  }
}

// A port nobody listens on now, for this tool's own (never dialled) listener.
std::uint16_t free_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

std::string human_duration(std::int64_t ms) {
  if (ms < 1000) return std::to_string(ms) + "ms";
  auto s = ms / 1000;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string((s % 3600) / 60) + "m";
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::cout << out << '\n';
  };
  line(header);
  for (const auto& r : rows) line(r);
}

std::string joined(const std::vector<std::string>& v, std::string_view sep = ",") {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// The hidden node this run talks through: connected to one node, or exits with why not.
class session {
 public:
  session(const settings& s, const std::string& target) : settings_(s), target_(target) {
    if (target.empty()) {
      fail(bad_input, "no node given: pass NODE, --node, or set OTPP_NODE");
    }
    if (!s.verbose) otpp::set_log_level(otpp::log_level::off);
    std::string self = s.name;
    if (self.empty()) {
      self = "otpp-cli-" + std::to_string(::getpid()) + "@127.0.0.1:" + std::to_string(free_port());
    }
    node_ = std::make_unique<otpp::node>(otpp::node_options{.name = self, .threads = 2});
    node_->start();
    otpp::cluster::options o;
    o.seeds = {target};
    o.hidden = true;
    o.transport.secret = s.secret;
    o.transport.cookie_path = s.cookie;
    o.connect_timeout = millis(std::max(s.timeout_ms, 100));
    o.leave_timeout = millis(200);
    auto joined = otpp::join_cluster(*node_, std::move(o));
    if (!joined) fail(joined.fail(), "cannot start the tool's node");
    cluster_ = *joined;
    wait_connected();
  }
  ~session() {
    if (node_) node_->stop();
  }

  otpp::node& node() { return *node_; }
  // The target's node id (learned from the connection when it was given as host:port).
  const std::string& id() const { return id_; }
  millis timeout() const { return millis(settings_.timeout_ms); }

  // Runs an introspect request and waits for its answer (the request has its own timeout).
  template <class T, class Start>
  otpp::result<T> ask(Start start) {
    std::promise<otpp::result<T>> answer;
    auto got = answer.get_future();
    start([&answer](otpp::result<T> r) { answer.set_value(std::move(r)); });
    // The request's timeout fires first; this bound only guards against a lost completion.
    if (got.wait_for(timeout() * 3 + std::chrono::seconds(5)) != std::future_status::ready) {
      return otpp::failure(otpp::errc::timeout, "no completion");
    }
    return got.get();
  }

 private:
  void wait_connected() {
    const bool by_id = target_.find('@') != std::string::npos;
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    std::error_code last;
    for (;;) {
      for (const auto& p : cluster_->ready_peers()) {
        if (!by_id || p.id() == target_) {
          id_ = std::string(p.id());
          return;
        }
      }
      // Something answered at that address under another id (a typo in the name part): the
      // tool dials that one address only, so the id asked for will not come.
      if (by_id) {
        for (const auto& p : cluster_->ready_peers()) {
          fail(not_reachable,
               "no node " + target_ + ": the node at that address is " + std::string(p.id()));
        }
      }
      for (const auto& s : cluster_->seeds()) {
        if (s.last_error) last = s.last_error;
        if (s.last_error == otpp::errc::not_authorised) {
          fail(not_authorised, target_ + " refused this tool's secret (not authorised): " +
                                   "give the cluster's secret (--secret, OTPP_SECRET) or cookie "
                                   "(--cookie)");
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(millis(10));
    }
    fail(not_reachable, target_ + " is not reachable" +
                            (last ? ": " + last.message() : std::string(" (no answer in time)")));
  }

  settings settings_;
  std::string target_;
  std::string id_;
  std::unique_ptr<otpp::node> node_;
  otpp::cluster::service* cluster_ = nullptr;
};

template <class T>
T value_or_fail(otpp::result<T> r, std::string_view what) {
  if (!r) fail(r.fail(), what);
  return std::move(*r);
}
void value_or_fail(otpp::result<void> r, std::string_view what) {
  if (!r) fail(r.fail(), what);
}

void print_json(const json& j) {
  std::cout << j.dump(2) << '\n';
}

// ---- commands

int cmd_ping(const settings& s, const std::string& target) {
  const auto began = std::chrono::steady_clock::now();
  session n(s, target);
  auto summary = value_or_fail(n.ask<otpp::introspect::node_summary>([&](auto done) {
    otpp::introspect::remote_summary(n.node(), n.id(), n.timeout(), std::move(done));
  }),
                               "ping " + target);
  auto took = std::chrono::duration_cast<millis>(std::chrono::steady_clock::now() - began);
  if (s.json_output) {
    auto j = to_json_value(summary);
    j["round_trip_ms"] = took.count();
    print_json(j);
  } else {
    std::cout << "pong from " << summary.id << " in " << took.count()
              << " ms (connect included): creation " << summary.creation << ", up "
              << human_duration(summary.uptime_ms) << ", " << summary.processes << " processes, "
              << summary.members << " members, otpp " << summary.version
              << (summary.behaviours.empty() ? "" : ", behaviours " + joined(summary.behaviours))
              << '\n';
  }
  return ok;
}

int cmd_nodes(const settings& s) {
  session n(s, s.node);
  auto members = value_or_fail(n.ask<std::vector<otpp::introspect::member_entry>>([&](auto done) {
    otpp::introspect::remote_members(n.node(), n.id(), n.timeout(), std::move(done));
  }),
                               "nodes");
  if (s.json_output) {
    print_json(to_json_value(members));
    return ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : members) {
    std::vector<std::string> tags;
    for (const auto& [k, v] : m.tags) tags.push_back(k + "=" + v);
    rows.push_back({m.id + (m.self ? " (answering)" : ""), m.status, m.reachable ? "yes" : "no",
                    std::to_string(m.creation), human_duration(m.uptime_ms), joined(tags)});
  }
  print_table({"NODE", "STATUS", "REACHABLE", "CREATION", "UPTIME", "TAGS"}, rows);
  return ok;
}

int cmd_registry(const settings& s) {
  session n(s, s.node);
  auto names = value_or_fail(n.ask<std::vector<otpp::introspect::global_entry>>([&](auto done) {
    otpp::introspect::remote_globals(n.node(), n.id(), n.timeout(), std::move(done));
  }),
                             "registry");
  if (s.json_output) {
    print_json(to_json_value(names));
    return ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : names) {
    rows.push_back({g.name, g.pid, g.node, g.epoch ? std::to_string(g.epoch) : "-"});
  }
  print_table({"NAME", "PID", "NODE", "EPOCH"}, rows);
  return ok;
}

int cmd_groups(const settings& s) {
  session n(s, s.node);
  auto groups = value_or_fail(n.ask<std::vector<otpp::introspect::group_entry>>([&](auto done) {
    otpp::introspect::remote_groups(n.node(), n.id(), n.timeout(), std::move(done));
  }),
                              "groups");
  if (s.json_output) {
    print_json(to_json_value(groups));
    return ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : groups) {
    rows.push_back({g.group, std::to_string(g.members.size()), joined(g.members, " ")});
  }
  print_table({"GROUP", "MEMBERS", "PIDS"}, rows);
  return ok;
}

void print_processes(const otpp::introspect::process_list& list, const std::string& node) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : list.processes) {
    auto names = p.names;
    for (const auto& g : p.global_names) names.push_back("{global," + g + "}");
    rows.push_back({p.pid, names.empty() ? "-" : joined(names),
                    p.behaviour.empty() ? p.type : p.behaviour, std::to_string(p.mailbox),
                    std::to_string(p.handled), std::to_string(p.memory),
                    human_duration(p.uptime_ms)});
  }
  std::cout << node << ": " << list.total << " processes";
  if (list.processes.size() < list.total) std::cout << " (" << list.processes.size() << " shown)";
  std::cout << '\n';
  print_table({"PID", "NAME", "BEHAVIOUR", "MAILBOX", "HANDLED", "MEMORY", "UPTIME"}, rows);
}

otpp::introspect::process_list fetch_processes(session& n, const std::string& sort,
                                               std::size_t limit) {
  return value_or_fail(n.ask<otpp::introspect::process_list>([&](auto done) {
    otpp::introspect::remote_processes(n.node(), n.id(), {.sort = sort, .limit = limit},
                                       n.timeout(), std::move(done));
  }),
                       "processes on " + n.id());
}

int cmd_processes(const settings& s, const std::string& target, const std::string& sort,
                  std::size_t limit) {
  session n(s, target);
  auto list = fetch_processes(n, sort, limit);
  if (s.json_output) {
    print_json(to_json_value(list));
  } else {
    print_processes(list, n.id());
  }
  return ok;
}

volatile std::sig_atomic_t interrupted = 0;

int cmd_top(const settings& s, const std::string& target, const std::string& sort,
            std::size_t limit, int interval_ms, int iterations) {
  session n(s, target);
  std::signal(SIGINT, [](int) { interrupted = 1; });
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  for (int i = 0; (iterations == 0 || i < iterations) && !interrupted; ++i) {
    if (i > 0) {
      // Sleep in small steps: Ctrl-C ends it at once.
      for (int slept = 0; slept < interval_ms && !interrupted; slept += 50) {
        std::this_thread::sleep_for(millis(50));
      }
      if (interrupted) break;
    }
    auto list = fetch_processes(n, sort, limit);
    if (s.json_output) {
      std::cout << to_json_value(list).dump() << '\n';  // one JSON document per line
    } else {
      if (tty) std::cout << "\x1b[H\x1b[2J";  // home, clear: refresh in place like top
      auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      char when[32];
      std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&now));
      std::cout << "otpp top - " << when << ", sorted by " << sort << ", every " << interval_ms
                << " ms (Ctrl-C quits)\n";
      print_processes(list, n.id());
    }
    std::cout.flush();
  }
  return ok;
}

json checked_message(const std::string& text) {
  auto j = parse_json(text, "the message");
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    fail(bad_input,
         "the message must be a JSON object with a \"type\" string (the message's tag), e.g. "
         "{\"type\":\"get\"}");
  }
  return j;
}

int cmd_call(const settings& s, const std::string& to, const std::string& message, bool cast) {
  auto j = checked_message(message);
  session n(s, s.node);
  auto what = std::string(cast ? "cast to " : "call to ") + to;
  if (cast) {
    value_or_fail(n.ask<void>([&](auto done) {
      otpp::introspect::remote_cast(n.node(), n.id(), to, to_msgpack(j), n.timeout(),
                                    std::move(done));
    }),
                  what);
    if (s.json_output) {
      print_json(json{{"ok", true}});
    } else {
      std::cout << "ok\n";
    }
    return ok;
  }
  auto reply = value_or_fail(n.ask<msgpack::object_handle>([&](auto done) {
    otpp::introspect::remote_call(n.node(), n.id(), to, to_msgpack(j), n.timeout(),
                                  std::move(done));
  }),
                             what);
  auto out = to_json(reply.get());
  std::cout << (s.json_output ? out.dump(2) : out.dump()) << '\n';
  return ok;
}

int cmd_spawn(const settings& s, const std::string& target, const std::string& behaviour,
              const std::string& args_text, const std::string& local_name,
              const std::string& global_name) {
  std::optional<msgpack::object_handle> args;
  if (!args_text.empty()) args = to_msgpack(parse_json(args_text, "the arguments"));
  session n(s, target);
  otpp::remote_spawn_options o;
  o.local_name = local_name;
  o.global_name = global_name;
  o.timeout = n.timeout();
  auto spawned = value_or_fail(n.ask<otpp::remote_spawned>([&](auto done) {
    if (args) {
      otpp::spawn_remote_dynamic(n.node(), n.id(), behaviour, args->get(), o, std::move(done));
    } else {
      otpp::spawn_remote(n.node(), n.id(), behaviour, o, std::move(done));
    }
  }),
                               "spawn " + behaviour + " on " + target);
  if (s.json_output) {
    print_json(
        json{{"pid", spawned.child.to_string()}, {"node", n.id()}, {"behaviour", behaviour}});
  } else {
    std::cout << spawned.child.to_string() << '\n';
  }
  return ok;
}

int cmd_stop(const settings& s, const std::string& target) {
  session n(s, target);
  value_or_fail(n.ask<void>([&](auto done) {
    otpp::introspect::remote_stop(n.node(), n.id(), n.timeout(), std::move(done));
  }),
                "stop " + target);
  if (s.json_output) {
    print_json(json{{"stopping", n.id()}});
  } else {
    std::cout << n.id() << " is stopping\n";
  }
  return ok;
}

const char* completion_script =
    R"(# bash completion for otpp: source it, or copy it to /etc/bash_completion.d/otpp
_otpp() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "ping nodes registry groups processes top call cast spawn stop completion" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "--json --node --secret --cookie --timeout --help --sort --limit" -- "$cur"))
  fi
}
complete -F _otpp otpp
)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "otpp: inspect and drive a live otpp cluster (joins as a hidden node).\n"
      "Exit codes: 0 ok, 1 other error, 2 bad input, 3 not reachable, 4 not "
      "authorised, 5 no such process/name/behaviour, 6 timeout.",
      "otpp"};
  app.require_subcommand(1);
  settings s;
  app.add_option("--node", s.node, "Node to ask (name@host:port, or host:port)")
      ->envname("OTPP_NODE");
  app.add_option("--secret", s.secret,
                 "The cluster's shared secret (visible in ps: prefer OTPP_SECRET)")
      ->envname("OTPP_SECRET");
  app.add_option("--cookie", s.cookie,
                 "Cookie file holding the secret (default $HOME/.otpp.cookie)")
      ->envname("OTPP_COOKIE");
  app.add_option("--name", s.name,
                 "This tool's node id (default otpp-cli-<pid>@127.0.0.1:<free port>)");
  app.add_option("--timeout", s.timeout_ms, "Connect and answer bound, ms")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_flag("--json", s.json_output, "JSON output for scripts");
  app.add_flag("-v,--verbose", s.verbose, "Show the tool node's log");

  std::string target, to, message, behaviour, args_text, local_name, global_name;
  std::string sort = "pid";
  std::size_t limit = 0;
  int interval_ms = 1000, iterations = 0;
  auto sort_check = CLI::IsMember({"pid", "mailbox", "memory", "handled", "uptime"});

  auto* ping = app.add_subcommand("ping", "Is NODE up? Its id, creation, uptime and load");
  ping->add_option("NODE", target, "name@host:port or host:port")->required();
  auto* nodes = app.add_subcommand("nodes",
                                   "Members as --node sees them: status, creation, "
                                   "uptime, tags");
  auto* registry = app.add_subcommand("registry", "Global names with their pids and nodes");
  auto* groups = app.add_subcommand("groups", "Process groups and their members");
  auto* processes = app.add_subcommand("processes",
                                       "Processes of NODE: pid, name, behaviour, "
                                       "mailbox, messages handled, memory");
  processes->add_option("NODE", target)->required();
  processes->add_option("--sort", sort, "pid, mailbox, memory, handled or uptime")
      ->check(sort_check);
  processes->add_option("--limit", limit, "At most this many (the largest first when sorted)");
  auto* top = app.add_subcommand("top", "processes, refreshed like top (Ctrl-C quits)");
  top->add_option("NODE", target)->required();
  top->add_option("--sort", sort, "pid, mailbox, memory, handled or uptime")->check(sort_check);
  top->add_option("--limit", limit, "Rows per refresh")->capture_default_str();
  top->add_option("--interval", interval_ms, "Refresh period, ms")
      ->check(CLI::Range(50, 3600000))
      ->capture_default_str();
  top->add_option("--iterations", iterations, "Refreshes, then exit (0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber);
  auto* call = app.add_subcommand("call",
                                  "Call NAME|PID with a JSON message {\"type\": ...}; "
                                  "prints the reply as JSON");
  call->add_option("TARGET", to, "A global name (or a local name of --node), or <pid>")->required();
  call->add_option("JSON", message, "The message, in dynamic form")->required();
  auto* cast = app.add_subcommand("cast", "Cast a JSON message to NAME|PID");
  cast->add_option("TARGET", to)->required();
  cast->add_option("JSON", message)->required();
  auto* spawn = app.add_subcommand("spawn",
                                   "Start BEHAVIOUR on NODE with JSON arguments; "
                                   "prints its pid");
  spawn->add_option("NODE", target)->required();
  spawn->add_option("BEHAVIOUR", behaviour)->required();
  spawn->add_option("JSON-ARGS", args_text, "Arguments (omitted: none)");
  spawn->add_option("--local-name", local_name, "Register it under this name on NODE");
  spawn->add_option("--global-name", global_name, "Register it under this global name");
  auto* stop = app.add_subcommand("stop", "Stop NODE gracefully (it leaves the cluster)");
  stop->add_option("NODE", target)->required();
  auto* completion = app.add_subcommand("completion", "Print a bash completion script");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return bad_input;
  }

  try {
    if (*completion) {
      std::cout << completion_script;
      return ok;
    }
    if (*ping) return cmd_ping(s, target);
    if (*nodes) return cmd_nodes(s);
    if (*registry) return cmd_registry(s);
    if (*groups) return cmd_groups(s);
    if (*processes) return cmd_processes(s, target, sort, limit);
    if (*top) return cmd_top(s, target, sort, limit == 0 ? 40 : limit, interval_ms, iterations);
    if (*call) return cmd_call(s, to, message, false);
    if (*cast) return cmd_call(s, to, message, true);
    if (*spawn) return cmd_spawn(s, target, behaviour, args_text, local_name, global_name);
    if (*stop) return cmd_stop(s, target);
  } catch (const fatal& f) {
    std::cerr << "otpp: " << f.message << '\n';
    if (s.json_output) print_json(json{{"error", f.message}, {"exit_code", f.code}});
    return f.code;
  } catch (const std::exception& e) {
    std::cerr << "otpp: " << e.what() << '\n';
    return other_error;
  }
  return bad_input;
}
