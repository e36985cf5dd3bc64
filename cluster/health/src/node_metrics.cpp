#include "node_metrics.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>

#include "otpp/cluster/cluster.hpp"
#include "otpp/node_counters.hpp"

namespace otpp::health {

void add_node_metrics(metrics_registry& m, node& n) {
  // The largest message count reported so far: a process exiting during a reading may be
  // missed by it once, and a counter must not go down.
  auto handled_max = std::make_shared<std::atomic<std::uint64_t>>(0);
  m.add_collector([&n, handled_max](sample_sink& s) {
    const labels self{{"node", n.name()}};
    // One pass over the process table (each shard locked briefly in turn).
    const auto procs = n.processes();
    const auto counted = counters(n);
    double waiting = 0, longest = 0, memory = 0;
    for (const auto& p : procs) {
      waiting += static_cast<double>(p.mailbox);
      longest = std::max(longest, static_cast<double>(p.mailbox));
      memory += static_cast<double>(p.memory);
    }
    s.gauge("otpp_processes", "Processes alive on the node.", self,
            static_cast<double>(procs.size()));
    auto handled = handled_max->load();
    while (counted.messages_handled > handled &&
           !handled_max->compare_exchange_weak(handled, counted.messages_handled)) {
    }
    handled = std::max(handled, counted.messages_handled);
    s.counter("otpp_messages_handled_total",
              "Messages (calls, casts, infos) handled by the node's processes.", self,
              static_cast<double>(handled));
    // Calls by outcome: ok always, each failure kind once it happened (its errc name).
    const char* calls_help =
        "Calls made from the node (local and remote) that completed, by outcome.";
    for (std::size_t i = 0; i < counted.calls.size(); ++i) {
      if (i != 0 && counted.calls[i] == 0) continue;
      std::string outcome = "ok";
      if (i == node_counters::other_outcome) {
        outcome = "other";
      } else if (i != 0) {
        outcome = make_error_code(static_cast<errc>(i)).message();
        outcome = outcome.substr(0, outcome.find(':'));
      }
      labels l = self;
      l.emplace_back("outcome", outcome);
      s.counter("otpp_calls_total", calls_help, l, static_cast<double>(counted.calls[i]));
    }
    s.counter("otpp_processes_spawned_total", "Processes started on the node.", self,
              static_cast<double>(counted.spawned));
    s.counter("otpp_processes_exited_total", "Processes of the node that ended.", self,
              static_cast<double>(counted.exited));
    s.gauge("otpp_mailbox_messages", "Messages waiting in the mailboxes of all processes.", self,
            waiting);
    s.gauge("otpp_mailbox_messages_max", "Messages waiting in the longest mailbox.", self, longest);
    s.gauge("otpp_process_memory_bytes",
            "Bytes of the process objects and their queued envelopes (a lower bound).", self,
            memory);
    auto* c = cluster::find(n);
    s.gauge("otpp_cluster_joined", "1 when the node has joined a cluster.", self, c ? 1 : 0);
    if (!c) return;
    const auto st = c->stats();
    double up = 0, leaving = 0, down = 0, unreachable = 0;
    for (const auto& mem : c->members()) {
      up += mem.status == cluster::member_status::up;
      leaving += mem.status == cluster::member_status::leaving;
      down += mem.status == cluster::member_status::down;
      unreachable += !mem.reachable;
    }
    auto with = [&](const char* k, const char* v) {
      labels l = self;
      l.emplace_back(k, v);
      return l;
    };
    const char* members_help = "Cluster members as this node sees them, by status.";
    s.gauge("otpp_cluster_members", members_help, with("status", "up"), up);
    s.gauge("otpp_cluster_members", members_help, with("status", "leaving"), leaving);
    s.gauge("otpp_cluster_members", members_help, with("status", "down"), down);
    s.gauge("otpp_cluster_members_unreachable", "Members this node cannot hear now.", self,
            unreachable);
    s.gauge("otpp_cluster_connections", "Connections to other nodes.", self,
            static_cast<double>(st.connections));
    const char* frames_help = "Frames between this node and its peers, by direction.";
    s.counter("otpp_cluster_frames_total", frames_help, with("direction", "in"),
              static_cast<double>(st.frames_in));
    s.counter("otpp_cluster_frames_total", frames_help, with("direction", "out"),
              static_cast<double>(st.frames_out));
    const char* bytes_help = "Bytes between this node and its peers, by direction.";
    s.counter("otpp_cluster_bytes_total", bytes_help, with("direction", "in"),
              static_cast<double>(st.bytes_in));
    s.counter("otpp_cluster_bytes_total", bytes_help, with("direction", "out"),
              static_cast<double>(st.bytes_out));
    s.counter("otpp_cluster_bad_frames_total", "Undecodable frames dropped.", self,
              static_cast<double>(st.bad_frames));
    s.counter("otpp_cluster_undeliverable_frames_total",
              "Frames whose target process was not alive.", self,
              static_cast<double>(st.undeliverable));
    s.counter("otpp_cluster_connect_attempts_total", "Connection attempts to peers.", self,
              static_cast<double>(st.connect_attempts));
    s.gauge("otpp_cluster_remote_links", "Links between local and remote processes.", self,
            static_cast<double>(st.links));
    s.gauge("otpp_cluster_remote_monitors", "Monitors between local and remote processes.", self,
            static_cast<double>(st.monitors));
  });
}

}  // namespace otpp::health
