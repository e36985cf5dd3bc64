// The cluster service of a node: transport endpoint, membership, and the router that carries
// envelopes to other nodes.
//
// Threads: membership runs on one strand of the node's io_context (control). Data frames
// (messages, calls, replies, signals) never go there: they are decoded on the connection's I/O
// thread and pushed straight into the target's inbox, and route() runs on the sender's thread
// and hands one frame to the connection. The round trip of a remote call therefore has no
// hop besides the ones Asio needs: caller -> connection writer -> (network) -> reader ->
// callee's turn -> writer -> (network) -> reader -> caller's completion.
#include "otpp/cluster/cluster.hpp"

#include <algorithm>
#include <array>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "otpp/call.hpp"
#include "otpp/domain_error.hpp"
#include "otpp/log.hpp"
#include "otpp/router.hpp"
#include "otpp/transport/endpoint.hpp"
#include "wire.hpp"

namespace otpp::cluster {

namespace {

// Errors of a user's own category come back as this category with the same value; the reason
// names the original category.
class remote_category_t final : public std::error_category {
 public:
  const char* name() const noexcept override { return "otpp.remote"; }
  std::string message(int value) const override { return "remote error " + std::to_string(value); }
};
const remote_category_t remote_category_instance{};

using bytes_view = transport::bytes_view;

// Frames are built in a per-thread buffer; the connection copies them into its queue.
msgpack::sbuffer& scratch() {
  thread_local msgpack::sbuffer buffer(4096);
  buffer.clear();
  return buffer;
}
bytes_view view(const msgpack::sbuffer& b) {
  return bytes_view(reinterpret_cast<const std::uint8_t*>(b.data()), b.size());
}

// A message from another node: one allocation holding its tag and body bytes. The body is
// unpacked on the target's turn (first body() call), into a zone that thread makes and frees.
struct wire_envelope final : detail::message_envelope {
  static wire_envelope* make(detail::envelope_kind k, pid from, const wire::message_frame& m) {
    void* mem = ::operator new(sizeof(wire_envelope) + m.tag.size() + m.body_size);
    auto* tail = static_cast<char*>(mem) + sizeof(wire_envelope);
    std::memcpy(tail, m.tag.data(), m.tag.size());
    std::memcpy(tail + m.tag.size(), m.body, m.body_size);
    return new (mem)
        wire_envelope(k, from, std::string_view(tail, m.tag.size()),
                      reinterpret_cast<const std::uint8_t*>(tail + m.tag.size()), m.body_size);
  }
  static void operator delete(void* p) { ::operator delete(p); }

  const msgpack::object* body() const override {
    if (!zone_) {
      zone_.emplace(body_size_ * 2 + 256);
      // Checked well-formed on arrival; a failure here can only be a limit: answered as a
      // body that does not decode (nil).
      auto o = wire::decode_body(*zone_, body_bytes_, body_size_);
      object_ = o ? *o : msgpack::object();
    }
    return &object_;
  }

 private:
  wire_envelope(detail::envelope_kind k, pid from, std::string_view tag, const std::uint8_t* body,
                std::size_t body_size)
      : message_envelope(k, from, tag, nullptr), body_bytes_(body), body_size_(body_size) {}
  const std::uint8_t* body_bytes_;
  std::size_t body_size_;
  mutable std::optional<msgpack::zone> zone_;
  mutable msgpack::object object_;
};

// The callee's side of a call from another node: its completion becomes a reply frame.
class wire_call_state final : public detail::call_state_base {
 public:
  wire_call_state(transport::connection_ptr conn, std::uint64_t id)
      : conn_(std::move(conn)), id_(id) {}
  void complete_value(void* value, const value_codec* codec) override {
    if (!codec || !codec->pack) {
      complete_error(failure(errc::not_serializable, "the reply type has no msgpack mapping"));
      return;
    }
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(3);
    pk.pack(id_);
    pk.pack(static_cast<std::uint8_t>(wire::status::ok));
    codec->pack(pk, value);
    send(b);
  }
  void complete_error(failure f) override {
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    auto st = wire::to_status(f.code);
    if (st == wire::status::foreign_error) {
      pk.pack_array(5);
      pk.pack(id_);
      pk.pack(static_cast<std::uint8_t>(st));
      pk.pack(f.reason);
      pk.pack(std::string(f.code.category().name()));
      pk.pack(f.code.value());
    } else if (st == wire::status::domain_error) {
      auto d = domain_of(f);
      auto details = domain_details_bytes(f);
      pk.pack_array(6);
      pk.pack(id_);
      pk.pack(static_cast<std::uint8_t>(st));
      pk.pack(std::string_view(f.reason.c_str()));
      pk.pack(d->code);
      pk.pack(d->message);
      pk.pack_bin(static_cast<std::uint32_t>(details.size()));
      pk.pack_bin_body(details.data(), static_cast<std::uint32_t>(details.size()));
    } else {
      pk.pack_array(3);
      pk.pack(id_);
      pk.pack(static_cast<std::uint8_t>(st));
      pk.pack(st == wire::status::other ? f.message() : f.reason);
    }
    send(b);
  }
  void complete_encoded(const msgpack::object& reply) override {
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(3);
    pk.pack(id_);
    pk.pack(static_cast<std::uint8_t>(wire::status::ok));
    pk.pack(reply);
    send(b);
  }
  void abandon() override {}

 private:
  void send(const msgpack::sbuffer& b) {
    auto sent = conn_->send(wire::kind::reply, view(b));
    if (!sent && sent.error() == make_error_code(errc::frame_too_large) && !error_sent_) {
      // A reply over the connection's frame bound: the caller hears why at once instead of
      // waiting out its timeout.
      error_sent_ = true;
      log(log_level::warning, "cluster", "reply to call ", id_, " for ", conn_->peer_id(), " is ",
          b.size(), " bytes, over the frame bound: answered frame_too_large");
      complete_error(failure(errc::frame_too_large, "the reply (" + std::to_string(b.size()) +
                                                        " bytes) is over the bound"));
      return;
    }
    if (!sent) {
      // The caller hears nodedown (or its timeout) from its own node.
      log(log_level::debug, "cluster", "reply to call ", id_, " for ", conn_->peer_id(),
          " lost: ", sent.fail().message());
    }
  }
  transport::connection_ptr conn_;
  std::uint64_t id_;
  bool error_sent_ = false;
};

// Links and monitors that cross to one peer node: what must fire noconnection when the
// connection is lost, and what must be cleaned up. Pairs are (local pid, remote pid).
struct peer_watches {
  std::set<std::pair<pid, pid>> links;
  std::map<std::uint64_t, std::pair<pid, pid>> monitors_out;  // ref -> (local watcher, remote)
  std::map<std::pair<pid, std::uint64_t>, pid> monitors_in;   // (remote watcher, ref) -> local
};

// Moves the entries of `from` that satisfy `pred` into `to`.
template <class Container, class Pred>
void move_if(Container& from, Container& to, Pred pred) {
  for (auto it = from.begin(); it != from.end();) {
    if (pred(*it)) {
      to.insert(*it);
      it = from.erase(it);
    } else {
      ++it;
    }
  }
}

struct route_entry {
  transport::connection_ptr conn;
  std::uint32_t creation = 0;
};

struct dial_state {
  unsigned attempt = 0;
  time_point next{};
  bool in_flight = false;
  unsigned quick_probes = 0;  // probes redone at once after a reset (see dial_done)
};

struct seed_entry {
  std::string host;
  std::uint16_t port = 0;
  std::string text;
  dial_state dial;
  bool self = false;
};

result<seed_entry> parse_seed(const std::string& text) {
  if (text.find('@') != std::string::npos) {
    auto id = node_id::parse(text);
    if (!id) return id.fail();
    return seed_entry{id->host, id->port, text, {}, false};
  }
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return failure(errc::invalid_argument,
                   "seed '" + text + "': expected host:port or name@host:port");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = 0;
  } catch (...) {
    port = 0;
  }
  if (port == 0 || port > 65535)
    return failure(errc::invalid_argument, "seed '" + text + "': bad port");
  return seed_entry{host, static_cast<std::uint16_t>(port), text, {}, false};
}

class service_impl;

}  // namespace

namespace {

class service_impl final : public service,
                           public router,
                           public membership::io,
                           public std::enable_shared_from_this<service_impl> {
 public:
  service_impl(node& n, options o, node_id self)
      : node_(n),
        opt_(std::move(o)),
        self_(std::move(self)),
        self_text_(n.name()),
        strand_(asio::make_strand(n.context())),
        timer_(strand_),
        resolver_(strand_),
        rng_(std::random_device{}()) {
    // Before start(): nothing can happen that this subscriber does not hear.
    if (opt_.on_event) subs_.emplace(++next_sub_, opt_.on_event);
  }

  result<void> start() {
    for (const auto& s : opt_.seeds) {
      auto seed = parse_seed(s);
      if (!seed) {
        log(log_level::error, "cluster", self_text_, ": ", seed.fail().message());
        return seed.fail();
      }
      seed_status view;
      view.seed = seed->text;
      seed_view_.push_back(std::move(view));
      seeds_.push_back(std::move(*seed));
    }
    for (const auto& [id, where] : opt_.addresses) {
      auto parsed = parse_seed(where);
      if (!parsed) {
        log(log_level::error, "cluster", self_text_, ": address of ", id, ": ",
            parsed.fail().message());
        return parsed.fail();
      }
    }
    transport::config cfg = opt_.transport;
    cfg.node_id = self_text_;
    cfg.creation = node_.creation();
    cfg.heartbeat_interval = opt_.heartbeat_interval;
    cfg.silence_timeout = opt_.silence_timeout;
    cfg.handshake_timeout = opt_.connect_timeout;
    // Only the kinds this protocol version knows: anything else closes the connection in the
    // transport (unknown_frame_kind) before it reaches this layer.
    cfg.accepted_kinds.reset();
    for (auto k : {wire::kind::hello, wire::kind::gossip, wire::kind::leave, wire::kind::blocked,
                   wire::kind::send, wire::kind::call, wire::kind::reply, wire::kind::signal,
                   wire::kind::down, wire::kind::channel}) {
      cfg.accepted_kinds.set(k);
    }
    std::weak_ptr<service_impl> weak = shared_from_this();
    transport::connection_events ev;
    ev.on_up = [weak](const transport::connection_ptr& c) {
      if (auto s = weak.lock()) s->on_up(c);
    };
    ev.on_frame = [weak](const transport::connection_ptr& c, transport::frame_view f) {
      if (auto s = weak.lock()) s->on_frame(c, f);
    };
    ev.on_down = [weak](const transport::connection_ptr& c, const failure& why) {
      if (auto s = weak.lock()) s->on_down(c, why);
    };
    ev.on_rejected = [weak](const failure& why, const std::string& remote) {
      if (auto s = weak.lock()) {
        log(log_level::warning, "cluster", s->self_text_, ": refused connection from ", remote,
            ": ", why.message());
      }
    };
    auto ep = transport::endpoint::create(node_.context(), cfg, std::move(ev));
    if (!ep) {
      log(log_level::error, "cluster", self_text_,
          ": cannot start the transport: ", ep.fail().message());
      return ep.fail();
    }
    endpoint_ = std::move(*ep);
    std::string bind = opt_.bind_address.empty() ? self_.host : opt_.bind_address;
    std::error_code ec;
    auto address = asio::ip::make_address(bind, ec);
    if (ec) {
      // A host name: listen on what it resolves to first.
      asio::ip::tcp::resolver r(node_.context());
      auto found = r.resolve(bind, "0", ec);
      if (ec || found.empty()) {
        return failure(errc::invalid_argument, "cannot resolve listen host '" + bind + "'");
      }
      address = found.begin()->endpoint().address();
    }
    const std::uint16_t listen_port = opt_.listen_port ? opt_.listen_port : self_.port;
    auto bound = endpoint_->listen(asio::ip::tcp::endpoint(address, listen_port));
    if (!bound) {
      log(log_level::error, "cluster", self_text_, ": cannot listen on ", bind, ":", self_.port,
          ": ", bound.fail().message());
      return bound.fail();
    }
    bound_ = *bound;
    for (auto& s : seeds_) {
      std::error_code sec;
      auto a = asio::ip::make_address(s.host, sec);
      if (!sec && (s.port == bound_.port() || s.port == self_.port) &&
          (a == bound_.address() || (bound_.address().is_unspecified() && a.is_loopback()))) {
        s.self = true;  // a node listed in its own seeds ignores itself
      }
    }
    membership_options mo;
    mo.downing = opt_.hidden ? downing_options{.strategy = downing_strategy::off} : opt_.downing;
    mo.gossip_fanout = opt_.gossip_fanout;
    mo.gossip_interval = opt_.gossip_interval;
    mo.tags = opt_.tags;
    membership_.emplace(self_text_, node_.creation(), mo, *this, rng_(), node_.now());
    set_router(node_, this);
    std::weak_ptr<service_impl> w2 = shared_from_this();
    node_.add_stop_hook([w2] {
      if (auto s = w2.lock()) s->leave_and_wait();
    });
    log(log_level::info, "cluster", self_text_, ": listening on ", bound_.address().to_string(),
        ":", bound_.port(), opt_.hidden ? " (hidden)" : "", ", ", seeds_.size(), " seed(s)");
    asio::post(strand_, [self = shared_from_this()] { self->on_tick(); });
    return {};
  }

  // Called when the node is destroyed (its services go after its processes).
  // The node's threads have ended (or never ran this service's work): nothing else touches the
  // timer and resolver. Cancelling them lets the node's last poll release their handlers (and
  // with them this service) while the io_context is still alive.
  void shutdown() {
    set_router(node_, nullptr);
    closed_.store(true);
    if (endpoint_) endpoint_->close();
    timer_.cancel();
    resolver_.cancel();
  }

  // ---- service
  const node_id& self() const override { return self_; }
  std::uint16_t port() const override { return bound_.port(); }
  std::vector<member> members() const override {
    std::lock_guard lock(view_mu_);
    return members_view_;
  }
  subscription subscribe(std::function<void(const node_event&)> f) override {
    std::lock_guard lock(subs_mu_);
    auto id = ++next_sub_;
    subs_.emplace(id, std::move(f));
    return id;
  }
  void unsubscribe(subscription s) override {
    std::lock_guard lock(subs_mu_);
    subs_.erase(s);
  }
  void monitor_nodes(const pid& p, bool on) override {
    std::lock_guard lock(subs_mu_);
    if (on) {
      node_monitors_.insert(p);
    } else {
      node_monitors_.erase(p);
    }
  }
  void leave() override { leave_and_wait(); }
  void set_tag(std::string key, std::string value) override {
    asio::post(strand_, [self = shared_from_this(), key = std::move(key),
                         value = std::move(value)]() mutable {
      if (!self->membership_) return;
      if (value.empty()) {
        self->opt_.tags.erase(key);
      } else {
        self->opt_.tags[key] = std::move(value);
      }
      self->membership_->set_tags(self->opt_.tags);
      self->publish_view();
    });
  }
  bool in_minority() const override { return minority_.load(); }
  bool downed() const override { return downed_.load(); }
  cluster_stats stats() const override {
    cluster_stats s;
    s.frames_in = frames_in_.load();
    s.frames_out = frames_out_.load();
    s.bad_frames = bad_frames_.load();
    s.undeliverable = undeliverable_.load();
    s.connect_attempts = connect_attempts_.load();
    s.rejected_peers = rejected_peers_.load();
    s.bytes_in = ended_bytes_in_.load();
    s.bytes_out = ended_bytes_out_.load();
    if (endpoint_) {
      const auto conns = endpoint_->connections();
      s.connections = conns.size();
      for (const auto& c : conns) {
        s.bytes_in += c->bytes_received();
        s.bytes_out += c->bytes_sent();
      }
    }
    s.channel_frames_dropped = channel_dropped_.load();
    {
      std::lock_guard lock(node_mon_mu_);
      s.node_monitors = node_mons_.size();
    }
    std::lock_guard lock(watch_mu_);
    for (const auto& [a, w] : watches_) {
      s.links += w.links.size();
      s.monitors += w.monitors_out.size() + w.monitors_in.size();
    }
    return s;
  }

  // ---- monitor_node
  std::uint64_t monitor_node(const pid& watcher, std::string_view node_id) override {
    auto atom = node_atom::find(node_id);
    std::uint64_t ref = 0;
    bool connected = false, watch = false;
    {
      // routes_mu_ before node_mon_mu_: the connection's loss (on_down) erases the route first
      // and then takes node_mon_mu_, so an entry is either fired by it or sees no route here.
      std::shared_lock routes(routes_mu_);
      connected = atom != node_atom{} && routes_.count(atom.index()) != 0;
      std::lock_guard lock(node_mon_mu_);
      ref = ++next_node_mon_;
      if (connected) {
        node_mons_.emplace(ref, node_monitor{watcher, atom});
        watch = node_mon_watchers_.insert(watcher).second;
      }
    }
    if (!connected) {
      send_nodedown(watcher, std::string(node_id), ref, "not connected");
      return ref;
    }
    if (watch) {
      // One exit callback per watcher, however many monitors it holds.
      std::weak_ptr<service_impl> weak = shared_from_this();
      node_.watch_process(watcher, [weak, watcher](const exit_reason&) {
        if (auto s = weak.lock()) s->forget_node_monitors(watcher);
      });
    }
    return ref;
  }
  bool demonitor_node(std::uint64_t ref) override {
    std::lock_guard lock(node_mon_mu_);
    return node_mons_.erase(ref) != 0;
  }

  // ---- channels
  void open_channel(channel_id channel, channel_handlers handlers) override {
    auto h = std::make_shared<const channel_handlers>(std::move(handlers));
    std::unique_lock lock(chan_mu_);
    channels_[channel] = std::move(h);
  }
  void close_channel(channel_id channel) override {
    std::unique_lock lock(chan_mu_);
    channels_[channel].reset();
  }
  result<void> send_channel(node_atom to, std::uint32_t creation, channel_id channel,
                            std::span<const std::uint8_t> payload) override {
    auto& b = scratch();
    b.write(reinterpret_cast<const char*>(&channel), 1);
    b.write(reinterpret_cast<const char*>(payload.data()), payload.size());
    std::shared_lock lock(routes_mu_);
    auto it = routes_.find(to.index());
    if (it == routes_.end() || (creation != 0 && it->second.creation != creation)) {
      return failure(errc::nodedown, std::string(to.name()));
    }
    auto sent = it->second.conn->send(wire::kind::channel, view(b));
    if (!sent) {
      if (sent.error() == make_error_code(errc::connection_closed)) {
        return failure(errc::nodedown, std::string(to.name()) + ": connection closing");
      }
      return sent.fail();
    }
    frames_out_.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  std::vector<peer> ready_peers() const override {
    std::lock_guard lock(ready_mu_);
    std::vector<peer> out;
    for (const auto& [atom, r] : ready_) out.push_back(r.who);
    return out;
  }

  bool accept_link(const pid& remote, const pid& local) override {
    {
      std::shared_lock routes(routes_mu_);
      if (!connected_to(remote)) return false;
      std::lock_guard lock(watch_mu_);
      watches_[remote.node().index()].links.insert({local, remote});
    }
    if (deliver_signal(node_, detail::envelope_kind::link, remote, local)) return true;
    std::lock_guard lock(watch_mu_);
    watches_[remote.node().index()].links.erase({local, remote});
    return false;
  }
  bool accept_monitor(const pid& remote_watcher, monitor_ref ref, const pid& local) override {
    {
      std::shared_lock routes(routes_mu_);
      if (!connected_to(remote_watcher)) return false;
      std::lock_guard lock(watch_mu_);
      watches_[remote_watcher.node().index()].monitors_in[{remote_watcher, ref.id}] = local;
    }
    if (deliver_signal(node_, detail::envelope_kind::monitor, remote_watcher, local, {}, ref)) {
      return true;
    }
    std::lock_guard lock(watch_mu_);
    watches_[remote_watcher.node().index()].monitors_in.erase({remote_watcher, ref.id});
    return false;
  }
  void adopt_monitor(const pid& watcher, monitor_ref ref, const pid& target) override {
    {
      std::shared_lock routes(routes_mu_);
      if (connected_to(target)) {
        {
          std::lock_guard lock(watch_mu_);
          watches_[target.node().index()].monitors_out[ref.id] = {watcher, target};
        }
        if (otpp::adopt_monitor(node_, watcher, ref, target)) return;
        std::lock_guard lock(watch_mu_);
        watches_[target.node().index()].monitors_out.erase(ref.id);
        routes.unlock();
        // The watcher is gone: the target's node drops its end.
        detail::signal_envelope x(detail::envelope_kind::demonitor, watcher);
        x.ref = ref;
        (void)route(target, x);
        return;
      }
    }
    // The connection went before the watcher heard of the target: noconnection, as for a
    // monitor made by hand.
    if (otpp::adopt_monitor(node_, watcher, ref, target)) {
      deliver_down(watcher, ref, target, exit_reason::noconnection());
    }
  }

  // ---- router: runs on the sender's thread
  result<void> route(const pid& to, detail::envelope& e) override {
    using detail::envelope_kind;
    const bool is_signal = e.kind >= envelope_kind::exit_signal;
    // Held (shared) until the frame is queued, so the hot path copies no connection pointer:
    // on_up/on_down only hold it exclusively to swap an entry. Lock order: routes_mu_, then
    // watch_mu_ (track_outgoing); nothing takes them the other way round.
    std::shared_lock lock(routes_mu_);
    auto it = routes_.find(to.node().index());
    if (it == routes_.end()) {
      lock.unlock();
      if (is_signal) return signal_without_connection(to, static_cast<detail::signal_envelope&>(e));
      return failure(errc::nodedown, std::string(to.node().name()));
    }
    const route_entry& r = it->second;
    if (to.creation() != r.creation) {
      // An incarnation that is gone: its processes are dead.
      return failure(errc::noproc, to.to_string());
    }
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    std::uint8_t k = 0;
    if (!is_signal) {
      auto& m = static_cast<detail::message_envelope&>(e);
      const std::uint64_t from = local_serial(m.from);
      if (m.kind == envelope_kind::system_info) {
        if (m.tag != down::tag || !m.type) {
          return failure(errc::not_serializable, "system message '" + std::string(m.tag) + "'");
        }
        auto* d = static_cast<down*>(m.value());
        k = wire::kind::down;
        pk.pack_array(5);
        pk.pack(to.serial());
        pk.pack(to.creation());
        pk.pack(d->ref.id);
        pk.pack(local_serial(d->who));
        pk.pack(d->reason.text());
        forget_monitor_in(to, d->ref.id);
      } else {
        // send and call share a header; its fourth field is the call id or the info flag.
        const bool call = m.kind == envelope_kind::call;
        k = call ? wire::kind::call : wire::kind::send;
        pk.pack_array(5);  // the body follows the header
        pk.pack(to.serial());
        pk.pack(to.creation());
        pk.pack(from);
        if (call) {
          pk.pack(m.call->call_id);
        } else {
          pk.pack(m.kind == envelope_kind::info);
        }
        pk.pack(m.tag);
        if (!m.pack_body(pk)) {
          return failure(
              errc::not_serializable,
              "'" + std::string(m.tag) + "' has no msgpack mapping: it cannot leave the node");
        }
      }
    } else {
      auto& s = static_cast<detail::signal_envelope&>(e);
      auto code = signal_code_of(s.kind);
      if (!code || s.on_exit) {
        return failure(errc::invalid_argument, "this signal cannot cross nodes");
      }
      k = wire::kind::signal;
      pk.pack_array(7);
      pk.pack(static_cast<std::uint8_t>(*code));
      pk.pack(to.serial());
      pk.pack(to.creation());
      pk.pack(local_serial(s.from));
      pk.pack(s.reason.text());
      pk.pack(s.ref.id);
      pk.pack(s.from_link);
      track_outgoing(to, s);
    }
    auto sent = r.conn->send(k, view(b));
    if (!sent) {
      if (sent.error() == make_error_code(errc::connection_closed)) {
        return failure(errc::nodedown, std::string(to.node().name()) + ": connection closing");
      }
      return sent.fail();
    }
    frames_out_.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // ---- membership::io (control strand)
  void send_gossip(const std::string& to, const std::vector<gossip_entry>& state) override {
    if (opt_.hidden) return;  // a hidden node never speaks for the cluster
    auto c = endpoint_->find(to);
    if (!c) return;
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(1);
    pk.pack(state);
    (void)c->send(wire::kind::gossip, view(b));
  }
  void disconnect(const std::string& id, std::uint32_t creation, errc why) override {
    auto c = endpoint_->find(id);
    if (c && c->peer_creation() == creation) {
      // Only a live member speaks for the cluster: a downed node says nothing on its way out.
      if (!membership_->downed()) send_blocked(c, "downed");
      c->abort(failure(why, "downed by " + self_text_));
    }
  }
  void event(const node_event& e) override {
    auto level = e.kind == node_event_kind::node_up || e.kind == node_event_kind::node_reachable
                     ? log_level::info
                     : log_level::warning;
    log(level, "cluster", self_text_, ": ", to_string(e.kind), " ", e.node, " (creation ",
        e.creation, ")",
        e.reason != errc::ok ? ": " + make_error_code(e.reason).message() : std::string(),
        e.detail.empty() ? "" : " [" + e.detail + "]");
    if (e.kind == node_event_kind::minority) minority_.store(true);
    if (e.kind == node_event_kind::majority) minority_.store(false);
    if (e.kind == node_event_kind::downed && !downed_.exchange(true)) {
      // This incarnation is finished in the cluster: drop every connection quietly (the
      // members close theirs as the verdict reaches them) and dial nobody any more. Sends
      // from here on answer nodedown; the application restarts the node to rejoin.
      for (const auto& c : endpoint_->connections()) {
        c->abort(failure(errc::downed, "this node was downed by the cluster"));
      }
    }
    std::vector<std::function<void(const node_event&)>> subs;
    std::vector<pid> pids;
    {
      std::lock_guard lock(subs_mu_);
      for (auto& [id, f] : subs_) subs.push_back(f);
      pids.assign(node_monitors_.begin(), node_monitors_.end());
    }
    for (auto& f : subs) {
      try {
        f(e);
      } catch (const std::exception& ex) {
        log(log_level::error, "cluster", self_text_, ": node event subscriber threw: ", ex.what());
      }
    }
    for (const auto& p : pids) (void)otpp::send(node_, p, e);
  }

 private:
  // ---- helpers
  std::uint64_t local_serial(const pid& p) const {
    return p.node() == node_.atom() && p.creation() == node_.creation() ? p.serial() : 0;
  }
  static std::optional<wire::signal_code> signal_code_of(detail::envelope_kind k) {
    using detail::envelope_kind;
    switch (k) {
      case envelope_kind::exit_signal:
        return wire::signal_code::exit;
      case envelope_kind::link:
        return wire::signal_code::link;
      case envelope_kind::unlink:
        return wire::signal_code::unlink;
      case envelope_kind::monitor:
        return wire::signal_code::monitor;
      case envelope_kind::demonitor:
        return wire::signal_code::demonitor;
      case envelope_kind::stop:
        return wire::signal_code::stop;
      default:
        return std::nullopt;
    }
  }
  static std::optional<detail::envelope_kind> envelope_kind_of(std::uint8_t c) {
    using detail::envelope_kind;
    switch (static_cast<wire::signal_code>(c)) {
      case wire::signal_code::exit:
        return envelope_kind::exit_signal;
      case wire::signal_code::link:
        return envelope_kind::link;
      case wire::signal_code::unlink:
        return envelope_kind::unlink;
      case wire::signal_code::monitor:
        return envelope_kind::monitor;
      case wire::signal_code::demonitor:
        return envelope_kind::demonitor;
      case wire::signal_code::stop:
        return envelope_kind::stop;
    }
    return std::nullopt;
  }

  // Callers hold routes_mu_.
  bool connected_to(const pid& p) const {
    auto it = routes_.find(p.node().index());
    return it != routes_.end() && it->second.creation == p.creation();
  }

  void send_nodedown(const pid& watcher, std::string node, std::uint64_t ref, std::string why) {
    auto* e = new detail::typed_envelope<nodedown>(detail::envelope_kind::info, pid{},
                                                   nodedown{std::move(node), ref, std::move(why)});
    (void)detail::route(node_.impl(), watcher, e);
  }
  void forget_node_monitors(const pid& watcher) {
    std::lock_guard lock(node_mon_mu_);
    node_mon_watchers_.erase(watcher);
    std::erase_if(node_mons_, [&](const auto& m) { return m.second.watcher == watcher; });
  }
  // The connection to `atom` is gone: every monitor_node on it fires once.
  void fire_node_monitors(node_atom atom, const std::string& why) {
    std::vector<std::pair<std::uint64_t, pid>> fired;
    {
      std::lock_guard lock(node_mon_mu_);
      for (auto it = node_mons_.begin(); it != node_mons_.end();) {
        if (it->second.node == atom) {
          fired.emplace_back(it->first, it->second.watcher);
          it = node_mons_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& [ref, watcher] : fired) {
      send_nodedown(watcher, std::string(atom.name()), ref, why);
    }
  }

  // A link or monitor toward a node with no connection: answered at once with noconnection,
  // as Erlang does; other signals to it are lost like a message would be.
  result<void> signal_without_connection(const pid& to, detail::signal_envelope& s) {
    using detail::envelope_kind;
    if (s.kind == envelope_kind::link) {
      (void)deliver_signal(node_, envelope_kind::exit_signal, to, s.from,
                           exit_reason::noconnection(), {}, true);
    } else if (s.kind == envelope_kind::monitor && !s.on_exit) {
      deliver_down(s.from, s.ref, to, exit_reason::noconnection());
    } else if (s.kind == envelope_kind::monitor) {
      s.on_exit(exit_reason::noconnection());
    }
    return {};
  }

  void deliver_down(const pid& watcher, monitor_ref ref, const pid& who, exit_reason why) {
    auto* e = new detail::typed_envelope<down>(detail::envelope_kind::system_info, who,
                                               down{ref, who, std::move(why)});
    (void)detail::route(node_.impl(), watcher, e);
  }

  void track_outgoing(const pid& to, const detail::signal_envelope& s) {
    using detail::envelope_kind;
    std::lock_guard lock(watch_mu_);
    auto& w = watches_[to.node().index()];
    switch (s.kind) {
      case envelope_kind::link:
        w.links.insert({s.from, to});
        break;
      case envelope_kind::unlink:
        w.links.erase({s.from, to});
        break;
      case envelope_kind::exit_signal:
        if (s.from_link) w.links.erase({s.from, to});
        break;
      case envelope_kind::monitor:
        w.monitors_out[s.ref.id] = {s.from, to};
        break;
      case envelope_kind::demonitor:
        w.monitors_out.erase(s.ref.id);
        break;
      default:
        break;
    }
  }
  void forget_monitor_in(const pid& watcher, std::uint64_t ref) {
    std::lock_guard lock(watch_mu_);
    auto it = watches_.find(watcher.node().index());
    if (it != watches_.end()) it->second.monitors_in.erase({watcher, ref});
  }

  // The connection to `atom` (creation) is gone: Erlang's noconnection to every local end of a
  // link or monitor that crossed it, and cleanup of the remote ends' entries.
  void connection_lost(node_atom atom, std::uint32_t creation) {
    peer_watches w;
    {
      std::lock_guard lock(watch_mu_);
      auto it = watches_.find(atom.index());
      if (it == watches_.end()) return;
      auto& cur = it->second;
      move_if(cur.links, w.links, [&](const auto& l) { return l.second.creation() == creation; });
      move_if(cur.monitors_out, w.monitors_out,
              [&](const auto& m) { return m.second.second.creation() == creation; });
      move_if(cur.monitors_in, w.monitors_in,
              [&](const auto& m) { return m.first.first.creation() == creation; });
    }
    for (const auto& [local, remote] : w.links) {
      (void)deliver_signal(node_, detail::envelope_kind::exit_signal, remote, local,
                           exit_reason::noconnection(), {}, true);
    }
    for (const auto& [ref, pair] : w.monitors_out) {
      deliver_down(pair.first, monitor_ref{ref}, pair.second, exit_reason::noconnection());
    }
    for (const auto& [key, local] : w.monitors_in) {
      (void)deliver_signal(node_, detail::envelope_kind::demonitor, key.first, local, {},
                           monitor_ref{key.second});
    }
  }

  void send_blocked(const transport::connection_ptr& c, const std::string& why) {
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(1);
    pk.pack(why);
    (void)c->send(wire::kind::blocked, view(b));
  }

  // ---- transport callbacks (connection strands)
  void on_up(const transport::connection_ptr& c) {
    if (c->peer_id() == self_text_) {
      c->abort(failure(errc::connection_closed, "connected to itself"));
      return;
    }
    auto atom = node_atom::intern(c->peer_id());
    if (atom == node_atom{}) {
      log(log_level::error, "cluster", self_text_, ": peer id '", c->peer_id(), "' refused");
      c->abort(failure(errc::invalid_argument, "bad peer id"));
      return;
    }
    {
      std::unique_lock lock(routes_mu_);
      routes_[atom.index()] = route_entry{c, c->peer_creation()};
    }
    // Every connection starts with a hello carrying this node's view (joins are one round
    // trip: the new node learns every member at once and dials them all in parallel).
    asio::post(strand_, [self = shared_from_this(), c] { self->send_hello(c); });
  }

  void on_down(const transport::connection_ptr& c, const failure& why) {
    ended_bytes_in_.fetch_add(c->bytes_received(), std::memory_order_relaxed);
    ended_bytes_out_.fetch_add(c->bytes_sent(), std::memory_order_relaxed);
    auto atom = node_atom::find(c->peer_id());
    bool current = false;
    {
      std::unique_lock lock(routes_mu_);
      auto it = routes_.find(atom.index());
      if (it != routes_.end() && it->second.conn == c) {
        routes_.erase(it);
        current = true;
      }
    }
    if (current) {
      auto failed = fail_remote_calls(node_, atom,
                                      failure(errc::nodedown, c->peer_id() + ": " + why.message()));
      if (failed) {
        log(log_level::info, "cluster", self_text_, ": ", failed, " call(s) to ", c->peer_id(),
            " answered nodedown");
      }
      connection_lost(atom, c->peer_creation());
      fire_node_monitors(atom, why.message());
    }
    asio::post(strand_, [self = shared_from_this(), c, why, current] {
      self->handle_down(c, why, current);
    });
  }

  void on_frame(const transport::connection_ptr& c, transport::frame_view f) {
    frames_in_.fetch_add(1, std::memory_order_relaxed);
    inbound_scope scope(node_);  // the target runs next on this I/O thread: no wake-up hop
    // The hot kinds first: their header is parsed without allocating (wire.cpp).
    if (f.kind == wire::kind::send || f.kind == wire::kind::call) {
      const bool call = f.kind == wire::kind::call;
      auto m = call ? wire::parse_call(f.payload.data(), f.payload.size())
                    : wire::parse_send(f.payload.data(), f.payload.size());
      if (!m) return bad_frame(c, f.kind, m.fail());
      return call ? deliver_call(c, *m) : deliver_message(c, *m);
    }
    if (f.kind == wire::kind::channel) return deliver_channel(c, f.payload);
    auto d = wire::decode(f.payload.data(), f.payload.size());
    if (!d) return bad_frame(c, f.kind, d.fail());
    switch (f.kind) {
      case wire::kind::reply: {
        auto r = wire::parse_reply(d->root);
        if (!r) return bad_frame(c, f.kind, r.fail());
        return deliver_reply(c, *r, std::move(d->zone));
      }
      case wire::kind::signal: {
        auto s = wire::parse_signal(d->root);
        if (!s) return bad_frame(c, f.kind, s.fail());
        return deliver_remote_signal(c, *s);
      }
      case wire::kind::down: {
        auto x = wire::parse_down(d->root);
        if (!x) return bad_frame(c, f.kind, x.fail());
        return deliver_remote_down(c, *x);
      }
      case wire::kind::hello:
      case wire::kind::gossip: {
        const bool hello = f.kind == wire::kind::hello;
        auto st = hello ? wire::parse_hello(d->root) : wire::parse_gossip(d->root);
        if (!st) return bad_frame(c, f.kind, st.fail());
        asio::post(strand_, [self = shared_from_this(), c, hello, st = std::move(*st)] {
          self->handle_state(c, hello, st.hidden, st.state);
        });
        return;
      }
      case wire::kind::leave:
        asio::post(strand_, [self = shared_from_this(), c] {
          if (self->membership_) {
            self->membership_->peer_leaving(c->peer_id(), c->peer_creation(), self->node_.now());
          }
        });
        return;
      case wire::kind::blocked: {
        auto why = wire::parse_blocked(d->root);
        if (!why) return bad_frame(c, f.kind, why.fail());
        asio::post(strand_,
                   [self = shared_from_this(), c, why = *why] { self->handle_blocked(c, why); });
        return;
      }
      default:
        return bad_frame(c, f.kind, failure(errc::unknown_frame_kind, "not a cluster frame"));
    }
  }

  void bad_frame(const transport::connection_ptr& c, std::uint8_t kind, const failure& why) {
    bad_frames_.fetch_add(1, std::memory_order_relaxed);
    log(log_level::error, "cluster", self_text_, ": bad frame (kind ", static_cast<int>(kind),
        ") from ", c->peer_id(), ": ", why.message(), ": connection closed");
    c->abort(why);
  }

  pid peer_pid(const transport::connection_ptr& c, std::uint64_t serial) const {
    if (serial == 0) return pid{};
    return pid(node_atom::find(c->peer_id()), c->peer_creation(), serial);
  }
  pid local_pid(std::uint64_t serial, std::uint32_t creation) const {
    return pid(node_.atom(), creation, serial);
  }

  void deliver_channel(const transport::connection_ptr& c, bytes_view payload) {
    if (payload.empty())
      return bad_frame(c, wire::kind::channel,
                       failure(errc::malformed_frame, "empty channel frame"));
    std::shared_ptr<const channel_handlers> h;
    {
      std::shared_lock lock(chan_mu_);
      h = channels_[payload[0]];
    }
    if (!h || !h->on_frame) {
      if (channel_dropped_.fetch_add(1) == 0 || channel_dropped_.load() % 1000 == 0) {
        log(log_level::warning, "cluster", self_text_, ": frame for channel ",
            static_cast<int>(payload[0]), " from ", c->peer_id(),
            ": nobody opened that channel here (dropped)");
      }
      return;
    }
    peer from{node_atom::find(c->peer_id()), c->peer_creation(), is_hidden(c)};
    try {
      h->on_frame(from, payload.subspan(1));
    } catch (const std::exception& ex) {
      log(log_level::error, "cluster", self_text_, ": channel ", static_cast<int>(payload[0]),
          " handler threw on a frame from ", c->peer_id(), ": ", ex.what());
    }
  }
  bool is_hidden(const transport::connection_ptr& c) const {
    std::lock_guard lock(ready_mu_);
    auto it = ready_.find(node_atom::find(c->peer_id()).index());
    return it != ready_.end() && it->second.conn == c.get() && it->second.who.hidden;
  }

  // A peer's hello arrived (control strand): channel users may talk to it.
  void peer_ready(const transport::connection_ptr& c, bool hidden) {
    auto atom = node_atom::find(c->peer_id());
    {
      std::shared_lock routes(routes_mu_);
      auto it = routes_.find(atom.index());
      if (it == routes_.end() || it->second.conn != c) return;  // already gone
      std::lock_guard lock(ready_mu_);
      ready_[atom.index()] = ready_peer{peer{atom, c->peer_creation(), hidden}, c.get()};
    }
    notify_peer(peer{atom, c->peer_creation(), hidden}, true);
  }
  // The connection is gone (control strand, after peer_ready if that ran).
  void peer_gone(const transport::connection_ptr& c) {
    auto atom = node_atom::find(c->peer_id());
    std::optional<peer> was;
    {
      std::lock_guard lock(ready_mu_);
      auto it = ready_.find(atom.index());
      if (it == ready_.end() || it->second.conn != c.get()) return;
      was = it->second.who;
      ready_.erase(it);
    }
    notify_peer(*was, false);
  }
  void notify_peer(const peer& p, bool up) {
    std::vector<std::shared_ptr<const channel_handlers>> hs;
    {
      std::shared_lock lock(chan_mu_);
      for (const auto& h : channels_) {
        if (h) hs.push_back(h);
      }
    }
    for (const auto& h : hs) {
      const auto& f = up ? h->on_peer_up : h->on_peer_down;
      if (!f) continue;
      try {
        f(p);
      } catch (const std::exception& ex) {
        log(log_level::error, "cluster", self_text_, ": channel peer handler threw: ", ex.what());
      }
    }
  }

  void deliver_message(const transport::connection_ptr& c, const wire::message_frame& m) {
    auto* e =
        wire_envelope::make(m.info ? detail::envelope_kind::info : detail::envelope_kind::cast,
                            peer_pid(c, m.from_serial), m);
    if (!detail::route(node_.impl(), local_pid(m.to_serial, m.to_creation), e)) {
      undeliverable_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void deliver_call(const transport::connection_ptr& c, const wire::message_frame& m) {
    auto* e = wire_envelope::make(detail::envelope_kind::call, peer_pid(c, m.from_serial), m);
    e->call = detail::ref_ptr<detail::call_state_base>(new wire_call_state(c, m.call_id));
    // A dead target answers noproc through the call state (route_failed / the envelope's end).
    if (!detail::route(node_.impl(), local_pid(m.to_serial, m.to_creation), e)) {
      undeliverable_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void deliver_reply(const transport::connection_ptr& c, const wire::reply_frame& r,
                     std::unique_ptr<msgpack::zone> zone) {
    result<msgpack::object_handle> reply = failure(errc::exit);
    if (r.code == wire::status::ok) {
      reply = msgpack::object_handle(*r.body, std::move(zone));
    } else if (r.code == wire::status::foreign_error) {
      reply =
          failure(std::error_code(r.value, remote_category_instance), r.category + ": " + r.reason);
    } else if (r.code == wire::status::domain_error) {
      reply = r.domain_code.empty()
                  ? failure(errc::domain_error, r.reason)
                  : domain_failure_encoded(r.domain_code, r.domain_message, r.details);
    } else {
      reply = failure(wire::to_errc(r.code), r.reason);
    }
    // A reply nobody waits for (timed out, or never asked) is dropped by the runtime.
    (void)complete_remote_call(node_, node_atom::find(c->peer_id()), r.call_id, std::move(reply));
  }

  void deliver_remote_signal(const transport::connection_ptr& c, const wire::signal_frame& s) {
    auto kind = envelope_kind_of(static_cast<std::uint8_t>(s.code));
    if (!kind) return;
    auto to = local_pid(s.to_serial, s.to_creation);
    auto from = peer_pid(c, s.from_serial);
    exit_reason reason(s.reason);
    monitor_ref ref{s.ref};
    using detail::envelope_kind;
    {
      std::lock_guard lock(watch_mu_);
      auto& w = watches_[from.node().index()];
      switch (*kind) {
        case envelope_kind::link:
          w.links.insert({to, from});
          break;
        case envelope_kind::unlink:
          w.links.erase({to, from});
          break;
        case envelope_kind::exit_signal:
          if (s.from_link) w.links.erase({to, from});
          break;
        case envelope_kind::monitor:
          w.monitors_in[{from, ref.id}] = to;
          break;
        case envelope_kind::demonitor:
          w.monitors_in.erase({from, ref.id});
          break;
        default:
          break;
      }
    }
    if (deliver_signal(node_, *kind, from, to, reason, ref, s.from_link)) return;
    undeliverable_.fetch_add(1, std::memory_order_relaxed);
    // Answer as a local target would: a link to a dead process is an exit noproc, a monitor a
    // down noproc. These go back through the router (and untrack what was just tracked).
    if (*kind == envelope_kind::link) {
      {
        std::lock_guard lock(watch_mu_);
        watches_[from.node().index()].links.erase({to, from});
      }
      detail::signal_envelope x(envelope_kind::exit_signal, to);
      x.reason = exit_reason::noproc();
      x.from_link = true;
      (void)route(from, x);
    } else if (*kind == envelope_kind::monitor) {
      {
        std::lock_guard lock(watch_mu_);
        watches_[from.node().index()].monitors_in.erase({from, ref.id});
      }
      detail::typed_envelope<down> m(detail::envelope_kind::system_info, to,
                                     down{ref, to, exit_reason::noproc()});
      (void)route(from, m);
    }
  }

  void deliver_remote_down(const transport::connection_ptr& c, const wire::down_frame& x) {
    auto who = peer_pid(c, x.who_serial);
    {
      std::lock_guard lock(watch_mu_);
      auto it = watches_.find(who.node().index());
      if (it != watches_.end()) it->second.monitors_out.erase(x.ref);
    }
    deliver_down(local_pid(x.to_serial, x.to_creation), monitor_ref{x.ref}, who,
                 exit_reason(x.reason));
  }

  // ---- control strand
  void send_hello(const transport::connection_ptr& c) {
    if (!membership_ || closed_.load()) return;
    if (membership_->is_blocked(c->peer_id(), c->peer_creation())) {
      rejected_peers_.fetch_add(1);
      log(log_level::warning, "cluster", self_text_, ": ", c->peer_id(), " (creation ",
          c->peer_creation(), ") was downed: its incarnation cannot rejoin");
      send_blocked(c, "incarnation was downed");
      c->close();
      return;
    }
    auto& b = scratch();
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(3);
    pk.pack(wire::protocol_version);
    pk.pack(opt_.hidden);
    if (opt_.hidden) {
      pk.pack(std::vector<gossip_entry>{});
    } else {
      pk.pack(membership_->state());
    }
    (void)c->send(wire::kind::hello, view(b));
  }

  void handle_state(const transport::connection_ptr& c, bool hello, bool hidden,
                    const std::vector<gossip_entry>& state) {
    if (!membership_ || closed_.load() || !c->is_open()) return;
    auto now = node_.now();
    if (hello) {
      if (hidden) {
        hidden_peers_.insert(c.get());
        log(log_level::info, "cluster", self_text_, ": hidden node ", c->peer_id(), " connected");
        peer_ready(c, true);
        return;
      }
      if (!membership_->peer_connected(c->peer_id(), c->peer_creation(), now)) {
        rejected_peers_.fetch_add(1);
        send_blocked(c, "incarnation was downed");
        c->close();
        return;
      }
      peer_ready(c, false);
      silent_.erase(c->peer_id());
      dials_.erase(c->peer_id());
      for (auto& s : seeds_) s.dial = {};
    }
    if (hidden_peers_.count(c.get())) return;
    membership_->gossip_received(c->peer_id(), state, now);
    after_change();
  }

  void handle_blocked(const transport::connection_ptr& c, const std::string& why) {
    if (!membership_) return;
    // A verdict from a node this one already knows to be down does not count: a downed node
    // must not take others down with it. (A node not known yet does count: a restarted node
    // of a blocked incarnation hears it from the first member it reaches.)
    if (membership_->is_blocked(c->peer_id(), c->peer_creation())) {
      log(log_level::info, "cluster", self_text_, ": ignored '", why, "' from ", c->peer_id(),
          ", which is down here");
      return;
    }
    std::vector<gossip_entry> verdict{
        gossip_entry{self_text_, node_.creation(), member_status::down, 0, errc::downed, {}}};
    log(log_level::warning, "cluster", self_text_, ": ", c->peer_id(), " says: ", why);
    membership_->gossip_received(c->peer_id(), verdict, node_.now());
    after_change();
  }

  void handle_down(const transport::connection_ptr& c, const failure& why, bool current) {
    hidden_peers_.erase(c.get());
    if (!closed_.load()) peer_gone(c);
    if (!membership_ || closed_.load() || leaving_) return;
    const auto& id = c->peer_id();
    auto creation = c->peer_creation();
    if (!current || !membership_->is_up(id, creation)) return;
    auto now = node_.now();
    if (membership_->is_leaving(id, creation)) {
      membership_->peer_disconnected(id, creation, true, errc::graceful_shutdown, now);
      after_change();
      return;
    }
    log(log_level::info, "cluster", self_text_, ": connection to ", id, " lost (", why.message(),
        "): probing");
    membership_->peer_disconnected(id, creation, false,
                                   why.code == make_error_code(errc::heartbeat_timeout)
                                       ? errc::heartbeat_timeout
                                       : errc::connection_closed,
                                   now);
    // An immediate reconnect tells a dead OS process (refused at once) from a network problem.
    dial_member(id, creation, true);
    after_change();
  }

  void dial_member(const std::string& id, std::uint32_t creation, bool probe) {
    auto parsed = node_id::parse(id);
    if (!parsed) return;
    if (!probe) {
      // Connected already (its hello is on the way, so membership does not say so yet): a
      // second connection would replace this one and lose what is in flight on it.
      if (auto c = endpoint_->find(id); c && c->is_open() && c->peer_creation() == creation) {
        return;
      }
    }
    if (auto o = opt_.addresses.find(id); o != opt_.addresses.end()) {
      auto where = parse_seed(o->second);
      if (!where) {
        log(log_level::error, "cluster", self_text_, ": address of ", id, ": ",
            where.fail().message());
        return;
      }
      parsed->host = where->host;
      parsed->port = where->port;
    }
    auto& d = dials_[id];
    if (d.in_flight) return;
    d.in_flight = true;
    connect_attempts_.fetch_add(1);
    std::weak_ptr<service_impl> weak = shared_from_this();
    endpoint_->connect(
        parsed->host, parsed->port,
        [weak, id, creation, probe](result<transport::connection_ptr> r) {
          auto s = weak.lock();
          if (!s) return;
          asio::post(s->strand_, [s, id, creation, probe, r = std::move(r)] {
            s->dial_done(id, creation, probe, r);
          });
        },
        id);
  }

  void dial_done(const std::string& id, std::uint32_t creation, bool probe,
                 const result<transport::connection_ptr>& r) {
    auto& d = dials_[id];
    d.in_flight = false;
    if (!membership_ || closed_.load()) return;
    if (r) {
      d = {};
      return;  // on_up and the hello do the rest
    }
    const bool refused = r.fail().code == make_error_code(errc::connection_refused);
    auto now = node_.now();
    if (refused && membership_->is_up(id, creation) && !endpoint_->find(id)) {
      // Nothing listens where the member was: its OS process is gone.
      membership_->peer_disconnected(id, creation, true, errc::connection_closed, now);
      dials_.erase(id);
      after_change();
      return;
    }
    // A dying process closes its descriptors one by one: a probe that raced the close of its
    // listening socket is accepted by the kernel and then reset, instead of refused. Probe
    // again at once, a few times: the next one is refused. (A hung process is not affected:
    // its probe times out in the handshake, with another error.)
    const bool reset = r.fail().code == make_error_code(errc::connection_closed) ||
                       r.fail().code == make_error_code(errc::handshake_failed);
    if (probe && reset && d.quick_probes < 5 && membership_->is_up(id, creation) &&
        !endpoint_->find(id)) {
      ++d.quick_probes;
      dial_member(id, creation, true);
      return;
    }
    d.quick_probes = 0;
    d.next = now + backoff(d.attempt++);
  }

  clock_type::duration backoff(unsigned attempt) {
    auto cap = std::min<std::int64_t>(opt_.retry_max.count(), opt_.retry_initial.count()
                                                                  << std::min(attempt, 16u));
    std::uniform_int_distribution<std::int64_t> jitter(cap / 2, std::max<std::int64_t>(cap, 1));
    return std::chrono::milliseconds(jitter(rng_));
  }

  void dial_seeds(time_point now) {
    if (!endpoint_->connections().empty() || membership_->downed()) return;
    for (std::size_t i = 0; i < seeds_.size(); ++i) {
      auto& s = seeds_[i];
      if (s.self || s.dial.in_flight || now < s.dial.next) continue;
      s.dial.in_flight = true;
      connect_attempts_.fetch_add(1);
      // Resolve each time: a headless service's addresses change; each is tried.
      resolver_.async_resolve(
          s.host, std::to_string(s.port),
          [self = shared_from_this(), i](const std::error_code& ec,
                                         asio::ip::tcp::resolver::results_type found) {
            self->seed_resolved(i, ec, std::move(found));
          });
    }
  }

  void seed_resolved(std::size_t i, const std::error_code& ec,
                     asio::ip::tcp::resolver::results_type found) {
    auto& s = seeds_[i];
    if (ec || found.empty()) {
      log(log_level::warning, "cluster", self_text_, ": seed ", s.text,
          ": cannot resolve: ", ec.message());
      seed_failed(i, ec ? ec : make_error_code(errc::invalid_argument));
      return;
    }
    auto pending = std::make_shared<std::size_t>(found.size());
    auto any_ok = std::make_shared<bool>(false);
    auto last_error = std::make_shared<std::error_code>();
    for (const auto& entry : found) {
      auto ep = entry.endpoint();
      if (ep == bound_) {
        s.self = true;
        continue;
      }
      std::weak_ptr<service_impl> weak = shared_from_this();
      endpoint_->connect(
          ep, [weak, i, pending, any_ok, last_error](result<transport::connection_ptr> r) {
            auto self = weak.lock();
            if (!self) return;
            asio::post(self->strand_, [self, i, pending, any_ok, last_error, r = std::move(r)] {
              if (r) {
                *any_ok = true;
                if ((*r)->peer_id() == self->self_text_) self->seeds_[i].self = true;
              } else {
                *last_error = r.fail().code;
              }
              if (--*pending == 0) {
                if (*any_ok) {
                  self->seeds_[i].dial = {};
                  self->set_seed_view(i, {}, true);
                } else {
                  self->seed_failed(i, *last_error);
                }
              }
            });
          });
    }
    if (s.self) {
      if (--*pending == 0) seed_failed(i, make_error_code(errc::invalid_argument));
    }
  }

  void seed_failed(std::size_t i, std::error_code why) {
    auto& s = seeds_[i];
    s.dial.in_flight = false;
    s.dial.next = node_.now() + backoff(s.dial.attempt++);
    set_seed_view(i, why, false);
    if (s.dial.attempt == 1 || s.dial.attempt % 10 == 0) {
      log(why == errc::not_authorised ? log_level::warning : log_level::info, "cluster", self_text_,
          ": seed ", s.text, " not reachable: ", why.message(), " (attempt ", s.dial.attempt,
          "), retrying");
    }
  }

  void set_seed_view(std::size_t i, std::error_code why, bool connected) {
    std::lock_guard lock(view_mu_);
    if (i >= seed_view_.size()) return;
    auto& v = seed_view_[i];
    v.connected = connected;
    if (connected) {
      v.failed_attempts = 0;
      v.last_error = {};
    } else {
      ++v.failed_attempts;
      v.last_error = why;
    }
  }

  std::vector<seed_status> seeds() const override {
    std::lock_guard lock(view_mu_);
    return seed_view_;
  }

  void check_silence() {
    auto now_steady = std::chrono::steady_clock::now();
    auto now = node_.now();
    for (const auto& c : endpoint_->connections()) {
      if (hidden_peers_.count(c.get())) continue;
      bool silent = now_steady - c->last_receive() > opt_.unreachable_after;
      bool was = silent_.count(c->peer_id()) != 0;
      if (silent == was) continue;
      if (silent) {
        silent_.insert(c->peer_id());
      } else {
        silent_.erase(c->peer_id());
      }
      membership_->peer_silent(c->peer_id(), c->peer_creation(), silent, now);
    }
  }

  void on_tick() {
    if (closed_.load() || !membership_) return;
    auto now = node_.now();
    if (!leaving_) {
      check_silence();
      membership_->tick(now);
      if (!opt_.hidden) {
        for (const auto& [id, creation] : membership_->wanted_connections()) {
          auto& d = dials_[id];
          if (!d.in_flight && now >= d.next) dial_member(id, creation, false);
        }
      }
      dial_seeds(now);
    }
    publish_view();
    timer_.expires_after(opt_.heartbeat_interval);
    timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
      if (!ec) self->on_tick();
    });
  }

  void after_change() {
    if (!membership_) return;
    auto now = node_.now();
    if (!opt_.hidden && !leaving_) {
      for (const auto& [id, creation] : membership_->wanted_connections()) {
        auto& d = dials_[id];
        if (!d.in_flight && now >= d.next) dial_member(id, creation, false);
      }
    }
    publish_view();
  }

  void publish_view() {
    auto m = membership_->members();
    std::lock_guard lock(view_mu_);
    members_view_ = std::move(m);
  }

  void do_leave() {
    if (leaving_ || !membership_) return;
    leaving_ = true;
    membership_->leave();
    log(log_level::info, "cluster", self_text_, ": leaving the cluster");
    {
      auto& b = scratch();
      msgpack::packer<msgpack::sbuffer> pk(b);
      pk.pack_array(0);
      for (const auto& c : endpoint_->connections()) {
        (void)c->send(wire::kind::leave, view(b));
        c->close();  // flushes the leave first
      }
    }
    leave_sent_.store(true);
    publish_view();
  }

  // Announces the leave, waits (bounded) until the peers have it, then stops listening: from
  // then on a dial to this node is refused, which is what a peer should see of a node that
  // left. From a process handler it cannot wait (it would hold a worker): the leave frames
  // still go out, and the listener closes with the node.
  void leave_and_wait() {
    asio::post(strand_, [self = shared_from_this()] { self->do_leave(); });
    if (detail::current_self()) return;
    auto until = std::chrono::steady_clock::now() + opt_.leave_timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (leaving_done()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    closed_.store(true);
    if (endpoint_) endpoint_->close();
  }
  bool leaving_done() const {
    if (!endpoint_ || !leave_sent_.load()) return !endpoint_;
    for (const auto& c : endpoint_->connections()) {
      if (c->is_open()) return false;
    }
    return true;
  }

  node& node_;
  options opt_;
  node_id self_;
  std::string self_text_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  asio::ip::tcp::resolver resolver_;
  std::mt19937_64 rng_;
  std::unique_ptr<transport::endpoint> endpoint_;
  asio::ip::tcp::endpoint bound_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> minority_{false};
  std::atomic<bool> downed_{false};
  std::atomic<bool> leave_sent_{false};

  // Control strand only.
  std::optional<membership> membership_;
  std::vector<seed_entry> seeds_;
  std::vector<seed_status> seed_view_;  // under view_mu_
  std::map<std::string, dial_state> dials_;
  std::set<std::string> silent_;
  std::set<const transport::connection*> hidden_peers_;
  bool leaving_ = false;

  mutable std::shared_mutex routes_mu_;
  std::unordered_map<std::uint32_t, route_entry> routes_;  // by node atom index
  mutable std::mutex watch_mu_;
  std::unordered_map<std::uint32_t, peer_watches> watches_;
  mutable std::mutex view_mu_;
  std::vector<member> members_view_;
  std::mutex subs_mu_;
  std::map<subscription, std::function<void(const node_event&)>> subs_;
  std::set<pid> node_monitors_;
  subscription next_sub_ = 0;

  std::atomic<std::uint64_t> frames_in_{0}, frames_out_{0}, bad_frames_{0}, undeliverable_{0},
      connect_attempts_{0}, rejected_peers_{0}, channel_dropped_{0};
  // Bytes of connections that ended (stats adds the live ones).
  std::atomic<std::uint64_t> ended_bytes_in_{0}, ended_bytes_out_{0};

  mutable std::shared_mutex chan_mu_;
  std::array<std::shared_ptr<const channel_handlers>, 256> channels_;
  struct ready_peer {
    peer who;
    const transport::connection* conn = nullptr;  // identity only
  };
  mutable std::mutex ready_mu_;
  std::unordered_map<std::uint32_t, ready_peer> ready_;  // by node atom index
  struct node_monitor {
    pid watcher;
    node_atom node;
  };
  mutable std::mutex node_mon_mu_;
  std::map<std::uint64_t, node_monitor> node_mons_;
  std::set<pid> node_mon_watchers_;
  std::uint64_t next_node_mon_ = 0;
};

// Owned by the node: destroyed after every process ended.
struct cluster_holder final : node_service {
  explicit cluster_holder(node&) {}
  ~cluster_holder() override {
    if (impl) impl->shutdown();
  }
  std::mutex mu;
  std::shared_ptr<service_impl> impl;
};

}  // namespace

result<service*> join(node& n, options o) {
  auto id = node_id::parse(n.name());
  if (!id) {
    log(log_level::error, "cluster", "node name '", n.name(),
        "' is not a node id: ", id.fail().message());
    return id.fail();
  }
  if (id->to_string() != n.name()) {
    // Pids carry the name: every node must spell a peer's id the same way.
    return failure(
        errc::invalid_argument,
        "node name '" + n.name() + "' is not in canonical form: use '" + id->to_string() + "'");
  }
  auto valid = downing_rule::validate(o.downing);
  if (!valid) return valid.fail();
  if (o.heartbeat_interval.count() <= 0 || o.unreachable_after <= o.heartbeat_interval ||
      o.gossip_interval.count() <= 0 || o.retry_initial.count() <= 0 ||
      o.retry_max < o.retry_initial) {
    return failure(errc::invalid_argument,
                   "cluster options: intervals must be positive, unreachable_after > "
                   "heartbeat_interval, retry_max >= retry_initial");
  }
  auto& holder = n.use_service<cluster_holder>();
  std::lock_guard lock(holder.mu);
  if (holder.impl) return static_cast<service*>(holder.impl.get());
  auto impl = std::make_shared<service_impl>(n, std::move(o), std::move(*id));
  auto started = impl->start();
  if (!started) {
    impl->shutdown();
    return started.fail();
  }
  holder.impl = std::move(impl);
  return static_cast<service*>(holder.impl.get());
}

service* find(node& n) {
  auto& holder = n.use_service<cluster_holder>();
  std::lock_guard lock(holder.mu);
  return holder.impl.get();
}

}  // namespace otpp::cluster
