// Fuzz target: the handshake message parsers (hello with its record protection offer,
// proof, accept) and the protection negotiation. Untrusted msgpack from
// a peer that is not authenticated yet. Any input must parse or fail cleanly; what parses
// must re-encode to something that parses to the same value.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "otpp/transport/frame.hpp"
#include "otpp/transport/handshake.hpp"

using namespace otpp::transport;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const bytes_view in(data, size);
  if (auto h = parse_hello(in)) {
    auto again = parse_hello(encode_hello(*h));
    if (!again || again->node_id != h->node_id || again->creation != h->creation ||
        again->challenge != h->challenge || again->protections != h->protections ||
        !valid_node_id(h->node_id) || h->protections.size() > max_offered_protections)
      std::abort();
    // Negotiation is symmetric, and what it picks is offered by both.
    static const std::vector<std::vector<record_protection>> others = {
        {record_protection::hmac_sha256},
        {record_protection::aes_256_gcm},
        {record_protection::aes_256_gcm, record_protection::hmac_sha256},
        {record_protection::hmac_sha256, record_protection::aes_256_gcm,
         record_protection::chacha20_poly1305},
        {record_protection::chacha20_poly1305, record_protection::aes_256_gcm}};
    for (const auto& o : others) {
      const auto ab = negotiate_protection(h->protections, o);
      if (ab != negotiate_protection(o, h->protections)) std::abort();
      if (ab &&
          (std::find(o.begin(), o.end(), *ab) == o.end() ||
           std::find(h->protections.begin(), h->protections.end(), *ab) == h->protections.end()))
        std::abort();
    }
  }
  if (auto p = parse_proof(in)) {
    auto again = parse_proof(encode_proof(*p));
    if (!again || *again != *p) std::abort();
  }
  if (auto a = parse_accept(in)) {
    auto again = parse_accept(encode_accept(*a));
    if (!again || again->status != a->status || (a->status == 0 && again->proof != a->proof))
      std::abort();
  }
  // The same bytes as a stream of plain frames, each payload through every parser.
  std::size_t off = 0;
  while (off < size) {
    auto step = decode_plain_frame(in.subspan(off));
    if (step.error || !step.consumed) break;
    (void)parse_hello(step.frame.payload);
    (void)parse_proof(step.frame.payload);
    (void)parse_accept(step.frame.payload);
    off += step.consumed;
  }
  return 0;
}
