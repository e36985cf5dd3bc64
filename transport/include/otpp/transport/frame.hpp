// Wire format: protected records carrying frames.
//
//   record: +---------------+----------------------------+----------------+
//           | length u32 BE | body: one or more frames   | MAC (16 bytes) |
//           +---------------+----------------------------+----------------+
//           length = body size (the MAC is not counted)
//   frame:  +---------------+------+-------------------+
//           | length u32 BE | kind | payload (msgpack) |
//           +---------------+------+-------------------+
//           length = 1 + payload size
//
// The record protection is negotiated in the handshake (config::record_protection):
//   hmac_sha256: body in clear;
//     MAC = first 16 bytes of HMAC-SHA256(direction key,
//                                         direction byte || sequence u64 BE || length || body)
//   aes_256_gcm, chacha20_poly1305: body encrypted; MAC = the AEAD tag, with
//     nonce (96 bits) = direction byte || 0 0 0 || sequence u64 BE, associated data = length.
//   Each direction has its own key; an AEAD key is replaced after
//   record_state::default_key_update_bytes (the same step on both ends, no message).
// Everything below about the MAC holds for the AEAD tag alike.
// One MAC per record (a write batch), not per frame: small frames cost a memcpy, and the
// HMAC runs once over the whole batch at bulk SHA-256 speed. The sequence number is
// implicit (each direction counts its records from 0 after the handshake), so a replayed,
// dropped, reordered or injected record fails the check; the direction byte and the
// per-direction key make a reflected record fail too. The receiver buffers a whole record
// (its length is bounded before anything is buffered), verifies the MAC in constant time,
// and only then parses the frames inside: no byte of a frame is looked at before it is
// authenticated, and a record whose frames do not parse exactly closes the connection. The
// tag is truncated to 128 bits: a forgery succeeds with probability 2^-128 per attempt and
// the first failed check closes the connection, so an attacker gets one guess per
// connection (the truncation is sanctioned by RFC 2104 section 5 / NIST SP 800-107 for tags
// >= 80 bits).
//
// A writer fills records up to record_body_target bytes; a single frame larger than that
// forms a record of its own, so a record body never exceeds
// max(record_body_target, header_size + max frame payload) (max_record_body).
//
// Handshake frames are "plain": a bare frame (length + kind + msgpack) outside any record
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

#include "otpp/transport/config.hpp"
#include "otpp/transport/crypto.hpp"

namespace otpp::transport {

inline constexpr std::size_t length_size = 4;
inline constexpr std::size_t header_size = 5;  // frame: length + kind
inline constexpr std::size_t mac_size = 16;
inline constexpr std::size_t record_header_size = 4;  // record: length
inline constexpr std::size_t record_overhead = record_header_size + mac_size;
inline constexpr std::size_t record_body_target = std::size_t{256} << 10;
inline constexpr std::size_t max_plain_payload = 1024;  // handshake frames

// Largest record body a peer may send when frames carry at most max_payload bytes.
constexpr std::size_t max_record_body(std::size_t max_payload) noexcept {
  return header_size + max_payload > record_body_target ? header_size + max_payload
                                                        : record_body_target;
}

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

// A growable byte buffer that does not zero what it appends or resizes to (its users fill
// every byte they grow), with amortised doubling; capacity is kept across clear().
class byte_buffer {
 public:
  std::uint8_t* grow(std::size_t n);  // appends n uninitialised bytes; returns their start
  const std::uint8_t* data() const noexcept { return data_.get(); }
  std::uint8_t* data() noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  // Sets the size to n; bytes up to the old size are kept, new ones are not initialised.
  void resize(std::size_t n);
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

// Writes one frame (length, kind, payload: header_size + payload.size() bytes) at dst.
void write_frame(std::uint8_t kind, bytes_view payload, std::uint8_t* dst) noexcept;

// Appends a plain (handshake) frame to out.
void append_plain_frame(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out);
void append_plain_frame(std::uint8_t kind, bytes_view payload, byte_buffer& out);

// Result of one frame decoding step.
struct decode_step {
  std::error_code error;     // set: the input is bad (frame_too_large, malformed_frame)
  std::size_t consumed = 0;  // >0: a frame was decoded, `frame` is valid (points into the input)
  std::size_t needed = 0;    // consumed == 0 and no error: total bytes the next frame needs
  frame_view frame;
};

// Decodes one frame at the start of `in` whose payload may hold up to max_payload bytes.
decode_step decode_frame(bytes_view in, std::size_t max_payload) noexcept;
// Decodes one plain (handshake) frame at the start of `in` (limit max_plain_payload).
inline decode_step decode_plain_frame(bytes_view in) noexcept {
  return decode_frame(in, max_plain_payload);
}

namespace detail {
// One direction's record protection, shared by the sealer and the opener: the negotiated
// mode, its key, the implicit sequence number and the key ratchet.
class record_state {
 public:
  // An AEAD key protects at most this many body bytes; then both ends replace it, at the
  // same record boundary and without a message, by HMAC(key, "otpp/1 key update" || 0x01).
  // 2^34 bytes (16 GiB) keeps AES-GCM far inside the usage limits of RFC 8446 section 5.5
  // (about 2^38 bytes of 16 KiB records at a 2^-57 margin). HMAC records keep one key.
  static constexpr std::uint64_t default_key_update_bytes = std::uint64_t{1} << 34;
  // The last sequence number a record may carry: a direction that used them all closes
  // (record_sealer::records_left, record_opener::open) instead of ever reusing a nonce.
  static constexpr std::uint64_t last_sequence = ~std::uint64_t{0} - 1;

  record_state() = default;
  record_state(const session_key& key, direction dir, record_protection mode, bool sealing,
               std::uint64_t key_update_bytes, std::uint64_t first_sequence);
  ~record_state();
  record_state(record_state&&) noexcept = default;
  record_state& operator=(record_state&&) noexcept = default;

  std::uint64_t next_sequence() const noexcept { return seq_; }
  record_protection protection() const noexcept { return mode_; }

 protected:
  // record: record_header_size bytes (the length, already written), body, mac_size bytes.
  void protect(std::uint8_t* record, std::size_t body) noexcept;  // tags (and encrypts)
  bool verify(std::uint8_t* record, std::size_t body) noexcept;   // checks (and decrypts)

 private:
  void advance(std::size_t body) noexcept;
  digest hmac_tag(const std::uint8_t* record, std::size_t body) noexcept;
  void set_key(const session_key& key);
  aead::nonce_type nonce() const noexcept;

  record_protection mode_ = record_protection::hmac_sha256;
  direction dir_ = direction::initiator_to_acceptor;
  bool sealing_ = true;
  std::uint64_t seq_ = 0;
  std::uint64_t key_bytes_ = 0;  // body bytes under the current AEAD key
  std::uint64_t key_update_bytes_ = default_key_update_bytes;
  session_key key_{};  // AEAD modes: the current key (the ratchet derives the next from it)
  frame_mac mac_;      // hmac_sha256
  aead aead_;          // aes_256_gcm, chacha20_poly1305
};
}  // namespace detail

// Seals records for one direction: writes the length and the tag around a body of frames
// (encrypting the body in place under an AEAD mode).
class record_sealer : public detail::record_state {
 public:
  record_sealer() = default;
  // key_update_bytes and first_sequence: tests of the ratchet and of exhaustion.
  record_sealer(const session_key& key, direction dir,
                record_protection mode = record_protection::hmac_sha256,
                std::uint64_t key_update_bytes = default_key_update_bytes,
                std::uint64_t first_sequence = 0)
      : record_state(key, dir, mode, true, key_update_bytes, first_sequence) {}

  // `record` holds record_header_size bytes of room, then a body of body_size bytes, then
  // mac_size bytes of room: writes the length and the tag, and advances the sequence.
  void seal_in_place(std::uint8_t* record, std::size_t body_size) noexcept;
  // Appends one record holding the given frames (tests and tools; the connection seals
  // record_batch contents in place).
  void seal(std::span<const frame_view> frames, std::vector<std::uint8_t>& out);
  // Appends one record holding a single frame.
  void seal(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out);
  // How many more records this direction may seal before its sequence is used up.
  std::uint64_t records_left() const noexcept {
    return next_sequence() > last_sequence ? 0 : last_sequence - next_sequence() + 1;
  }
  // Wire size of a record holding one frame of `payload` bytes.
  static constexpr std::size_t sealed_size(std::size_t payload) noexcept {
    return record_overhead + header_size + payload;
  }
};

// Result of one record opening step.
struct record_step {
  // set: the stream is bad (frame_too_large, malformed_frame, bad_mac, unknown_frame_kind)
  std::error_code error;
  std::size_t consumed = 0;  // >0: a record was authenticated, `body` holds its frames
  std::size_t needed = 0;    // consumed == 0 and no error: total bytes the next record needs
  bytes_view body;           // points into the input; walk it with frame_reader
  std::uint8_t kind = 0;     // unknown_frame_kind: the kind refused
};

// Opens records of one direction: checks the record length against the limit before
// anything is buffered, verifies the tag (constant time) over the whole record (decrypting
// it in place under an AEAD mode), advances the sequence, and only then checks that the body
// is a sequence of well-formed frames (each within max_payload). A body returned without
// error always parses completely. Nothing but the record length is interpreted before the
// tag is checked.
class record_opener : public detail::record_state {
 public:
  record_opener() = default;
  record_opener(const session_key& key, direction dir, std::size_t max_payload,
                record_protection mode = record_protection::hmac_sha256,
                std::uint64_t key_update_bytes = default_key_update_bytes,
                std::uint64_t first_sequence = 0)
      : record_state(key, dir, mode, false, key_update_bytes, first_sequence),
        max_payload_(max_payload) {}

  // `in` is modified: an AEAD record is decrypted where it lies (a record that fails its
  // check is left garbled; the stream is dead then anyway).
  record_step open(std::span<std::uint8_t> in);
  std::size_t max_payload() const noexcept { return max_payload_; }
  // Kinds a body may hold (default: all). A record holding any other is refused whole with
  // unknown_frame_kind, in the same pass that checks its frames are well formed.
  void accept_kinds(const std::bitset<256>& kinds) noexcept { kinds_ = kinds; }

 private:
  std::size_t max_payload_ = 0;
  std::bitset<256> kinds_ = std::bitset<256>().set();
};

// Walks the frames of a body returned by record_opener::open (already validated).
class frame_reader {
 public:
  explicit frame_reader(bytes_view body) noexcept : rest_(body) {}
  bool next(frame_view& f) noexcept;

 private:
  bytes_view rest_;
};

// Outgoing frames grouped into records in place. The bytes live in chunks of chunk_size
// that a batch keeps for reuse after clear(): a growing batch never reallocates or copies,
// and the memory it writes into is already mapped and warm (a contiguous buffer that doubled
// and was released after large batches spent a third of a 64-byte stream's time in memcpy
// and page faults). A record reserves its length before its first frame and its MAC after
// its last and lies within one chunk, so it is sealed in place. Frames join the open record
// while they fit its chunk and its body stays within record_body_target; a frame larger
// than a chunk gets a chunk (and a record) of its own. Plain frames sit between records.
// The writer sends the chunks in use as one gather write (pieces()).
class record_batch {
 public:
  // One chunk holds one record of record_body_target: frames up to a quarter of that share
  // records, larger ones still avoid an outsized allocation up to record_body_target.
  static constexpr std::size_t chunk_size = record_body_target + record_overhead;
  // Chunks of chunk_size a cleared batch keeps by default (the rest are freed): what an idle
  // connection holds after a burst. A busy connection keeps all its chunks (clear(all)) and
  // trims to this when it goes idle: freeing and re-faulting chunks under load cost a
  // 64-byte stream nearly half its throughput.
  static constexpr std::size_t max_spare_chunks = 2;
  static constexpr std::size_t all = ~std::size_t{0};

  record_batch() = default;
  record_batch(record_batch&&) noexcept = default;
  record_batch& operator=(record_batch&&) noexcept = default;

  // Appends a frame to the open record, or to a new one.
  void add_frame(std::uint8_t kind, bytes_view payload);
  // Closes the open record and appends a plain (handshake) frame.
  void add_plain_frame(std::uint8_t kind, bytes_view payload);
  // Closes the open record (reserves its MAC); later frames start a new record.
  void close_record();
  // Closes the open record and seals every record with consecutive sequence numbers.
  void seal(record_sealer& sealer);
  // Upper bound of the bytes one frame adds to a batch.
  static constexpr std::size_t cost(std::size_t payload) noexcept {
    return record_overhead + header_size + payload;
  }
  std::size_t records() const noexcept { return records_.size(); }

  // The batch's bytes in order: pieces() contiguous pieces (one per chunk in use).
  std::size_t pieces() const noexcept { return used_; }
  bytes_view piece(std::size_t i) const noexcept {
    return {chunks_[i].data.get(), chunks_[i].size};
  }
  std::vector<std::uint8_t> bytes() const;  // a contiguous copy (tests and tools)
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t capacity() const noexcept;  // bytes held in chunks, in use and spare
  // Empties the batch, keeping up to keep_spare standard chunks for reuse (outsized ones are
  // freed); the chunks written last are reused first (they are the ones still in cache).
  void clear(std::size_t keep_spare = max_spare_chunks) noexcept;
  void trim(std::size_t keep_spare) noexcept;  // frees spare chunks beyond keep_spare
  void release() noexcept;                     // frees everything
  void swap(record_batch& other) noexcept;

 private:
  struct chunk {
    std::unique_ptr<std::uint8_t[]> data;
    std::size_t size = 0, capacity = 0;
  };
  struct record {
    std::size_t chunk, offset, body;
  };
  std::size_t room() const noexcept {
    return used_ == 0 ? 0 : chunks_[used_ - 1].capacity - chunks_[used_ - 1].size;
  }
  void ensure(std::size_t n);                  // the last chunk in use has n bytes of room
  std::uint8_t* take(std::size_t n) noexcept;  // n bytes of that room

  std::vector<chunk> chunks_;  // [0, used_) in use, then spare ones of chunk_size
  std::size_t used_ = 0;
  std::size_t size_ = 0;
  std::vector<record> records_;  // the last one is open while open_
  bool open_ = false;
};

}  // namespace otpp::transport
