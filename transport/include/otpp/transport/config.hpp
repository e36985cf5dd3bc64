// Local configuration of a transport endpoint.
#pragma once

#include <bitset>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace otpp::transport {

struct tls_options {
  bool enabled = false;
  std::string certificate_file;  // PEM chain presented by this node (server, and client if mutual)
  std::string private_key_file;  // PEM
  std::string ca_file;           // PEM trust anchors used to verify the peer
  bool verify_peer = true;       // client verifies the server's chain (keep on)
  bool mutual = false;           // server requires and verifies a client certificate
  std::string server_name;       // when set, the client checks the server certificate's name
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
  // Shared secret. Empty: read (or create, mode 0400) the cookie file at cookie_path.
  std::string secret;
  std::string cookie_path;  // empty: default_cookie_path() = $HOME/.otpp.cookie
  // Tests only: a fixed, public secret; logged loudly at start.
  bool insecure = false;

  std::size_t max_frame_size = std::size_t{64} << 20;   // max payload bytes per frame
  std::size_t max_queue_bytes = std::size_t{16} << 20;  // bound of the outgoing queue (bytes)
  std::chrono::milliseconds heartbeat_interval{1000};   // 0: no heartbeats, no silence check
  std::chrono::milliseconds silence_timeout{10000};     // no bytes for this long: heartbeat_timeout
  std::chrono::milliseconds handshake_timeout{10000};   // TCP connect + TLS + handshake
  std::bitset<256> accepted_kinds = all_app_kinds();    // kinds delivered to on_frame
  tls_options tls;
};

}  // namespace otpp::transport
