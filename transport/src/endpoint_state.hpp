// Internal: state shared by an endpoint and its connections (kept alive by both).
#pragma once

#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "otpp/transport/config.hpp"
#include "otpp/transport/connection.hpp"
#include "otpp/transport/endpoint.hpp"

namespace otpp::transport::detail {

struct endpoint_state {
  asio::io_context& io;
  config cfg;
  std::string secret;
  connection_events events;
  std::unique_ptr<asio::ssl::context> tls_client, tls_server;

  endpoint_state(asio::io_context& i, config c, std::string s, connection_events e)
      : io(i), cfg(std::move(c)), secret(std::move(s)), events(std::move(e)) {}

  bytes_view secret_bytes() const { return as_bytes(secret); }

  // Connection table (see endpoint.hpp for the rule).
  struct peer_entry {
    std::weak_ptr<connection> established;
    std::vector<std::weak_ptr<connection>> pending_out;  // our outgoing, peer id known
  };
  mutable std::mutex mu;
  bool closed = false;
  std::unordered_map<std::string, peer_entry> peers;
  std::unordered_map<connection*, std::weak_ptr<connection>> live;
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors;

  // Inbound connections in their handshake (unauthenticated), guarded by mu.
  std::size_t pending_in = 0;
  std::unordered_map<std::string, std::size_t> pending_by_address;
  std::uint64_t accept_errors = 0;
  std::uint64_t refused_pending = 0;

  // At most one line per second per kind of flood; the next line tells how many were
  // suppressed (a flood must not turn into a log flood). Guarded by mu.
  struct log_limiter {
    std::chrono::steady_clock::time_point next{};
    std::uint64_t suppressed = 0;
  };
  log_limiter accept_log, refuse_log, handshake_log;
  // True when a line may be written now; `suppressed` gets the count skipped since the last.
  bool may_log(log_limiter& l, std::uint64_t& suppressed);

  // Returns false if the endpoint is closed.
  bool add_live(const connection_ptr& c);
  void add_pending(const connection_ptr& c, const std::string& peer);
  // Takes a pending-handshake slot for an inbound connection from `address`; false (with
  // the reason) when a cap is reached.
  bool admit_handshake(const std::string& address, std::string& why);
  void release_handshake(const std::string& address);
  // Acceptor side: may `c` (authenticated, inbound) be established? Returns
  // accept_status::accepted and fills `victim` with a connection it replaces, or the
  // refusal status with the reason in `why`.
  accept_status decide_incoming(const connection_ptr& c, connection_ptr& victim, std::string& why);
  // Initiator side: the acceptor said yes; `c` replaces any previous connection to the peer.
  connection_ptr establish_outgoing(const connection_ptr& c);
  void remove(connection* c, const std::string& peer);
  static void connect(const std::shared_ptr<endpoint_state>& st,
                      const asio::ip::tcp::endpoint& remote, connect_handler handler,
                      std::string expected_peer);
  // A freshly accepted socket: takes a handshake slot (or refuses) and starts it.
  static void admit(const std::shared_ptr<endpoint_state>& st, asio::ip::tcp::socket socket);
  static void accept_loop(const std::shared_ptr<endpoint_state>& st,
                          const std::shared_ptr<asio::ip::tcp::acceptor>& acc);
};

}  // namespace otpp::transport::detail
