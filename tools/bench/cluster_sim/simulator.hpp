// A cluster of simulated nodes in one process, on virtual time: the real membership + downing
// core (otpp::cluster::membership) of every node, driven the way the cluster service drives it
// (cluster/src/cluster.cpp), over a simulated network instead of sockets. Used by the
// otpp_cluster_sim program (figures for 50..1,000 nodes) and by tests/cluster/sim_test.cpp.
//
// What is modelled, and how (the service's behaviour in brackets):
// - Full mesh. A connection is a pair of ends, one per node; each end has its own idea of
//   whether it is open (a close crosses the network like a FIN: a partition hides it).
// - Dialing [dial_member]: success after 3 one-way latencies (TCP + handshake) when both
//   directions are reachable; refused after a round trip when nothing runs there (a crashed
//   node); timeout after connect_timeout across a partition. Retries use the service's
//   backoff with jitter. A new connection sends hello (full state) both ways.
// - Connection loss [handle_down]: peer_disconnected(definite=false) and an immediate probe
//   dial; a refused probe gives peer_disconnected(definite=true, connection_closed).
// - Heartbeats every heartbeat_interval on every connection, each lost with the loss
//   probability; silence [check_silence, each tick]: no delivered byte for unreachable_after
//   -> peer_silent(true); heard again -> peer_silent(false); silence_timeout closes the end.
//   Heartbeats are evaluated lazily per connection end (geometric skips over lost ones), so
//   1,000 nodes x 999 connections x 10 heartbeats/s cost no event each.
// - Gossip [send_gossip]: a message of its msgpack size, lost with the loss probability,
//   FIFO per direction, latency uniform in [latency_min, latency_max]. Hello, blocked and
//   close are never lost (TCP delivers them or the connection dies).
// - disconnect(id) from the core [service disconnect]: a blocked frame, then the close.
// - Each node ticks every heartbeat_interval with its own phase [on_tick]: silence check,
//   membership.tick(now), dial wanted_connections().
// Not modelled: hidden nodes, leave, CPU time (handlers run in zero virtual time), TCP
// retransmission (a lost message is gone, which is harsher on gossip than TCP would be).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <msgpack.hpp>

#include "otpp/cluster/membership.hpp"

namespace otpp::cluster::sim {

using namespace std::chrono_literals;
using duration = clock_type::duration;

struct sim_options {
  std::uint64_t seed = 1;
  duration latency_min = 200us;
  duration latency_max = 2ms;
  double loss = 0.0;  // probability that a heartbeat or gossip message is lost
  // The cluster service's defaults (cluster/include/otpp/cluster/cluster.hpp).
  duration heartbeat_interval = 100ms;
  duration unreachable_after = 600ms;
  duration silence_timeout = 10s;
  duration connect_timeout = 2000ms;
  duration retry_initial = 50ms;
  duration retry_max = 2000ms;
  membership_options membership{};  // gossip 500 ms, fanout 3, keep_majority after 1000 ms
};

// Counters over the whole cluster since the last reset_counters().
struct sim_counters {
  std::uint64_t gossip_messages = 0;
  std::uint64_t gossip_bytes = 0;  // msgpack payload as the service frames it
  std::uint64_t gossip_lost = 0;
  std::uint64_t hello_messages = 0;
  std::uint64_t hello_bytes = 0;
  std::uint64_t blocked_messages = 0;
  std::uint64_t dials = 0;
  std::uint64_t node_up = 0;
  std::uint64_t node_down = 0;
  std::uint64_t node_unreachable = 0;
  std::uint64_t node_reachable = 0;
  std::uint64_t minority = 0;
  std::uint64_t majority = 0;
  std::uint64_t downed = 0;
  std::uint64_t events = 0;  // simulator events processed
};

class simulator {
 public:
  using event_hook = std::function<void(std::size_t node, const node_event&, time_point)>;

  explicit simulator(sim_options o)
      : opt_(std::move(o)), rng_(opt_.seed), now_(time_point{} + std::chrono::hours(1)) {}
  simulator(const simulator&) = delete;
  simulator& operator=(const simulator&) = delete;

  // Nodes are numbered from 0; ids sort like their numbers (the downing tie-break uses ids).
  static std::string node_name(std::size_t i) {
    char b[64];
    std::snprintf(b, sizeof b, "node%05zu@10.%zu.%zu.%zu:4370", i, (i >> 16) & 255, (i >> 8) & 255,
                  i & 255);
    return b;
  }

  // Room for `n` nodes in total (connection ends are a dense n x n table).
  void reserve(std::size_t n) {
    if (n <= cap_) return;
    std::vector<end> grown(n * n);
    for (std::size_t a = 0; a < cap_; ++a) {
      for (std::size_t b = 0; b < cap_; ++b) grown[a * n + b] = ends_[a * cap_ + b];
    }
    ends_ = std::move(grown);
    cap_ = n;
    group_.resize(n, 0);
  }

  // Starts `count` nodes that form one converged full mesh at once (as if they had joined
  // earlier): every node knows every other, every connection is up. Joining 1,000 nodes one
  // by one would cost a full-state hello per connection (1M of them) for nothing measured.
  void bootstrap(std::size_t count) {
    reserve(count);
    std::vector<std::size_t> ids;
    for (std::size_t i = 0; i < count; ++i) ids.push_back(create_node());
    std::vector<gossip_entry> everyone;
    for (auto i : ids)
      everyone.push_back(
          gossip_entry{nodes_[i].id, nodes_[i].creation, member_status::up, 0, errc::ok, {}});
    for (auto a : ids) {
      call(a, [&](membership& m) { m.gossip_received(nodes_[ids[0]].id, everyone, now_); });
      for (auto b : ids) {
        if (a == b) continue;
        if (a < b) open_connection(a, b);
        call(a, [&](membership& m) { m.peer_connected(nodes_[b].id, nodes_[b].creation, now_); });
      }
    }
    for (auto i : ids) schedule_tick(i, first_tick());
  }

  // Starts a new node that knows only `seed` (joins through it like a seed list of one).
  std::size_t add_node(std::optional<std::size_t> seed) {
    reserve(nodes_.size() + 1);
    auto i = create_node();
    if (seed) dial(i, *seed, 0);
    schedule_tick(i, now_ + heartbeat_phase());
    return i;
  }

  // The node's OS process is gone: its connections close at once (peers see the close after
  // a latency, then a refused probe), nothing answers there any more.
  void crash(std::size_t i) {
    auto& n = nodes_[i];
    if (!n.alive) return;
    n.alive = false;
    for (std::size_t p = 0; p < nodes_.size(); ++p) {
      if (p != i && at(i, p).open) close_end(i, p, /*tell_peer=*/true);
    }
  }

  // Each node gets a group; messages only flow inside a group. partition({}) heals.
  void partition(const std::vector<std::vector<std::size_t>>& groups) {
    settle_all_heartbeats();
    std::fill(group_.begin(), group_.end(), 0);
    int g = 1;
    for (const auto& members : groups) {
      for (auto i : members) group_[i] = g;
      ++g;
    }
    restart_heartbeats();
  }
  // One direction only: nothing from `from` reaches `to` (an asymmetric cut).
  void cut(std::size_t from, std::size_t to, bool on = true) {
    settle_all_heartbeats();
    if (on) {
      cuts_.insert(from * kCutKey + to);
    } else {
      cuts_.erase(from * kCutKey + to);
    }
    restart_heartbeats();
  }
  void set_loss(double p) {
    settle_all_heartbeats();
    opt_.loss = p;
    restart_heartbeats();
  }

  // Runs events up to `t` (inclusive); time is then `t`.
  void run_until(time_point t) {
    while (!queue_.empty() && queue_.top().at <= t) step();
    now_ = std::max(now_, t);
  }
  void run_for(duration d) { run_until(now_ + d); }
  // Runs until `done()` holds (checked after every event) or `deadline`; true if done.
  template <class Pred>
  bool run_until(Pred done, time_point deadline) {
    if (done()) return true;
    while (!queue_.empty() && queue_.top().at <= deadline) {
      step();
      if (done()) return true;
    }
    now_ = std::max(now_, deadline);
    return done();
  }

  time_point now() const noexcept { return now_; }
  std::size_t size() const noexcept { return nodes_.size(); }
  bool alive(std::size_t i) const { return nodes_[i].alive; }
  const std::string& id(std::size_t i) const { return nodes_[i].id; }
  std::uint32_t creation(std::size_t i) const { return nodes_[i].creation; }
  const membership& of(std::size_t i) const { return *nodes_[i].m; }
  // Up members (self excluded) this node announced with node_up and not yet node_down.
  std::size_t up_count(std::size_t i) const { return nodes_[i].up; }
  const sim_counters& counters() const noexcept { return counters_; }
  void reset_counters() { counters_ = {}; }
  // Called for every membership event of every node (after the counters are updated).
  void on_event(event_hook h) { hook_ = std::move(h); }
  // Msgpack size of a gossip frame carrying `state` (what the service sends).
  static std::size_t gossip_frame_bytes(const std::vector<gossip_entry>& state) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(1);
    pk.pack(state);
    return b.size();
  }

 private:
  static constexpr std::size_t kCutKey = 1u << 20;
  static constexpr time_point kNever = time_point::max();

  enum class ev : std::uint8_t { tick, deliver, remote_close, dial_done };
  enum class msg : std::uint8_t { hello, gossip, blocked };
  enum class dial_result : std::uint8_t { connected, refused, timeout };

  struct payload {
    std::vector<gossip_entry> state;
    std::size_t bytes = 0;
  };

  struct event {
    time_point at{};
    std::uint64_t seq = 0;
    ev kind{};
    std::uint32_t a = 0;  // the node it happens at (tick, dial_done: the dialer; else the receiver)
    std::uint32_t b = 0;  // the other node
    std::uint64_t epoch = 0;
    msg m = msg::gossip;
    dial_result dr = dial_result::connected;
    std::shared_ptr<const payload> data;
    bool operator>(const event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  // Node a's end of its connection to node b (index a * cap_ + b), and a's dial state for b.
  struct end {
    bool open = false;
    bool silent = false;
    std::uint64_t epoch = 0;
    std::uint32_t peer_creation = 0;
    time_point last_receive{};
    time_point fifo_out{};           // arrival of the last message a sent to b (TCP order)
    time_point hb_next = kNever;     // send time at b of the next heartbeat that reaches a
    time_point hb_arrival = kNever;  // a heartbeat in flight to a
    bool dial_in_flight = false;
    std::uint32_t dial_creation = 0;  // the incarnation a dial is for (0: a seed)
    unsigned dial_attempt = 0;
    time_point dial_next{};
  };

  struct node;
  struct node_io final : membership::io {
    simulator* s = nullptr;
    std::size_t self = 0;
    void send_gossip(const std::string& to, const std::vector<gossip_entry>& state) override {
      s->io_send_gossip(self, to, state);
    }
    void disconnect(const std::string& id, std::uint32_t creation, errc why) override {
      s->io_disconnect(self, id, creation, why);
    }
    void event(const node_event& e) override { s->io_event(self, e); }
  };

  struct node {
    std::string id;
    std::uint32_t creation = 0;
    bool alive = true;
    std::size_t up = 0;
    std::unique_ptr<node_io> io;
    std::unique_ptr<membership> m;
  };

  end& at(std::size_t a, std::size_t b) { return ends_[a * cap_ + b]; }

  duration latency() {
    std::uniform_int_distribution<std::int64_t> d(opt_.latency_min.count(),
                                                  opt_.latency_max.count());
    return duration(d(rng_));
  }
  bool lost() {
    return opt_.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < opt_.loss;
  }
  bool reachable(std::size_t from, std::size_t to) const {
    return group_[from] == group_[to] && (cuts_.empty() || !cuts_.count(from * kCutKey + to));
  }
  duration heartbeat_phase() {
    std::uniform_int_distribution<std::int64_t> d(0, opt_.heartbeat_interval.count() - 1);
    return duration(d(rng_));
  }
  time_point first_tick() { return now_ + heartbeat_phase(); }

  std::size_t create_node() {
    std::size_t i = nodes_.size();
    node n;
    n.id = node_name(i);
    n.creation = static_cast<std::uint32_t>(rng_() | 1u);
    n.io = std::make_unique<node_io>();
    n.io->s = this;
    n.io->self = i;
    n.m = std::make_unique<membership>(n.id, n.creation, opt_.membership, *n.io, rng_(), now_);
    index_.emplace(n.id, i);
    nodes_.push_back(std::move(n));
    return i;
  }

  // Every call into a membership goes through here: the gossip payload cache is only valid
  // while one call runs (the core passes the same vector to each peer of a round).
  template <class F>
  void call(std::size_t i, F&& f) {
    f(*nodes_[i].m);
    cache_src_ = nullptr;
    cache_.reset();
  }

  void push(event e) {
    e.seq = seq_++;
    queue_.push(std::move(e));
  }
  void schedule_tick(std::size_t i, time_point t) {
    event e;
    e.at = t;
    e.kind = ev::tick;
    e.a = static_cast<std::uint32_t>(i);
    push(std::move(e));
  }

  void step() {
    event e = queue_.top();
    queue_.pop();
    now_ = e.at;
    ++counters_.events;
    switch (e.kind) {
      case ev::tick:
        on_tick(e.a);
        break;
      case ev::deliver:
        on_deliver(e);
        break;
      case ev::remote_close:
        on_remote_close(e.a, e.b, e.epoch);
        break;
      case ev::dial_done:
        on_dial_done(e.a, e.b, e.dr);
        break;
    }
  }

  // ---- heartbeats (lazy per connection end)
  // Geometric skip: the send time of the next heartbeat from b that is not lost, from `from`.
  time_point next_heartbeat(time_point from) {
    if (opt_.loss <= 0) return from;
    std::geometric_distribution<std::int64_t> skipped(1.0 - opt_.loss);
    return from + opt_.heartbeat_interval * skipped(rng_);
  }
  // Delivers to a's end (from b) every heartbeat that arrived by now.
  void settle(std::size_t a, std::size_t b) {
    end& e = at(a, b);
    if (e.hb_arrival <= now_) {
      e.last_receive = std::max(e.last_receive, e.hb_arrival);
      e.hb_arrival = kNever;
    }
    while (e.hb_arrival == kNever && e.hb_next <= now_) {
      auto arrival = e.hb_next + latency();
      e.hb_next = next_heartbeat(e.hb_next + opt_.heartbeat_interval);
      if (arrival <= now_) {
        e.last_receive = std::max(e.last_receive, arrival);
      } else {
        e.hb_arrival = arrival;
      }
    }
  }
  // (Re)starts the heartbeat stream from b to a's end if b sends and the path is open.
  void start_heartbeats(std::size_t a, std::size_t b) {
    end& e = at(a, b);
    const end& theirs = at(b, a);
    if (e.open && theirs.open && theirs.epoch == e.epoch && nodes_[b].alive && reachable(b, a)) {
      e.hb_next = next_heartbeat(now_ + heartbeat_phase());
    } else {
      e.hb_next = kNever;
    }
  }
  void settle_all_heartbeats() {
    for (std::size_t a = 0; a < nodes_.size(); ++a) {
      for (std::size_t b = 0; b < nodes_.size(); ++b) {
        if (a != b && at(a, b).open) settle(a, b);
      }
    }
  }
  // After the network changed: heartbeat streams follow the new paths, and an end whose
  // peer closed it while the path was cut now gets the peer's reset (its next heartbeat
  // reaches a closed socket).
  void restart_heartbeats() {
    for (std::size_t a = 0; a < nodes_.size(); ++a) {
      for (std::size_t b = 0; b < nodes_.size(); ++b) {
        if (a == b || !at(a, b).open) continue;
        start_heartbeats(a, b);
        const end& theirs = at(b, a);
        bool stale = !theirs.open || theirs.epoch != at(a, b).epoch;
        if (stale && nodes_[b].alive && reachable(a, b) && reachable(b, a)) {
          event c;
          c.at = now_ + latency() + latency();
          c.kind = ev::remote_close;
          c.a = static_cast<std::uint32_t>(a);
          c.b = static_cast<std::uint32_t>(b);
          c.epoch = at(a, b).epoch;
          push(std::move(c));
        }
      }
    }
  }

  // ---- connections
  void open_connection(std::size_t a, std::size_t b) {
    auto epoch = ++epochs_;
    for (auto [x, y] : {std::pair{a, b}, std::pair{b, a}}) {
      end& e = at(x, y);
      e.open = true;
      e.silent = false;
      e.epoch = epoch;
      e.peer_creation = nodes_[y].creation;
      e.last_receive = now_;
      e.fifo_out = now_;
      e.hb_arrival = kNever;
      e.dial_in_flight = false;
      e.dial_attempt = 0;
      e.dial_next = {};
    }
    start_heartbeats(a, b);
    start_heartbeats(b, a);
  }

  // Closes a's end; the peer's end closes when the close reaches it (not across a cut).
  void close_end(std::size_t a, std::size_t b, bool tell_peer) {
    end& e = at(a, b);
    if (!e.open) return;
    e.open = false;
    e.hb_next = kNever;
    e.hb_arrival = kNever;
    if (at(b, a).epoch == e.epoch) at(b, a).hb_next = kNever;  // a sends no more heartbeats
    if (tell_peer && reachable(a, b)) {
      event c;
      c.at = std::max(now_ + latency(), e.fifo_out);
      c.kind = ev::remote_close;
      c.a = static_cast<std::uint32_t>(b);
      c.b = static_cast<std::uint32_t>(a);
      c.epoch = e.epoch;
      push(std::move(c));
    }
  }

  void send(std::size_t from, std::size_t to, msg m, std::shared_ptr<const payload> data) {
    end& e = at(from, to);
    if (!e.open || !nodes_[from].alive) return;
    if (m == msg::gossip) {
      ++counters_.gossip_messages;
      counters_.gossip_bytes += data->bytes;
      if (lost()) {
        ++counters_.gossip_lost;
        return;
      }
    } else if (m == msg::hello) {
      ++counters_.hello_messages;
      counters_.hello_bytes += data->bytes;
    } else {
      ++counters_.blocked_messages;
    }
    if (!reachable(from, to)) return;
    event d;
    d.at = std::max(now_ + latency(), e.fifo_out);
    e.fifo_out = d.at;
    d.kind = ev::deliver;
    d.a = static_cast<std::uint32_t>(to);
    d.b = static_cast<std::uint32_t>(from);
    d.epoch = e.epoch;
    d.m = m;
    d.data = std::move(data);
    push(std::move(d));
  }

  static bool same_state(const std::vector<gossip_entry>& x, const std::vector<gossip_entry>& y) {
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const auto& p = x[i];
      const auto& q = y[i];
      if (p.heartbeat != q.heartbeat || p.creation != q.creation || p.status != q.status ||
          p.reason != q.reason || p.id != q.id || p.tags != q.tags) {
        return false;
      }
    }
    return true;
  }

  std::shared_ptr<const payload> make_payload(const std::vector<gossip_entry>& state,
                                              std::size_t extra) {
    auto p = std::make_shared<payload>();
    p->state = state;
    p->bytes = gossip_frame_bytes(state) + extra;
    return p;
  }

  void send_hello(std::size_t from, std::size_t to) {
    const auto& m = *nodes_[from].m;
    if (m.is_blocked(nodes_[to].id, nodes_[to].creation)) {
      // [send_hello] a downed incarnation is told so and closed.
      send(from, to, msg::blocked, nullptr);
      close_end(from, to, true);
      return;
    }
    // Version and hidden flag next to the state: 2 more bytes than a gossip frame.
    send(from, to, msg::hello, make_payload(m.state(), 2));
  }

  // ---- dialing
  void dial(std::size_t a, std::size_t b, std::uint32_t creation) {
    end& d = at(a, b);
    if (d.dial_in_flight) return;
    d.dial_in_flight = true;
    d.dial_creation = creation;
    ++counters_.dials;
    event e;
    e.kind = ev::dial_done;
    e.a = static_cast<std::uint32_t>(a);
    e.b = static_cast<std::uint32_t>(b);
    if (!nodes_[b].alive) {
      e.dr = dial_result::refused;
      e.at = now_ + latency() + latency();
    } else if (!reachable(a, b) || !reachable(b, a)) {
      e.dr = dial_result::timeout;
      e.at = now_ + opt_.connect_timeout;
    } else {
      e.dr = dial_result::connected;
      e.at = now_ + latency() + latency() + latency();
    }
    push(std::move(e));
  }

  duration backoff(unsigned attempt) {
    auto cap = std::min<std::int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(opt_.retry_max).count(),
        std::chrono::duration_cast<std::chrono::milliseconds>(opt_.retry_initial).count()
            << std::min(attempt, 16u));
    std::uniform_int_distribution<std::int64_t> jitter(cap / 2, std::max<std::int64_t>(cap, 1));
    return std::chrono::milliseconds(jitter(rng_));
  }

  void on_dial_done(std::size_t a, std::size_t b, dial_result r) {
    end& d = at(a, b);
    d.dial_in_flight = false;
    if (!nodes_[a].alive) return;
    if (r == dial_result::connected && nodes_[b].alive && reachable(a, b) && reachable(b, a)) {
      d.dial_attempt = 0;
      d.dial_next = {};
      // [transport] one connection per pair: a dial that finds one up on both ends is moot.
      if (d.open && at(b, a).open && at(b, a).epoch == d.epoch) return;
      open_connection(a, b);
      send_hello(a, b);
      send_hello(b, a);
      return;
    }
    auto& m = *nodes_[a].m;
    const auto& bid = nodes_[b].id;
    if (r == dial_result::refused && !d.open) {
      // [dial_done] nothing listens where the member was: its OS process is gone.
      auto creation = d.dial_creation;
      if (creation != 0 && m.is_up(bid, creation)) {
        call(a, [&](membership& mm) {
          mm.peer_disconnected(bid, creation, true, errc::connection_closed, now_);
        });
        d.dial_attempt = 0;
        d.dial_next = {};
        after_change(a);
        return;
      }
    }
    d.dial_next = now_ + backoff(d.dial_attempt++);
  }

  void dial_wanted(std::size_t a) {
    if (!nodes_[a].alive) return;
    for (const auto& [id, creation] : nodes_[a].m->wanted_connections()) {
      auto it = index_.find(id);
      if (it == index_.end()) continue;
      end& d = at(a, it->second);
      if (!d.dial_in_flight && now_ >= d.dial_next) dial(a, it->second, creation);
    }
  }
  void after_change(std::size_t a) { dial_wanted(a); }

  // ---- event handlers
  void on_tick(std::size_t a) {
    if (!nodes_[a].alive) return;
    // [check_silence]
    for (std::size_t b = 0; b < nodes_.size(); ++b) {
      if (b == a) continue;
      end& e = at(a, b);
      if (!e.open) continue;
      settle(a, b);
      auto quiet = now_ - e.last_receive;
      if (quiet > opt_.silence_timeout) {
        // [transport] silence_timeout closes the connection.
        close_end(a, b, true);
        handle_down(a, b, e.peer_creation, errc::heartbeat_timeout);
        continue;
      }
      bool silent = quiet > opt_.unreachable_after;
      if (silent == e.silent) continue;
      e.silent = silent;
      auto creation = e.peer_creation;
      call(a, [&](membership& m) { m.peer_silent(nodes_[b].id, creation, silent, now_); });
    }
    call(a, [&](membership& m) { m.tick(now_); });
    dial_wanted(a);
    schedule_tick(a, now_ + opt_.heartbeat_interval);
  }

  void on_deliver(const event& ev) {
    std::size_t to = ev.a, from = ev.b;
    if (!nodes_[to].alive) return;
    end& e = at(to, from);
    if (!e.open || e.epoch != ev.epoch) return;
    e.last_receive = std::max(e.last_receive, now_);
    const auto& fid = nodes_[from].id;
    auto fcreation = e.peer_creation;
    switch (ev.m) {
      case msg::hello: {
        // [handle_state]
        bool ok = true;
        call(to, [&](membership& m) { ok = m.peer_connected(fid, fcreation, now_); });
        if (!ok) {
          send(to, from, msg::blocked, nullptr);
          close_end(to, from, true);
          return;
        }
        e.silent = false;
        call(to, [&](membership& m) { m.gossip_received(fid, ev.data->state, now_); });
        after_change(to);
        break;
      }
      case msg::gossip:
        call(to, [&](membership& m) { m.gossip_received(fid, ev.data->state, now_); });
        after_change(to);
        break;
      case msg::blocked: {
        // [handle_blocked] the peer says this incarnation was downed.
        std::vector<gossip_entry> verdict{gossip_entry{
            nodes_[to].id, nodes_[to].creation, member_status::down, 0, errc::downed, {}}};
        call(to, [&](membership& m) { m.gossip_received(fid, verdict, now_); });
        after_change(to);
        break;
      }
    }
  }

  void on_remote_close(std::size_t a, std::size_t b, std::uint64_t epoch) {
    if (!nodes_[a].alive) return;
    end& e = at(a, b);
    if (!e.open || e.epoch != epoch) return;
    close_end(a, b, false);
    handle_down(a, b, e.peer_creation, errc::connection_closed);
  }

  // [handle_down] a's end to b closed.
  void handle_down(std::size_t a, std::size_t b, std::uint32_t creation, errc why) {
    auto& m = *nodes_[a].m;
    const auto& bid = nodes_[b].id;
    if (!m.is_up(bid, creation)) return;
    if (m.is_leaving(bid, creation)) {
      call(a, [&](membership& mm) {
        mm.peer_disconnected(bid, creation, true, errc::graceful_shutdown, now_);
      });
      after_change(a);
      return;
    }
    call(a, [&](membership& mm) { mm.peer_disconnected(bid, creation, false, why, now_); });
    dial(a, b, creation);  // the probe: refused at once if b's process is gone
    after_change(a);
  }

  // ---- membership::io
  void io_send_gossip(std::size_t from, const std::string& to,
                      const std::vector<gossip_entry>& state) {
    auto it = index_.find(to);
    if (it == index_.end()) return;
    // The address alone could be a new vector where an earlier one lived: compare contents.
    if (cache_src_ != &state || !same_state(cache_->state, state)) {
      cache_ = make_payload(state, 0);
      cache_src_ = &state;
    }
    send(from, it->second, msg::gossip, cache_);
  }
  void io_disconnect(std::size_t from, const std::string& id, std::uint32_t creation, errc why) {
    (void)why;
    auto it = index_.find(id);
    if (it == index_.end()) return;
    end& e = at(from, it->second);
    if (!e.open || e.peer_creation != creation) return;
    // [service disconnect] tells the peer it was downed, then closes.
    send(from, it->second, msg::blocked, nullptr);
    close_end(from, it->second, true);
  }
  void io_event(std::size_t at_node, const node_event& e) {
    auto& n = nodes_[at_node];
    switch (e.kind) {
      case node_event_kind::node_up:
        ++counters_.node_up;
        ++n.up;
        break;
      case node_event_kind::node_down:
        ++counters_.node_down;
        --n.up;
        break;
      case node_event_kind::node_unreachable:
        ++counters_.node_unreachable;
        break;
      case node_event_kind::node_reachable:
        ++counters_.node_reachable;
        break;
      case node_event_kind::minority:
        ++counters_.minority;
        break;
      case node_event_kind::majority:
        ++counters_.majority;
        break;
      case node_event_kind::downed:
        ++counters_.downed;
        break;
    }
    if (hook_) hook_(at_node, e, now_);
  }

  sim_options opt_;
  std::mt19937_64 rng_;
  time_point now_;
  std::uint64_t seq_ = 0;
  std::uint64_t epochs_ = 0;
  std::priority_queue<event, std::vector<event>, std::greater<>> queue_;
  std::vector<node> nodes_;
  std::unordered_map<std::string, std::size_t> index_;
  std::size_t cap_ = 0;
  std::vector<end> ends_;
  std::vector<int> group_;
  std::unordered_set<std::size_t> cuts_;
  sim_counters counters_;
  event_hook hook_;
  const std::vector<gossip_entry>* cache_src_ = nullptr;
  std::shared_ptr<const payload> cache_;
};

// ---- Scenarios: shared by otpp_cluster_sim and tests/cluster/sim_test.cpp. Each runs on a
// simulator whose nodes are all up and connected, measures one thing on virtual time, and
// leaves the simulator running (the next scenario continues from there).

inline double to_ms(duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct join_outcome {
  bool converged = false;
  duration time{};                   // until every node lists every other as up
  std::size_t node = 0;              // the new node
  std::uint64_t hello_messages = 0;  // both directions, every connection of the new node
  std::uint64_t hello_bytes = 0;
  std::uint64_t hello_bytes_from_seed = 0;  // the one hello that carries the cluster to it
};

// A new node joins through `seed`; done when all nodes (the new one included) have node_up
// for every other.
inline join_outcome measure_join(simulator& s, std::size_t seed, duration limit) {
  join_outcome out;
  s.reset_counters();
  const auto start = s.now();
  const std::size_t members = s.size() + 1;  // alive nodes after the join
  std::size_t alive = 0;
  for (std::size_t i = 0; i < s.size(); ++i) alive += s.alive(i) ? 1 : 0;
  const std::size_t target = alive;  // others each node must see up
  std::vector<char> done(members, 0);
  std::size_t ready = 0;
  auto check = [&](std::size_t i) {
    bool now_done = s.up_count(i) == target;
    if (now_done != static_cast<bool>(done[i])) {
      done[i] = now_done;
      if (now_done) {
        ++ready;
      } else {
        --ready;
      }
    }
  };
  s.on_event([&](std::size_t i, const node_event& e, time_point) {
    if (e.kind == node_event_kind::node_up || e.kind == node_event_kind::node_down) check(i);
  });
  out.node = s.add_node(seed);
  out.hello_bytes_from_seed = simulator::gossip_frame_bytes(s.of(seed).state()) + 2;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.alive(i)) check(i);
  }
  const std::size_t need = alive + 1;
  out.converged = s.run_until([&] { return ready == need; }, start + limit);
  out.time = s.now() - start;
  out.hello_messages = s.counters().hello_messages;
  out.hello_bytes = s.counters().hello_bytes;
  s.on_event({});
  return out;
}

struct crash_outcome {
  bool converged = false;
  duration time{};  // until every survivor has node_down for the crashed node
  std::size_t survivors = 0;
  std::size_t reason_connection_closed = 0;
};

inline crash_outcome measure_crash(simulator& s, std::size_t victim, duration limit) {
  crash_outcome out;
  const auto start = s.now();
  const auto& vid = s.id(victim);
  std::size_t seen = 0;
  s.on_event([&](std::size_t, const node_event& e, time_point) {
    if (e.kind == node_event_kind::node_down && e.node == vid) {
      ++seen;
      if (e.reason == errc::connection_closed) ++out.reason_connection_closed;
    }
  });
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != victim && s.alive(i) && !s.of(i).downed()) ++out.survivors;
  }
  s.crash(victim);
  out.converged = s.run_until([&] { return seen >= out.survivors; }, start + limit);
  out.time = s.now() - start;
  s.on_event({});
  return out;
}

struct gossip_outcome {
  double bytes_per_node_per_s = 0;
  double messages_per_node_per_s = 0;
  double bytes_per_message = 0;
};

inline gossip_outcome measure_gossip(simulator& s, duration window) {
  std::size_t alive = 0;
  for (std::size_t i = 0; i < s.size(); ++i) alive += s.alive(i) ? 1 : 0;
  s.reset_counters();
  s.run_for(window);
  const double secs = std::chrono::duration<double>(window).count();
  const auto& c = s.counters();
  gossip_outcome out;
  out.bytes_per_node_per_s = static_cast<double>(c.gossip_bytes) / alive / secs;
  out.messages_per_node_per_s = static_cast<double>(c.gossip_messages) / alive / secs;
  out.bytes_per_message =
      c.gossip_messages ? static_cast<double>(c.gossip_bytes) / c.gossip_messages : 0;
  return out;
}

struct loss_outcome {
  std::uint64_t node_down = 0;  // false downings (no node failed)
  std::uint64_t downed = 0;
  std::uint64_t minority = 0;
  std::uint64_t unreachable = 0;  // unreachable flaps (each node's view of each peer)
  std::uint64_t reachable = 0;
  std::uint64_t gossip_lost = 0;
};

// No failure, only message loss for `window`; then loss stops.
inline loss_outcome measure_loss(simulator& s, double loss, duration window) {
  s.set_loss(loss);
  s.reset_counters();
  s.run_for(window);
  const auto& c = s.counters();
  loss_outcome out{c.node_down,        c.downed,         c.minority,
                   c.node_unreachable, c.node_reachable, c.gossip_lost};
  s.set_loss(0);
  return out;
}

struct partition_outcome {
  bool decided = false;
  duration majority_time{};  // until every majority node has downed every minority node
  duration minority_time{};  // until every minority node reported minority
  std::size_t majority = 0, minority = 0;
  // Wrong outcomes (all 0 when the split went as it should).
  std::uint64_t majority_reported_minority = 0;
  std::uint64_t minority_downed_someone = 0;
  std::uint64_t downed = 0;
  std::uint64_t majority_downed_majority = 0;
};

// Splits the alive nodes in two: the first `share` of them (by number) against the rest.
inline partition_outcome measure_partition(simulator& s, double share, duration limit) {
  partition_outcome out;
  std::vector<std::size_t> alive;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.alive(i) && !s.of(i).downed()) alive.push_back(i);
  }
  const std::size_t cut = static_cast<std::size_t>(alive.size() * share + 0.5);
  std::vector<std::size_t> big(alive.begin(), alive.begin() + cut);
  std::vector<std::size_t> small(alive.begin() + cut, alive.end());
  out.majority = big.size();
  out.minority = small.size();
  std::vector<char> in_small(s.size(), 0);
  for (auto i : small) in_small[i] = 1;
  std::unordered_map<std::string, std::size_t> small_ids;
  for (auto i : small) small_ids.emplace(s.id(i), i);
  std::vector<std::size_t> downs(s.size(), 0);
  std::size_t big_done = 0, small_done = 0;
  const auto start = s.now();
  s.on_event([&](std::size_t i, const node_event& e, time_point t) {
    switch (e.kind) {
      case node_event_kind::node_down:
        if (in_small[i]) {
          ++out.minority_downed_someone;
        } else if (small_ids.count(e.node)) {
          if (++downs[i] == small.size() && ++big_done == big.size()) out.majority_time = t - start;
        } else {
          ++out.majority_downed_majority;
        }
        break;
      case node_event_kind::minority:
        if (in_small[i]) {
          if (++small_done == small.size()) out.minority_time = t - start;
        } else {
          ++out.majority_reported_minority;
        }
        break;
      case node_event_kind::downed:
        ++out.downed;
        break;
      default:
        break;
    }
  });
  s.partition({big, small});
  out.decided = s.run_until([&] { return big_done == big.size() && small_done == small.size(); },
                            start + limit);
  s.on_event({});
  return out;
}

}  // namespace otpp::cluster::sim
