// Local configuration of a transport endpoint.
#pragma once

#include <bitset>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace otpp::transport {

// How the records of an established connection are protected (negotiated in the handshake,
// handshake.hpp). Both keep every record authentic, in order and bound to its direction;
// they differ in what an observer of the wire learns:
//   hmac_sha256        integrity only: payloads travel in clear (readable by anyone on the
//                      path, unless TLS is on); the default, and what nodes without
//                      negotiation speak.
//   aes_256_gcm        confidentiality and integrity (AEAD); fastest where the CPU has AES
//                      instructions (AES-NI, VAES) and carry-less multiply.
//   chacha20_poly1305  confidentiality and integrity (AEAD); for CPUs without AES
//                      instructions.
enum class record_protection : std::uint8_t {
  hmac_sha256 = 1,
  aes_256_gcm = 2,
  chacha20_poly1305 = 3,
};

// Wire and configuration names: "hmac-sha256", "aes-256-gcm", "chacha20-poly1305".
std::string_view to_string(record_protection p) noexcept;
std::optional<record_protection> parse_record_protection(std::string_view name) noexcept;
// True for the modes that encrypt.
constexpr bool encrypts(record_protection p) noexcept {
  return p != record_protection::hmac_sha256;
}

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
  // Record protections this node accepts, most preferred first (no duplicates; at least
  // one). Both ends send theirs in HELLO and agree on one: among the modes both accept, the
  // one with the lowest sum of its two positions; a tie goes to the stronger mode (AEAD
  // first). So two nodes with the default list use hmac_sha256, a node listing only
  // aes_256_gcm gets aes_256_gcm from any default peer, and a node listing {aes_256_gcm,
  // hmac_sha256} gets aes_256_gcm from a default peer too. No mode in common: both ends
  // close with errc::protection_mismatch. The offers are part of the authenticated
  // transcript, so a man in the middle cannot downgrade them unnoticed.
  std::vector<record_protection> record_protections = {record_protection::hmac_sha256,
                                                       record_protection::aes_256_gcm,
                                                       record_protection::chacha20_poly1305};
  tls_options tls;
};

}  // namespace otpp::transport
