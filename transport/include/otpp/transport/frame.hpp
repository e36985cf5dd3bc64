// Wire frames (DESIGN section 5).
//
//   +----------------+------+-------------------+--------------------+
//   | length u32 BE  | kind | payload (msgpack) | MAC (16 bytes)     |
//   +----------------+------+-------------------+--------------------+
//   length = 1 + payload size (the kind byte and the payload; the MAC is not counted)
//
// MAC = first 16 bytes of HMAC-SHA256(direction key,
//                                     direction byte || sequence u64 BE || length || kind ||
//                                     payload)
// The sequence number is implicit (each direction counts its frames from 0 after the
// handshake), so a replayed, dropped, reordered or injected frame fails the check; the
// direction byte and the per-direction key make a reflected frame fail too. The tag is
// truncated to 128 bits: a forgery succeeds with probability 2^-128 per attempt and the first
// failed check closes the connection, so an attacker gets one guess per connection (the
// truncation is sanctioned by RFC 2104 section 5 / NIST SP 800-107 for tags >= 80 bits).
//
// Handshake frames are "plain": the same length + kind + msgpack layout without a MAC
// (their payload is authenticated by the challenge-response that follows).
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include "otpp/transport/crypto.hpp"

namespace otpp::transport {

inline constexpr std::size_t length_size = 4;
inline constexpr std::size_t header_size = 5;  // length + kind
inline constexpr std::size_t mac_size = 16;
inline constexpr std::size_t max_plain_payload = 1024;  // handshake frames

// Frame kinds. Kinds below first_app_kind belong to the transport; the rest are carried
// to the application (the cluster layer), which declares the kinds it understands in
// config::accepted_kinds. Anything else closes the connection with unknown_frame_kind.
namespace kind {
inline constexpr std::uint8_t hello = 0x01;      // plain: version, node id, creation, nonce
inline constexpr std::uint8_t proof = 0x02;      // plain: initiator's challenge response
inline constexpr std::uint8_t accept = 0x03;     // plain: acceptor's status + response
inline constexpr std::uint8_t heartbeat = 0x04;  // sealed, empty payload
inline constexpr std::uint8_t first_app = 0x10;
}  // namespace kind

// Who sent a frame: the side that opened the TCP connection, or the side that accepted it.
enum class direction : std::uint8_t { initiator_to_acceptor = 'I', acceptor_to_initiator = 'A' };

struct frame_view {
  std::uint8_t kind = 0;
  bytes_view payload;
};

inline void put_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}
inline std::uint32_t get_u32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// A growable byte buffer that does not zero what it appends (the write queue fills every
// byte it grows), with amortised doubling; capacity is kept across clear().
class byte_buffer {
 public:
  std::uint8_t* grow(std::size_t n);  // appends n uninitialised bytes; returns their start
  const std::uint8_t* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  void release() noexcept {
    data_.reset();
    size_ = capacity_ = 0;
  }
  void swap(byte_buffer& other) noexcept {
    data_.swap(other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t size_ = 0, capacity_ = 0;
};

// Appends a plain (handshake) frame to out.
void append_plain_frame(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out);
void append_plain_frame(std::uint8_t kind, bytes_view payload, byte_buffer& out);

// Result of one decoding step.
struct decode_step {
  std::error_code error;     // set: the stream is bad (frame_too_large, malformed_frame, bad_mac)
  std::size_t consumed = 0;  // >0: a frame was decoded, `frame` is valid (points into the input)
  std::size_t needed = 0;    // consumed == 0 and no error: total bytes the next frame needs
  frame_view frame;
};

// Decodes one plain frame at the start of `in` (payload limit max_plain_payload).
decode_step decode_plain_frame(bytes_view in) noexcept;

// Seals frames for one direction: appends length, kind, payload and MAC to a buffer.
class frame_sealer {
 public:
  frame_sealer() = default;
  frame_sealer(const session_key& key, direction dir) : mac_(key), dir_(dir) {}

  void seal(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out);
  void seal(std::uint8_t kind, bytes_view payload, byte_buffer& out);
  // Writes the sealed frame at dst (sealed_size(payload.size()) bytes).
  void seal_into(std::uint8_t kind, bytes_view payload, std::uint8_t* dst) noexcept;
  std::uint64_t next_sequence() const noexcept { return seq_; }
  static constexpr std::size_t sealed_size(std::size_t payload) noexcept {
    return header_size + payload + mac_size;
  }

 private:
  frame_mac mac_;
  direction dir_ = direction::initiator_to_acceptor;
  std::uint64_t seq_ = 0;
};

// Opens frames of one direction: checks the length against the limit, verifies the MAC
// (constant time) before anything else looks at kind or payload, then advances the sequence.
class frame_opener {
 public:
  frame_opener() = default;
  frame_opener(const session_key& key, direction dir, std::size_t max_payload)
      : mac_(key), dir_(dir), max_payload_(max_payload) {}

  decode_step open(bytes_view in);
  std::uint64_t next_sequence() const noexcept { return seq_; }
  std::size_t max_payload() const noexcept { return max_payload_; }

 private:
  frame_mac mac_;
  direction dir_ = direction::initiator_to_acceptor;
  std::size_t max_payload_ = 0;
  std::uint64_t seq_ = 0;
};

}  // namespace otpp::transport
