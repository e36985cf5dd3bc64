// Handshake messages and key schedule. All handshake frames are plain
// frames (frame.hpp) whose payload is a msgpack array.
//
//   initiator                                   acceptor
//   HELLO [version, node id, creation, nonce, protections] -->
//                              <-- HELLO [version, node id, creation, nonce, protections]
//                       both ends agree on a record protection (negotiate_protection) or
//                       close with protection_mismatch

//   PROOF [HMAC(secret, "otpp/1 initiator" || T)] -->
//                       acceptor checks the proof (constant time), then the connection table
//                                            <-- ACCEPT [0, HMAC(secret, "otpp/1 acceptor" || T)]
//                                                or ACCEPT [status, nil] and close
//
// T = SHA-256(len || HELLO_initiator || len || HELLO_acceptor): both versions, ids, creations
// and fresh 32-byte nonces. Under TLS, T also covers a TLS exporter value of the channel
// (channel_binding below), so the proofs and keys are bound to this TLS session: a relay
// that terminates TLS on each side (two sessions, two exporter values) fails the proof. Both HELLOs
// are sent at once, so a version mismatch is seen by both ends (version is the first array element
// and is checked before anything else). Session keys (HKDF-SHA256 with salt T, one key per
// direction):
//   PRK = HMAC(T, secret); K_dir = HMAC(PRK, "otpp/1 key I->A" | "otpp/1 key A->I" || 0x01)
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "otpp/result.hpp"
#include "otpp/transport/config.hpp"
#include "otpp/transport/crypto.hpp"

namespace otpp::transport {

inline constexpr std::uint32_t protocol_version = 1;
inline constexpr std::size_t max_node_id_size = 255;

inline constexpr std::size_t max_offered_protections = 8;

struct hello_message {
  std::uint32_t version = protocol_version;
  std::string node_id;
  std::uint32_t creation = 0;
  nonce challenge{};
  // Offered record protections, preferred first (at most max_offered_protections). Empty
  // when encoding: the four-field HELLO of a node without negotiation.
  std::vector<record_protection> protections{record_protection::hmac_sha256};
};

// The record protection two offers agree on, the same whichever side computes it: among the
// modes in both lists, the lowest sum of positions; ties go to the stronger mode
// (aes_256_gcm, chacha20_poly1305, hmac_sha256). nullopt: nothing in common.
std::optional<record_protection> negotiate_protection(
    std::span<const record_protection> a, std::span<const record_protection> b) noexcept;
// "hmac-sha256, aes-256-gcm" (for error messages).
std::string protection_list(std::span<const record_protection> modes);

// ACCEPT status codes on the wire. Their own enum with pinned numbers so that the wire
// protocol does not move when otpp::errc grows (the values are the ones protocol version 1
// has always sent). Mapped to otpp::errc at the edge (accept_status_error).
enum class accept_status : std::uint32_t {
  accepted = 0,
  not_authorised = 7,         // the initiator's proof was wrong (different secret)
  duplicate_connection = 17,  // the connection-table rule kept another connection
  endpoint_closing = 32,      // the acceptor is shutting down
};

// The error an initiator reports for a refusal status; an unknown value gives
// handshake_failed (a newer peer's status this node does not know).
std::error_code accept_status_error(std::uint32_t status) noexcept;

struct accept_message {
  std::uint32_t status = 0;  // an accept_status value (kept raw: a peer may send any)
  digest proof{};            // meaningful when status == accepted
};

// TLS exporter label and size of the channel binding mixed into T (RFC 5705 / RFC 8446
// section 7.5, SSL_export_keying_material without context).
inline constexpr std::string_view channel_binding_label = "EXPORTER-otpp/1 channel binding";
inline constexpr std::size_t channel_binding_size = 32;

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

// channel: the TLS exporter value (empty without TLS; then T is the plain transcript).
digest transcript_hash(bytes_view hello_initiator, bytes_view hello_acceptor,
                       bytes_view channel = {});
digest initiator_proof(bytes_view secret, const digest& transcript);
digest acceptor_proof(bytes_view secret, const digest& transcript);
session_keys derive_session_keys(bytes_view secret, const digest& transcript,
                                 record_protection mode = record_protection::hmac_sha256);

// Printable ASCII without spaces, 1..max_node_id_size bytes.
bool valid_node_id(std::string_view id) noexcept;

}  // namespace otpp::transport
