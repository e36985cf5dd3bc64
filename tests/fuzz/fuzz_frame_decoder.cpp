// Fuzz target: the frame decoder (length check, MAC check, plain handshake frames).
//
// Input byte 0 picks a mode:
//   even: the rest is an untrusted byte stream fed to a frame_opener and to the plain frame
//         decoder in chunks (sizes taken from byte 1); must never crash or over-read.
//   odd:  the rest is a list of frames (kind, len, payload) sealed with a known key; one byte
//         of the sealed stream is optionally corrupted; the opener must return exactly the
//         sealed frames, or reject the stream at or before the corrupted frame.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "otpp/transport/frame.hpp"

using namespace otpp::transport;

namespace {
const session_key& test_key() {
  static const session_key k = [] {
    session_key x{};
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint8_t>(i * 13 + 1);
    return x;
  }();
  return k;
}

void decode_stream(const std::uint8_t* data, std::size_t size) {
  const std::size_t chunk = size > 0 ? (data[0] % 64) + 1 : 1;
  frame_opener opener(test_key(), direction::initiator_to_acceptor, 4096);
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
      if (!step.consumed) break;
      if (step.frame.payload.size() + header_size + mac_size != step.consumed) std::abort();
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(step.consumed));
    }
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
  if (size < 2) return;
  const std::size_t corrupt_at = static_cast<std::size_t>(data[0]) * 7 + data[1];
  data += 2;
  size -= 2;
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
  frame_sealer sealer(test_key(), direction::acceptor_to_initiator);
  std::vector<std::uint8_t> wire;
  std::vector<std::size_t> ends;
  for (auto& it : items) {
    sealer.seal(it.kind, it.payload, wire);
    ends.push_back(wire.size());
  }
  const bool corrupt = corrupt_at < wire.size();
  if (corrupt) wire[corrupt_at] ^= 0x20;
  frame_opener opener(test_key(), direction::acceptor_to_initiator, 255);
  std::size_t pos = 0, i = 0;
  while (pos < wire.size()) {
    auto step = opener.open({wire.data() + pos, wire.size() - pos});
    if (step.error || !step.consumed) {
      // Only a corrupted stream may fail, and only at the corrupted frame.
      if (!corrupt || corrupt_at >= ends[i]) std::abort();
      return;
    }
    if (corrupt && corrupt_at < pos + step.consumed) std::abort();  // forgery accepted
    if (i >= items.size() || step.frame.kind != items[i].kind ||
        step.frame.payload.size() != items[i].payload.size() ||
        (!items[i].payload.empty() &&
         std::memcmp(step.frame.payload.data(), items[i].payload.data(), items[i].payload.size()) !=
             0))
      std::abort();
    pos += step.consumed;
    ++i;
  }
  if (i != items.size()) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0)
    decode_stream(data + 1, size - 1);
  else
    round_trip(data + 1, size - 1);
  return 0;
}
