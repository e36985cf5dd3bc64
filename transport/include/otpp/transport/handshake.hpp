// Handshake messages and key schedule (DESIGN section 5). All handshake frames are plain
// frames (frame.hpp) whose payload is a msgpack array.
//
//   initiator                                   acceptor
//   HELLO [version, node id, creation, nonce] -->
//                                            <-- HELLO [version, node id, creation, nonce]
//   PROOF [HMAC(secret, "otpp/1 initiator" || T)] -->
//                       acceptor checks the proof (constant time), then the connection table
//                                            <-- ACCEPT [0, HMAC(secret, "otpp/1 acceptor" || T)]
//                                                or ACCEPT [errc, nil] and close
//
// T = SHA-256(len || HELLO_initiator || len || HELLO_acceptor): both versions, ids, creations
// and fresh 32-byte nonces. Both HELLOs are sent at once, so a version mismatch is seen by
// both ends (version is the first array element and is checked before anything else).
// Session keys (HKDF-SHA256 with salt T, one key per direction):
//   PRK = HMAC(T, secret); K_dir = HMAC(PRK, "otpp/1 key I->A" | "otpp/1 key A->I" || 0x01)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "otpp/result.hpp"
#include "otpp/transport/crypto.hpp"

namespace otpp::transport {

inline constexpr std::uint32_t protocol_version = 1;
inline constexpr std::size_t max_node_id_size = 255;

struct hello_message {
  std::uint32_t version = protocol_version;
  std::string node_id;
  std::uint32_t creation = 0;
  nonce challenge{};
};

struct accept_message {
  std::uint32_t status = 0;  // 0: accepted; otherwise an otpp::errc value
  digest proof{};            // meaningful when status == 0
};

struct session_keys {
  session_key initiator_to_acceptor{};
  session_key acceptor_to_initiator{};
};

std::vector<std::uint8_t> encode_hello(const hello_message& m);
std::vector<std::uint8_t> encode_proof(const digest& proof);
std::vector<std::uint8_t> encode_accept(const accept_message& m);

// Parsers of untrusted input: never throw; a version other than protocol_version gives
// errc::version_mismatch, anything malformed errc::handshake_failed.
result<hello_message> parse_hello(bytes_view payload);
result<digest> parse_proof(bytes_view payload);
result<accept_message> parse_accept(bytes_view payload);

digest transcript_hash(bytes_view hello_initiator, bytes_view hello_acceptor);
digest initiator_proof(bytes_view secret, const digest& transcript);
digest acceptor_proof(bytes_view secret, const digest& transcript);
session_keys derive_session_keys(bytes_view secret, const digest& transcript);

// Printable ASCII without spaces, 1..max_node_id_size bytes.
bool valid_node_id(std::string_view id) noexcept;

}  // namespace otpp::transport
