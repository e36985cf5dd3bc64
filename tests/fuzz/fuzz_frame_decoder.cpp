// Fuzz target: the record decoder (length check, MAC check, frame parsing inside an
// authenticated record), the outgoing record batch, and plain handshake frames.
//
// Input byte 0 picks the record protection ((byte >> 1) % 3: hmac-sha256, aes-256-gcm,
// chacha20-poly1305) and a mode:
//   even: the rest is an untrusted byte stream fed to a record_opener and to the plain frame
//         decoder in chunks (sizes taken from byte 1); must never crash or over-read. Some
//         of the stream is also sealed as record bodies with the right key, so the frame
//         parser behind the MAC check sees arbitrary (authentic) bodies too.
//   odd:  the rest is a list of frames (kind, len, payload) grouped into records (byte 2
//         sets the frames per record, 0: one record_batch) and sealed with a known key; one
//         byte of the sealed stream is optionally corrupted; the opener must return exactly
//         the sealed frames, or reject the stream at or before the corrupted record.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "otpp/transport/frame.hpp"

using namespace otpp::transport;

namespace {
record_protection protection = record_protection::hmac_sha256;

const session_key& test_key() {
  static const session_key k = [] {
    session_key x{};
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint8_t>(i * 13 + 1);
    return x;
  }();
  return k;
}

void check_body(bytes_view body, std::size_t max_payload) {
  // A body handed out by the opener parses completely into frames within the limit.
  std::size_t total = 0;
  frame_view f;
  for (frame_reader r(body); r.next(f);) {
    if (f.payload.size() > max_payload) std::abort();
    total += header_size + f.payload.size();
  }
  if (total != body.size()) std::abort();
}

void decode_stream(const std::uint8_t* data, std::size_t size) {
  const std::size_t chunk = size > 0 ? (data[0] % 64) + 1 : 1;
  constexpr std::size_t limit = 4096;
  record_opener opener(test_key(), direction::initiator_to_acceptor, limit, protection);
  std::vector<std::uint8_t> buf;
  std::size_t fed = 0;
  bool dead = false;
  while (fed < size && !dead) {
    const std::size_t n = std::min(chunk, size - fed);
    buf.insert(buf.end(), data + fed, data + fed + n);
    fed += n;
    for (;;) {
      auto step = opener.open(buf);
      if (step.error) {
        dead = true;
        break;
      }
      if (!step.consumed) {
        if (step.needed <= buf.size()) std::abort();
        break;
      }
      if (step.body.size() + record_overhead != step.consumed) std::abort();
      check_body(step.body, limit);
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(step.consumed));
    }
  }
  // The input as the body of an authentic record: the parser behind the MAC check.
  if (size > 0) {
    record_sealer sealer(test_key(), direction::acceptor_to_initiator, protection);
    record_opener authentic(test_key(), direction::acceptor_to_initiator, 255, protection);
    std::vector<std::uint8_t> rec(record_overhead + size);
    std::memcpy(rec.data() + record_header_size, data, size);
    sealer.seal_in_place(rec.data(), size);
    auto step = authentic.open(rec);
    if (step.error == std::error_code() && step.consumed != rec.size()) std::abort();
    if (step.consumed) check_body(step.body, 255);
    if (authentic.next_sequence() != 1) std::abort();  // the MAC always passes here
  }
  // The plain (handshake) decoder on the whole input.
  std::size_t off = 0;
  while (off < size) {
    auto step = decode_plain_frame({data + off, size - off});
    if (step.error || !step.consumed) break;
    if (step.frame.payload.size() > max_plain_payload) std::abort();
    off += step.consumed;
  }
}

void round_trip(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return;
  const std::size_t corrupt_at = static_cast<std::size_t>(data[0]) * 7 + data[1];
  const std::size_t per_record = data[2] % 8;  // 0: everything in one record_batch
  data += 3;
  size -= 3;
  struct item {
    std::uint8_t kind;
    std::vector<std::uint8_t> payload;
  };
  std::vector<item> items;
  std::size_t off = 0;
  while (off + 2 <= size && items.size() < 64) {
    const std::uint8_t k = data[off];
    const std::size_t len = std::min<std::size_t>(data[off + 1], size - off - 2);
    items.push_back({k, {data + off + 2, data + off + 2 + len}});
    off += 2 + len;
  }
  if (items.empty()) return;
  record_sealer sealer(test_key(), direction::acceptor_to_initiator, protection);
  std::vector<std::uint8_t> wire;
  std::vector<std::size_t> ends;        // end offset of each record
  std::vector<std::size_t> first_item;  // index of each record's first item
  if (per_record == 0) {
    record_batch batch;
    for (auto& it : items) batch.add_frame(it.kind, it.payload);
    batch.seal(sealer);
    if (batch.records() != 1) std::abort();  // far below record_body_target
    wire = batch.bytes();
    ends.push_back(wire.size());
    first_item.push_back(0);
  } else {
    for (std::size_t i = 0; i < items.size(); i += per_record) {
      std::vector<frame_view> fs;
      for (std::size_t j = i; j < std::min(items.size(), i + per_record); ++j)
        fs.push_back({items[j].kind, items[j].payload});
      sealer.seal(fs, wire);
      ends.push_back(wire.size());
      first_item.push_back(i);
    }
  }
  const bool corrupt = corrupt_at < wire.size();
  if (corrupt) wire[corrupt_at] ^= 0x20;
  if (encrypts(protection) && !corrupt) {
    // The payload bytes never appear in clear in an encrypted stream's bodies (checked on
    // frames long enough that a chance match is negligible).
    for (const auto& it : items)
      if (it.payload.size() >= 16 &&
          std::search(wire.begin(), wire.end(), it.payload.begin(), it.payload.end()) != wire.end())
        std::abort();
  }
  record_opener opener(test_key(), direction::acceptor_to_initiator, 255, protection);
  std::size_t pos = 0, r = 0, i = 0;
  while (pos < wire.size()) {
    auto step = opener.open({wire.data() + pos, wire.size() - pos});
    if (step.error || !step.consumed) {
      // Only a corrupted stream may fail, and only at the corrupted record.
      if (!corrupt || corrupt_at >= ends[r]) std::abort();
      return;
    }
    if (corrupt && corrupt_at < pos + step.consumed) std::abort();  // forgery accepted
    if (i != first_item[r]) std::abort();
    frame_view f;
    for (frame_reader rd(step.body); rd.next(f); ++i) {
      if (i >= items.size() || f.kind != items[i].kind ||
          f.payload.size() != items[i].payload.size() ||
          (!items[i].payload.empty() &&
           std::memcmp(f.payload.data(), items[i].payload.data(), items[i].payload.size()) != 0))
        std::abort();
    }
    pos += step.consumed;
    ++r;
  }
  if (i != items.size() || r != ends.size()) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static constexpr record_protection modes[] = {record_protection::hmac_sha256,
                                                record_protection::aes_256_gcm,
                                                record_protection::chacha20_poly1305};
  protection = modes[(data[0] >> 1) % 3];
  if (data[0] % 2 == 0)
    decode_stream(data + 1, size - 1);
  else
    round_trip(data + 1, size - 1);
  return 0;
}
