// Child OS processes for multi-process tests: spawned with pipes on stdin/stdout/stderr, their
// output read by a thread of their own (a child never blocks on a full pipe), every wait
// bounded, and killed (SIGKILL) and reaped by the destructor: a test that fails half-way leaves
// no process behind.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/cluster_support.hpp"

extern char** environ;

namespace otpp_test {

class child_process {
 public:
  using clock = std::chrono::steady_clock;

  // Starts `path` with `args` (argv[1..]); `label` prefixes its lines in failure messages.
  // Null if it could not be started (the reason is in `error`).
  static std::unique_ptr<child_process> spawn(const std::string& path,
                                              const std::vector<std::string>& args,
                                              std::string label, std::string* error = nullptr) {
    // Writing to a child that died must fail with EPIPE, not kill the test.
    std::signal(SIGPIPE, SIG_IGN);
    int in[2], out[2], err[2];
    // O_CLOEXEC: children started later by other tests do not inherit these ends (a pipe
    // would then never read EOF).
    if (::pipe2(in, O_CLOEXEC) != 0) return fail(error, "pipe");
    if (::pipe2(out, O_CLOEXEC) != 0) return fail(error, "pipe", {in[0], in[1]});
    if (::pipe2(err, O_CLOEXEC) != 0) return fail(error, "pipe", {in[0], in[1], out[0], out[1]});
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
    std::vector<std::string> all{path};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      errno = rc;
      return fail(error, "posix_spawn " + path, {in[1], out[0], err[0]});
    }
    return std::unique_ptr<child_process>(
        new child_process(pid, in[1], out[0], err[0], std::move(label)));
  }

  ~child_process() {
    kill(SIGKILL);
    (void)wait_exit(std::chrono::seconds(30));
    if (in_ >= 0) ::close(in_);
    if (reader_.joinable()) reader_.join();  // ends at EOF of both pipes (the child is gone)
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& label() const { return label_; }

  // Sends one command line. False if the child does not read any more (gone).
  bool send(const std::string& line) {
    std::string s = line + "\n";
    std::lock_guard lock(write_mu_);
    if (in_ < 0) return false;
    const char* p = s.data();
    std::size_t left = s.size();
    while (left > 0) {
      auto n = ::write(in_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    return true;
  }
  // Closes its stdin (the test node stops gracefully at EOF).
  void close_stdin() {
    std::lock_guard lock(write_mu_);
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

  // Signals the child (SIGKILL, SIGSTOP, SIGCONT, SIGTERM); false if it was already reaped.
  bool kill(int sig) {
    std::lock_guard lock(state_mu_);
    if (exited_) return false;
    return ::kill(pid_, sig) == 0;
  }

  // Its exit code (128 + signal number when a signal ended it), waiting at most `bound`.
  std::optional<int> wait_exit(clock::duration bound) {
    auto until = clock::now() + bound;
    while (true) {
      {
        std::lock_guard lock(state_mu_);
        if (exited_) return exit_code_;
        int status = 0;
        auto r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
          exited_ = true;
          exit_code_ = r < 0                 ? -1
                       : WIFEXITED(status)   ? WEXITSTATUS(status)
                       : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                             : -1;
          return exit_code_;
        }
      }
      if (clock::now() >= until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  bool running() { return !wait_exit(clock::duration::zero()).has_value(); }

  // The first stdout line at index >= `from` that satisfies `pred`, waiting at most `bound`.
  std::optional<std::string> wait_line(const std::function<bool(const std::string&)>& pred,
                                       clock::duration bound, std::size_t from = 0,
                                       std::size_t* index = nullptr) {
    std::unique_lock lock(lines_mu_);
    std::size_t i = from;
    auto found = lines_cv_.wait_for(lock, bound, [&] {
      for (; i < lines_.size(); ++i) {
        if (pred(lines_[i])) return true;
      }
      return out_closed_;  // no more lines will come
    });
    if (!found || i >= lines_.size()) return std::nullopt;
    if (index) *index = i;
    return lines_[i];
  }
  // The first line starting with `prefix`.
  std::optional<std::string> wait_prefix(const std::string& prefix, clock::duration bound,
                                         std::size_t from = 0, std::size_t* index = nullptr) {
    return wait_line([&](const std::string& l) { return l.rfind(prefix, 0) == 0; }, bound, from,
                     index);
  }
  // Sends `command` and waits for the first line after it starting with `prefix`.
  std::optional<std::string> ask(const std::string& command, const std::string& prefix,
                                 clock::duration bound = std::chrono::seconds(20)) {
    auto from = line_count();
    if (!send(command)) return std::nullopt;
    return wait_prefix(prefix, bound, from);
  }

  std::size_t line_count() {
    std::lock_guard lock(lines_mu_);
    return lines_.size();
  }
  std::size_t count(const std::function<bool(const std::string&)>& pred) {
    std::lock_guard lock(lines_mu_);
    std::size_t n = 0;
    for (const auto& l : lines_) n += pred(l);
    return n;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(lines_mu_);
    return lines_;
  }
  std::string stderr_text() {
    std::lock_guard lock(lines_mu_);
    return err_;
  }
  // Everything it printed, for failure messages.
  std::string transcript() {
    std::lock_guard lock(lines_mu_);
    std::ostringstream s;
    s << "---- " << label_ << " stdout\n";
    for (const auto& l : lines_) s << l << "\n";
    s << "---- " << label_ << " stderr\n" << err_;
    return s.str();
  }

  // Splits a line into its space-separated fields.
  static std::vector<std::string> fields(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    std::string f;
    while (in >> f) out.push_back(f);
    return out;
  }

 private:
  child_process(pid_t pid, int in, int out, int err, std::string label)
      : pid_(pid), in_(in), label_(std::move(label)) {
    reader_ = std::thread([this, out, err] { read_loop(out, err); });
  }

  static std::unique_ptr<child_process> fail(std::string* error, const std::string& what,
                                             std::initializer_list<int> fds = {}) {
    if (error) *error = what + ": " + std::strerror(errno);
    for (int fd : fds) ::close(fd);
    return nullptr;
  }

  void read_loop(int out, int err) {
    std::string out_partial;
    pollfd fds[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};
    int open = 2;
    char buf[8192];
    while (open > 0) {
      int r = ::poll(fds, 2, 200);
      if (r < 0 && errno != EINTR) break;
      for (auto& p : fds) {
        if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        auto n = ::read(p.fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ::close(p.fd);
          p.fd = -1;
          --open;
          continue;
        }
        std::lock_guard lock(lines_mu_);
        if (p.fd == out) {
          out_partial.append(buf, static_cast<std::size_t>(n));
          std::size_t eol;
          while ((eol = out_partial.find('\n')) != std::string::npos) {
            lines_.push_back(out_partial.substr(0, eol));
            out_partial.erase(0, eol + 1);
          }
        } else {
          err_.append(buf, static_cast<std::size_t>(n));
        }
      }
      lines_cv_.notify_all();
    }
    for (auto& p : fds) {
      if (p.fd >= 0) ::close(p.fd);
    }
    std::lock_guard lock(lines_mu_);
    if (!out_partial.empty()) lines_.push_back(out_partial);
    out_closed_ = true;
    lines_cv_.notify_all();
  }

  pid_t pid_;
  std::mutex write_mu_;
  int in_;
  std::string label_;
  std::mutex state_mu_;
  bool exited_ = false;
  int exit_code_ = -1;
  std::mutex lines_mu_;
  std::condition_variable lines_cv_;
  std::vector<std::string> lines_;
  std::string err_;
  bool out_closed_ = false;
  std::thread reader_;
};

// One otpp_test_node process (tests/cluster/node_main.cpp): its id, incarnation and worker pid
// from its `ready` line, and its node events parsed.
struct node_event_line {
  std::string kind, node;
  std::uint32_t creation = 0;
  std::string reason;
  long long mono_us = 0;  // steady clock of the node (CLOCK_MONOTONIC: same in every process)
};

class node_process {
 public:
  // Starts a node named name@127.0.0.1:port and waits for it to be ready (null on failure,
  // with the reason in `error`).
  static std::unique_ptr<node_process> start(
      const std::string& path, const std::string& id, const std::vector<std::string>& args,
      std::string* error = nullptr, std::chrono::seconds bound = std::chrono::seconds(30)) {
    std::vector<std::string> all{"--name", id};
    all.insert(all.end(), args.begin(), args.end());
    auto np = std::unique_ptr<node_process>(new node_process);
    np->proc = child_process::spawn(path, all, id, error);
    if (!np->proc) return nullptr;
    auto ready = np->proc->wait_prefix("ready ", bound);
    if (!ready) {
      if (error) *error = "no ready line from " + id + "\n" + np->proc->transcript();
      return nullptr;
    }
    auto f = child_process::fields(*ready);
    np->id = f.at(1);
    np->creation = static_cast<std::uint32_t>(std::stoul(f.at(2)));
    np->serial = std::stoull(f.at(3));
    return np;
  }

  // "<id> <creation> <serial>" of its worker: the target of call / cast / count commands.
  std::string worker() const {
    return id + " " + std::to_string(creation) + " " + std::to_string(serial);
  }

  static std::optional<node_event_line> parse_event(const std::string& line) {
    auto f = child_process::fields(line);
    if (f.size() < 6 || f[0] != "event") return std::nullopt;
    return node_event_line{f[1], f[2], static_cast<std::uint32_t>(std::stoul(f[3])), f[4],
                           std::stoll(f[5])};
  }
  // An event of `kind` about `node` (any creation if 0), waiting at most `bound`.
  std::optional<node_event_line> wait_event(const std::string& kind, const std::string& node,
                                            std::chrono::steady_clock::duration bound,
                                            std::uint32_t of_creation = 0) {
    auto line = proc->wait_line(
        [&](const std::string& l) { return matches(l, kind, node, of_creation); }, bound);
    if (!line) return std::nullopt;
    return parse_event(*line);
  }
  std::size_t count_events(const std::string& kind, const std::string& node = {},
                           std::uint32_t of_creation = 0) {
    return proc->count([&](const std::string& l) { return matches(l, kind, node, of_creation); });
  }
  std::vector<node_event_line> events() {
    std::vector<node_event_line> out;
    for (const auto& l : proc->lines()) {
      if (auto e = parse_event(l)) out.push_back(*e);
    }
    return out;
  }
  // Sends a call-like command and waits for its answer (a `reply ` or `error ` line).
  std::optional<std::string> answer(
      const std::string& command,
      std::chrono::steady_clock::duration bound = std::chrono::seconds(30)) {
    auto from = proc->line_count();
    if (!proc->send(command)) return std::nullopt;
    return proc->wait_line(
        [](const std::string& l) { return l.rfind("reply ", 0) == 0 || l.rfind("error ", 0) == 0; },
        bound, from);
  }
  // Members up, connected and reachable as this node sees them (self included); -1 if it
  // does not answer.
  int members_up() {
    auto l = proc->ask("members", "members ", std::chrono::seconds(10));
    if (!l) return -1;
    return std::stoi(child_process::fields(*l).at(1));
  }

  std::string id;
  std::uint32_t creation = 0;
  std::uint64_t serial = 0;
  std::unique_ptr<child_process> proc;

 private:
  node_process() = default;
  static bool matches(const std::string& l, const std::string& kind, const std::string& node,
                      std::uint32_t of_creation) {
    auto e = parse_event(l);
    return e && e->kind == kind && (node.empty() || e->node == node) &&
           (of_creation == 0 || e->creation == of_creation);
  }
};

// Every node sees `n` members up (polled every 100 ms, at most `bound`).
inline bool processes_converged(const std::vector<node_process*>& nodes, int n,
                                std::chrono::steady_clock::duration bound) {
  auto until = std::chrono::steady_clock::now() + bound;
  while (true) {
    bool all = true;
    for (auto* p : nodes) {
      if (!p || p->members_up() != n) {
        all = false;
        break;
      }
    }
    if (all) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

inline long long now_us() {  // the clock of node_event_line::mono_us
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A sanitizer's report in a child's stderr (the child runs under the same sanitizer as the
// test; with halt_on_error it also ends, which a test may not otherwise notice).
inline bool has_sanitizer_report(const std::string& err) {
  for (const char* s : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                        "WARNING: ThreadSanitizer", "runtime error:"}) {
    if (err.find(s) != std::string::npos) return true;
  }
  return false;
}

#ifdef OTPP_TEST_NODE_PATH
// Fixture of the multi-process tests: starts otpp_test_node processes, prints what they said
// when the test failed, fails on a sanitizer report in any of them, kills them all at the end.
class multiprocess_fixture : public ::testing::Test {
 protected:
  // Timing of every node: detection fast enough for short tests, slack enough that a loaded
  // machine (or TSan) does not make a live node look silent.
  virtual std::vector<std::string> timing() const {
    return {"--heartbeat-ms", "100", "--unreachable-after-ms", "1500", "--stable-after-ms", "1500",
            "--gossip-ms",    "200", "--retry-max-ms",         "300"};
  }

  // Starts `id` with the test timing, `extra` arguments and `seeds`; fails the test (and
  // answers null) if it does not come up.
  node_process* start_id(const std::string& id, const std::vector<std::string>& seeds,
                         std::vector<std::string> extra = {},
                         const std::string& secret = test_secret) {
    std::vector<std::string> args = timing();
    args.insert(args.end(), {"--secret", secret});
    if (!seeds.empty()) {
      std::string s;
      for (const auto& x : seeds) s += (s.empty() ? "" : ",") + x;
      args.insert(args.end(), {"--seeds", s});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    auto p = node_process::start(OTPP_TEST_NODE_PATH, id, args, &error);
    if (!p) {
      ADD_FAILURE() << "cannot start " << id << ": " << error;
      return nullptr;
    }
    nodes_.push_back(std::move(p));
    return nodes_.back().get();
  }
  // name@127.0.0.1:port (port 0: a free one).
  node_process* start(const std::string& name, std::uint16_t port,
                      const std::vector<std::string>& seeds, std::vector<std::string> extra = {},
                      const std::string& secret = test_secret) {
    return start_id(node_name(name, port == 0 ? free_port() : port), seeds, std::move(extra),
                    secret);
  }

  static std::string seed_of(const node_process* p) { return p->id; }
  static std::uint16_t port_of(const node_process* p) {
    return static_cast<std::uint16_t>(std::stoi(p->id.substr(p->id.rfind(':') + 1)));
  }

  void TearDown() override {
    // Stops them first: a report at exit (leaks) is part of their stderr.
    for (auto& n : nodes_) n->proc->close_stdin();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (auto& n : nodes_) {
      (void)n->proc->wait_exit(std::max(until - std::chrono::steady_clock::now(),
                                        std::chrono::steady_clock::duration::zero()));
    }
    for (auto& n : nodes_) {
      EXPECT_FALSE(has_sanitizer_report(n->proc->stderr_text()))
          << n->id << " (pid " << n->proc->pid() << "):\n"
          << n->proc->stderr_text();
    }
    if (HasFailure()) {
      for (auto& n : nodes_) std::cerr << n->proc->transcript();
    }
    nodes_.clear();  // kills and reaps every process still running
  }

  std::vector<std::unique_ptr<node_process>> nodes_;
};

// Three nodes through a chain of seeds: C knows only B, B only A.
class three_processes_fixture : public multiprocess_fixture {
 protected:
  void SetUp() override {
    a = start("a", 0, {});
    ASSERT_TRUE(a);
    b = start("b", 0, {"127.0.0.1:" + std::to_string(port_of(a))});
    ASSERT_TRUE(b);
    c = start("c", 0, {seed_of(b)});
    ASSERT_TRUE(c);
    ASSERT_TRUE(processes_converged({a, b, c}, 3, std::chrono::seconds(60)))
        << "three processes did not converge";
  }
  node_process *a = nullptr, *b = nullptr, *c = nullptr;
};
#endif

}  // namespace otpp_test
