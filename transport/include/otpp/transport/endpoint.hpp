// A transport endpoint: this node's side of the wire. Listens and connects, runs the
// handshake, keeps the table of authenticated connections (one per peer node id) and
// resolves simultaneous connects.
//
// Connection table rule (applied by the acceptor while answering the handshake, before
// either side sees the connection up, so no frame is ever sent on a loser):
//  * a connection from a peer whose creation differs from the current one replaces it;
//  * otherwise, between this node's outgoing connection (established or still in its
//    handshake with the peer id known) and the peer's incoming one, the lower node id's
//    outgoing connection wins: the loser is refused with connection_closed
//    ("duplicate connection") on both ends;
//  * otherwise the newer connection replaces the older one (the peer reconnected).
// A replaced connection is closed with connection_closed ("superseded"); its on_down may
// arrive after on_up of its replacement, so compare connection pointers.
// Pass the expected peer id to connect() (the cluster knows it) so that a connect still
// waiting for the peer's HELLO already counts as "outgoing to that peer".
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "otpp/result.hpp"
#include "otpp/transport/config.hpp"
#include "otpp/transport/connection.hpp"

namespace otpp::transport {

// Application callbacks. All run on the connection's strand (one at a time per connection,
// but different connections may call concurrently from the io_context's threads). They may
// still run after endpoint::close() returns, until the io_context has drained or stopped:
// keep what they capture alive until then. "Lower node id" means the byte-wise
// lexicographically smaller id string.
struct connection_events {
  // A connection finished its handshake (either direction). Runs before any on_frame of it.
  std::function<void(const connection_ptr&)> on_up;
  // A frame arrived: its record's MAC verified, kind in config::accepted_kinds. The payload view is
  // valid only during the call. Frames of a connection arrive in order, none lost or duplicated.
  std::function<void(const connection_ptr&, frame_view)> on_frame;
  // An established connection ended; exactly once per on_up. Reasons: connection_closed,
  // heartbeat_timeout, frame_too_large, malformed_frame, bad_mac, unknown_frame_kind, ...
  std::function<void(const connection_ptr&, const failure&)> on_down;
  // An inbound connection failed before it was up (not_authorised, version_mismatch,
  // handshake_failed, tls_error, duplicate ...). remote is "ip:port". Also called, on the
  // acceptor's strand, for a connection closed at once because a pending-handshake cap was
  // reached (connection_closed, "refused: ...").
  std::function<void(const failure&, const std::string& remote)> on_rejected;
};

// Counters of an endpoint (endpoint::stats): for monitoring and tests.
struct endpoint_stats {
  std::uint64_t accept_errors = 0;       // accept() failures (paused on, not spun on)
  std::uint64_t refused_handshakes = 0;  // inbound connections closed at once: a
                                         // pending-handshake cap was reached
  std::size_t pending_handshakes = 0;    // inbound connections in their handshake now
};

class endpoint {
  struct passkey {};

 public:
  // Resolves the secret (config::secret, else the cookie file; errc::cookie_error when it is
  // unusable), prepares TLS contexts (errc::tls_error), validates the config
  // (errc::invalid_argument). Runs on `io`, which the caller drives (any number of threads).
  static result<std::unique_ptr<endpoint>> create(asio::io_context& io, config cfg,
                                                  connection_events events);
  ~endpoint();  // close()

  // Starts accepting on `where` (port 0: ephemeral). Returns the bound address.
  result<asio::ip::tcp::endpoint> listen(const asio::ip::tcp::endpoint& where);
  // Connects, runs TLS (if configured) and the handshake; the handler gets the established
  // connection (after on_up) or the failure (connection_refused: nothing listens there;
  // not_authorised, version_mismatch, tls_error, handshake_failed, connection_closed, ...). Bounded
  // by config::handshake_timeout. expected_peer: the peer's node id if known (checked; see the
  // table rule above).
  void connect(const asio::ip::tcp::endpoint& remote, connect_handler handler,
               std::string expected_peer = {});
  void connect(std::string host, std::uint16_t port, connect_handler handler,
               std::string expected_peer = {});

  // The established connection to `peer_id`, or null.
  connection_ptr find(std::string_view peer_id) const;
  std::vector<connection_ptr> connections() const;

  // Stops listening and aborts every connection (on_down / handlers report
  // connection_closed). Idempotent.
  void close();

  const config& local_config() const;
  endpoint_stats stats() const;

  endpoint(passkey, std::shared_ptr<detail::endpoint_state> state);

 private:
  std::shared_ptr<detail::endpoint_state> state_;
};

}  // namespace otpp::transport
