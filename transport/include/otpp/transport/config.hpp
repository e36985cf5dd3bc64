// Local configuration of a transport endpoint.
#pragma once

#include <bitset>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace otpp::transport {

// Shortest secret accepted: 128 bits of key material.
inline constexpr std::size_t min_secret_size = 16;

struct tls_options {
  bool enabled = false;
  std::string certificate_file;  // PEM chain presented by this node (server, and client if mutual)
  std::string private_key_file;  // PEM
  std::string ca_file;           // PEM trust anchors used to verify the peer (pinned CA)
  bool verify_peer = true;       // client verifies the server's chain (keep on)
  bool mutual = false;      // server requires and verifies a client certificate (needs ca_file)
  std::string server_name;  // when set, the client checks the server certificate's name
  // With verify_peer, endpoint::create refuses a config that sets neither ca_file nor
  // server_name: the system trust store alone would accept any publicly trusted
  // certificate for any name (anyone could sit in the middle).
};

// Kinds an endpoint carries to the application by default: every kind >= kind::first_app.
inline std::bitset<256> all_app_kinds() {
  std::bitset<256> b;
  for (std::size_t k = 0x10; k < 256; ++k) b.set(k);
  return b;
}

struct config {
  std::string node_id;         // this node's id as peers see it (printable ASCII, <= 255)
  std::uint32_t creation = 0;  // incarnation number
  // Shared secret, at least min_secret_size bytes of random key material (a shorter one is
  // refused: without TLS a passive observer can brute-force it offline). Empty: read (or
  // create, mode 0400, 32 random bytes) the cookie file at cookie_path.
  std::string secret;
  std::string cookie_path;  // empty: default_cookie_path() = $HOME/.otpp.cookie
  // Tests only: a fixed, public secret; logged loudly at start.
  bool insecure = false;

  std::size_t max_frame_size = std::size_t{64} << 20;   // max payload bytes per frame
  std::size_t max_queue_bytes = std::size_t{16} << 20;  // bound of the outgoing queue (bytes)
  std::chrono::milliseconds heartbeat_interval{1000};   // 0: no heartbeats, no silence check
  std::chrono::milliseconds silence_timeout{10000};     // no bytes for this long: heartbeat_timeout
  std::chrono::milliseconds handshake_timeout{10000};   // TCP connect + TLS + handshake
  // A connection whose outgoing bytes make no progress for this long (the peer does not
  // read, although it may still send heartbeats) is closed with errc::timeout. Checked on
  // the heartbeat timer; 0 disables the check.
  std::chrono::milliseconds write_stall_timeout{30000};
  // Inbound connections still in their handshake (unauthenticated), in total and per
  // source IP address: a connection over either cap is closed as soon as it is accepted.
  std::size_t max_pending_handshakes = 256;
  std::size_t max_pending_handshakes_per_address = 32;
  // accept() failing for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses the
  // accept loop this long instead of retrying at once (the pending connection keeps the
  // listening socket readable, so an immediate retry spins).
  std::chrono::milliseconds accept_retry_delay{100};
  std::bitset<256> accepted_kinds = all_app_kinds();  // kinds delivered to on_frame
  tls_options tls;
};

}  // namespace otpp::transport
