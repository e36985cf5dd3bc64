#include "otpp/transport/endpoint.hpp"

#include <openssl/ssl.h>
#include <asio/connect.hpp>
#include <asio/dispatch.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/post.hpp>
#include <asio/ssl/context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <utility>

#include "endpoint_state.hpp"
#include "otpp/log.hpp"
#include "otpp/transport/cookie.hpp"

namespace otpp::transport {

namespace detail {

bool endpoint_state::add_live(const connection_ptr& c) {
  std::lock_guard lock(mu);
  if (closed) return false;
  live.emplace(c.get(), c);
  return true;
}

void endpoint_state::add_pending(const connection_ptr& c, const std::string& peer) {
  std::lock_guard lock(mu);
  peers[peer].pending_out.push_back(c);
}

bool endpoint_state::may_log(log_limiter& l, std::uint64_t& suppressed) {
  const auto now = std::chrono::steady_clock::now();
  if (now < l.next) {
    ++l.suppressed;
    return false;
  }
  l.next = now + std::chrono::seconds(1);
  suppressed = std::exchange(l.suppressed, 0);
  return true;
}

bool endpoint_state::admit_handshake(const std::string& address, std::string& why) {
  std::lock_guard lock(mu);
  if (pending_in >= cfg.max_pending_handshakes) {
    why = std::to_string(pending_in) + " handshakes pending (max_pending_handshakes)";
    ++refused_pending;
    return false;
  }
  std::size_t& mine = pending_by_address[address];
  if (mine >= cfg.max_pending_handshakes_per_address) {
    why = std::to_string(mine) + " handshakes pending from " + address +
          " (max_pending_handshakes_per_address)";
    ++refused_pending;
    return false;
  }
  ++mine;
  ++pending_in;
  return true;
}

void endpoint_state::release_handshake(const std::string& address) {
  std::lock_guard lock(mu);
  --pending_in;
  auto it = pending_by_address.find(address);
  if (it != pending_by_address.end() && --it->second == 0) pending_by_address.erase(it);
}

namespace {
void prune(std::vector<std::weak_ptr<connection>>& v, const connection* drop = nullptr) {
  std::erase_if(v, [drop](const std::weak_ptr<connection>& w) {
    auto p = w.lock();
    return !p || p.get() == drop || !p->initiated_locally() || p->has_failed();
  });
}
}  // namespace

accept_status endpoint_state::decide_incoming(const connection_ptr& c, connection_ptr& victim,
                                              std::string& why) {
  std::lock_guard lock(mu);
  if (closed) {
    why = "endpoint closed";
    return accept_status::endpoint_closing;
  }
  const std::string& peer = c->peer_id();
  auto& entry = peers[peer];
  const bool self_lower = cfg.node_id < peer;
  connection_ptr est = entry.established.lock();
  // A table entry stays authoritative until its connection fails (is_open() would also be
  // false in the instant between an outgoing connection's registration and its establish()).
  if (est && est->has_failed()) est.reset();
  prune(entry.pending_out);
  if (self_lower) {
    if (est && est->initiated_locally() && est->peer_creation() == c->peer_creation()) {
      why = "duplicate connection: " + cfg.node_id + " < " + peer +
            ", so our established outgoing connection wins";
      return accept_status::duplicate_connection;
    }
    if (!entry.pending_out.empty()) {
      why = "duplicate connection: " + cfg.node_id + " < " + peer +
            ", so our own outgoing connection (in handshake) wins";
      return accept_status::duplicate_connection;
    }
  }
  victim = est;
  entry.established = c;
  return accept_status::accepted;
}

connection_ptr endpoint_state::establish_outgoing(const connection_ptr& c) {
  std::lock_guard lock(mu);
  auto& entry = peers[c->peer_id()];
  prune(entry.pending_out, c.get());
  connection_ptr est = entry.established.lock();
  entry.established = c;
  if (est == c) est.reset();
  return est;
}

void endpoint_state::remove(connection* c, const std::string& peer) {
  std::lock_guard lock(mu);
  live.erase(c);
  if (peer.empty()) return;
  auto it = peers.find(peer);
  if (it == peers.end()) return;
  auto& entry = it->second;
  if (auto est = entry.established.lock(); !est || est.get() == c) entry.established.reset();
  prune(entry.pending_out, c);
  if (entry.established.expired() && entry.pending_out.empty()) peers.erase(it);
}

}  // namespace detail

namespace {
constexpr std::string_view insecure_secret = "otpp insecure mode: public well-known secret";

std::string describe(const asio::ip::tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

result<void> setup_tls(detail::endpoint_state& st) {
  const auto& o = st.cfg.tls;
  // Verifying a chain against the system store proves only that some public CA vouched
  // for some name: without a name to check or a pinned CA, anyone holding any publicly
  // trusted certificate could sit in the middle.
  if (o.verify_peer && o.server_name.empty() && o.ca_file.empty())
    return failure(errc::tls_error,
                   "TLS verify_peer needs tls.server_name (checked against the server "
                   "certificate) or tls.ca_file (a pinned CA); the system trust store alone "
                   "does not authenticate the server");
  // The same for client certificates: mutual TLS against the system store would admit
  // any holder of any public certificate.
  if (o.mutual && o.ca_file.empty())
    return failure(errc::tls_error,
                   "mutual TLS needs tls.ca_file (the CA of the client certificates)");
  try {
    auto server = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    auto client = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    for (auto* ctx : {server.get(), client.get()}) {
      ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1);
      SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
      if (!o.ca_file.empty())
        ctx->load_verify_file(o.ca_file);
      else
        ctx->set_default_verify_paths();
    }
    if (o.certificate_file.empty() || o.private_key_file.empty())
      return failure(errc::tls_error, "TLS needs certificate_file and private_key_file");
    server->use_certificate_chain_file(o.certificate_file);
    server->use_private_key_file(o.private_key_file, asio::ssl::context::pem);
    if (o.mutual) {
      server->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    } else {
      server->set_verify_mode(asio::ssl::verify_none);
    }
    // A client presents its certificate when asked (mutual TLS on the peer).
    client->use_certificate_chain_file(o.certificate_file);
    client->use_private_key_file(o.private_key_file, asio::ssl::context::pem);
    client->set_verify_mode(o.verify_peer ? asio::ssl::verify_peer : asio::ssl::verify_none);
    if (!o.verify_peer)
      otpp::log(log_level::warning, "transport",
                "TLS peer verification is OFF: the server certificate is not checked");
    st.tls_server = std::move(server);
    st.tls_client = std::move(client);
  } catch (const std::system_error& e) {
    return failure(errc::tls_error, std::string("TLS setup: ") + e.what());
  }
  return {};
}

}  // namespace

namespace {
// accept() failures that leave the pending connection in the backlog: the listening socket
// stays readable, so retrying at once spins (100% CPU, one log line per attempt).
bool out_of_resources(const std::error_code& ec) {
  return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
         ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory;
}
}  // namespace

void detail::endpoint_state::accept_loop(const std::shared_ptr<endpoint_state>& st,
                                         const std::shared_ptr<asio::ip::tcp::acceptor>& acc) {
  acc->async_accept(asio::make_strand(st->io), [st, acc](const std::error_code& ec,
                                                         asio::ip::tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acc->is_open()) return;
      std::uint64_t suppressed = 0;
      bool log_now;
      {
        std::lock_guard lock(st->mu);
        ++st->accept_errors;
        log_now = st->may_log(st->accept_log, suppressed);
      }
      // A connection aborted by its client is gone from the backlog: go on at once. Any
      // other failure (resources first of all) pauses the loop.
      const bool pause = ec != asio::error::connection_aborted;
      if (log_now)
        otpp::log(
            log_level::warning, "transport", "accept: ", ec.message(),
            pause && out_of_resources(ec) ? " (out of resources)" : "",
            pause ? "; retrying in " + std::to_string(st->cfg.accept_retry_delay.count()) + " ms"
                  : std::string(),
            suppressed ? " (" + std::to_string(suppressed) + " similar lines suppressed)"
                       : std::string());
      if (pause) {
        auto timer =
            std::make_shared<asio::steady_timer>(acc->get_executor(), st->cfg.accept_retry_delay);
        timer->async_wait([st, acc, timer](const std::error_code& tec) {
          if (tec || !acc->is_open()) return;
          accept_loop(st, acc);
        });
        return;
      }
    } else {
      admit(st, std::move(socket));
    }
    accept_loop(st, acc);
  });
}

void detail::endpoint_state::admit(const std::shared_ptr<endpoint_state>& st,
                                   asio::ip::tcp::socket socket) {
  std::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  // A socket whose peer is already gone has no address; it fails at its first read.
  const std::string address = ec ? std::string() : remote.address().to_string();
  std::string why;
  if (!st->admit_handshake(address, why)) {
    socket.close(ec);
    std::uint64_t suppressed = 0;
    bool log_now;
    {
      std::lock_guard lock(st->mu);
      log_now = st->may_log(st->refuse_log, suppressed);
    }
    if (log_now)
      otpp::log(log_level::warning, "transport", "refused connection from ", address, ": ", why,
                suppressed ? " (" + std::to_string(suppressed) + " similar lines suppressed)"
                           : std::string());
    if (st->events.on_rejected)
      st->events.on_rejected(failure(errc::overloaded, "refused: " + why),
                             ec ? std::string() : describe(remote));
    return;
  }
  auto c = std::make_shared<connection>(connection::passkey{}, st, std::move(socket), false);
  c->handshake_slot_ = address;
  c->holds_handshake_slot_ = true;
  if (!st->add_live(c)) {
    c->release_handshake_slot();
    return;
  }
  asio::dispatch(c->ex_, [c] { c->start(nullptr, {}); });
}

endpoint::endpoint(passkey, std::shared_ptr<detail::endpoint_state> state)
    : state_(std::move(state)) {}

endpoint::~endpoint() {
  close();
}

result<std::unique_ptr<endpoint>> endpoint::create(asio::io_context& io, config cfg,
                                                   connection_events events) {
  const auto refuse = [&](std::string why) {
    failure f(errc::invalid_argument, std::move(why));
    otpp::log(log_level::error, "transport", "endpoint config refused: ", f.message());
    return f;
  };
  if (!valid_node_id(cfg.node_id))
    return refuse("transport node id must be 1-255 printable characters");
  if (cfg.max_frame_size > 0xfffffff0u) return refuse("max_frame_size must be below 4 GiB");
  if (cfg.record_protections.empty())
    return refuse("record_protections must name at least one record protection");
  if (cfg.record_protections.size() > max_offered_protections)
    return refuse("record_protections lists more than " + std::to_string(max_offered_protections) +
                  " modes");
  for (std::size_t i = 0; i < cfg.record_protections.size(); ++i) {
    const record_protection p = cfg.record_protections[i];
    if (to_string(p) == "unknown")
      return refuse("record_protections holds an unknown value " +
                    std::to_string(static_cast<int>(p)));
    for (std::size_t j = 0; j < i; ++j)
      if (cfg.record_protections[j] == p)
        return refuse("record_protections lists " + std::string(to_string(p)) + " twice");
    if (encrypts(p) &&
        !aead::available(p == record_protection::aes_256_gcm ? aead::algorithm::aes_256_gcm
                                                             : aead::algorithm::chacha20_poly1305))
      return refuse("record protection " + std::string(to_string(p)) +
                    " is not offered by this OpenSSL");
  }
  if (cfg.heartbeat_interval.count() > 0 && cfg.silence_timeout <= cfg.heartbeat_interval)
    return refuse("silence_timeout must exceed heartbeat_interval");
  if (cfg.max_pending_handshakes == 0 || cfg.max_pending_handshakes_per_address == 0)
    return refuse("max_pending_handshakes and max_pending_handshakes_per_address must be >= 1");
  if (cfg.accept_retry_delay.count() <= 0) return refuse("accept_retry_delay must be positive");
  if (cfg.write_stall_timeout.count() < 0) return refuse("write_stall_timeout must be >= 0");
  std::string secret;
  bool from_cookie = false;
  if (cfg.insecure) {
    otpp::log(log_level::warning, "transport", "!!! INSECURE MODE: node ", cfg.node_id,
              " uses a public well-known secret; anyone can connect and forge frames. "
              "For tests only !!!");
    secret = insecure_secret;
  } else if (!cfg.secret.empty()) {
    secret = cfg.secret;
  } else {
    const std::string path = cfg.cookie_path.empty() ? default_cookie_path() : cfg.cookie_path;
    auto cookie = load_or_create_cookie(path);
    if (!cookie) {
      otpp::log(log_level::error, "transport", cookie.fail().message());
      return cookie.fail();
    }
    secret = std::move(*cookie);
    from_cookie = true;
  }
  // Refused rather than stretched (README.md, "Security defaults"): a KDF only slows an offline
  // guess by a constant factor, while 16 random bytes make it hopeless.
  if (secret.size() < min_secret_size) {
    const failure f(errc::weak_secret,
                    std::string(from_cookie ? "cookie" : "secret") + " has " +
                        std::to_string(secret.size()) + " bytes; at least " +
                        std::to_string(min_secret_size) +
                        " random bytes (128 bits) are required: a short secret can be "
                        "brute-forced offline from one observed handshake");
    otpp::log(log_level::error, "transport", "node ", cfg.node_id, ": ", f.message());
    return f;
  }
  auto st = std::make_shared<detail::endpoint_state>(io, std::move(cfg), std::move(secret),
                                                     std::move(events));
  if (st->cfg.tls.enabled) {
    if (auto r = setup_tls(*st); !r) {
      otpp::log(log_level::error, "transport", "node ", st->cfg.node_id, ": ", r.fail().message());
      return r.fail();
    }
  }
  return std::make_unique<endpoint>(passkey{}, std::move(st));
}

result<asio::ip::tcp::endpoint> endpoint::listen(const asio::ip::tcp::endpoint& where) {
  auto acc = std::make_shared<asio::ip::tcp::acceptor>(asio::make_strand(state_->io));
  std::error_code ec;
  acc->open(where.protocol(), ec);
  if (!ec && where.address().is_v6()) acc->set_option(asio::ip::v6_only(true), ec);
  if (!ec) acc->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc->bind(where, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return failure(ec, "listen on " + describe(where));
  auto bound = acc->local_endpoint(ec);
  if (ec) return failure(ec, "listen on " + describe(where));
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return failure(errc::connection_closed, "endpoint closed");
    state_->acceptors.push_back(acc);
  }
  asio::dispatch(acc->get_executor(),
                 [st = state_, acc] { detail::endpoint_state::accept_loop(st, acc); });
  return bound;
}

void detail::endpoint_state::connect(const std::shared_ptr<endpoint_state>& st,
                                     const asio::ip::tcp::endpoint& remote, connect_handler handler,
                                     std::string expected_peer) {
  auto c = std::make_shared<connection>(connection::passkey{}, st,
                                        asio::ip::tcp::socket(asio::make_strand(st->io)), true);
  if (!st->add_live(c)) {
    asio::post(c->ex_, [h = std::move(handler)] {
      h(failure(errc::connection_closed, "endpoint closed"));
    });
    return;
  }
  if (!expected_peer.empty()) st->add_pending(c, expected_peer);
  asio::dispatch(
      c->ex_, [c, remote, h = std::move(handler), peer = std::move(expected_peer)]() mutable {
        c->connect_handler_ = std::move(h);
        c->expected_peer_ = peer;
        c->peer_id_ = peer;  // for the table; checked against the authenticated id
        c->remote_ = describe(remote);
        c->arm_handshake_timer();
        c->socket_.async_connect(remote, [c](const std::error_code& ec) {
          if (c->phase_ == connection::phase::closed) return;
          if (ec) {
            // A refusal is its own value: it says nothing listens there (for the cluster, that the
            // peer's OS process is gone), which a timeout or a reset does not.
            const auto code = ec == asio::error::connection_refused ? errc::connection_refused
                                                                    : errc::connection_closed;
            c->fail(failure(code, "connect to " + c->remote_ + ": " + ec.message()));
            return;
          }
          auto h2 = std::move(c->connect_handler_);
          c->connect_handler_ = nullptr;
          c->start(std::move(h2), c->expected_peer_);
        });
      });
}

void endpoint::connect(const asio::ip::tcp::endpoint& remote, connect_handler handler,
                       std::string expected_peer) {
  detail::endpoint_state::connect(state_, remote, std::move(handler), std::move(expected_peer));
}

void endpoint::connect(std::string host, std::uint16_t port, connect_handler handler,
                       std::string expected_peer) {
  std::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    connect(asio::ip::tcp::endpoint(addr, port), std::move(handler), std::move(expected_peer));
    return;
  }
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(state_->io);
  resolver->async_resolve(
      host, std::to_string(port),
      [st = state_, resolver, host, h = std::move(handler), peer = std::move(expected_peer)](
          const std::error_code& rec, asio::ip::tcp::resolver::results_type results) mutable {
        if (rec || results.empty()) {
          h(failure(errc::nodedown, "resolve " + host + ": " + rec.message()));
          return;
        }
        detail::endpoint_state::connect(st, results.begin()->endpoint(), std::move(h),
                                        std::move(peer));
      });
}

connection_ptr endpoint::find(std::string_view peer_id) const {
  std::lock_guard lock(state_->mu);
  auto it = state_->peers.find(std::string(peer_id));
  if (it == state_->peers.end()) return nullptr;
  auto c = it->second.established.lock();
  return c && c->is_open() ? c : nullptr;
}

std::vector<connection_ptr> endpoint::connections() const {
  std::vector<connection_ptr> out;
  std::lock_guard lock(state_->mu);
  for (auto& [_, entry] : state_->peers)
    if (auto c = entry.established.lock(); c && c->is_open()) out.push_back(std::move(c));
  return out;
}

void endpoint::close() {
  if (!state_) return;
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> accs;
  std::vector<connection_ptr> conns;
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return;
    state_->closed = true;
    accs.swap(state_->acceptors);
    for (auto& [_, w] : state_->live)
      if (auto c = w.lock()) conns.push_back(std::move(c));
  }
  for (auto& acc : accs)
    asio::dispatch(acc->get_executor(), [acc] {
      std::error_code ec;
      acc->close(ec);
    });
  for (auto& c : conns) c->abort(failure(errc::connection_closed, "endpoint closed"));
}

endpoint_stats endpoint::stats() const {
  std::lock_guard lock(state_->mu);
  endpoint_stats s;
  s.accept_errors = state_->accept_errors;
  s.refused_handshakes = state_->refused_pending;
  s.pending_handshakes = state_->pending_in;
  return s;
}

const config& endpoint::local_config() const {
  return state_->cfg;
}

}  // namespace otpp::transport
