// Fuzz target: the cluster's frame parsers (every frame a peer sends), and the membership
// merge of whatever gossip state parses.
//
// Input byte 0 picks the frame kind (modulo the known kinds); the rest is the frame payload.
// Parsing must answer a value or malformed_frame, never crash or over-read; a state that
// parses is merged into a membership, which must keep its invariants.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "wire.hpp"

using namespace otpp::cluster;

namespace {
struct null_io final : membership::io {
  void send_gossip(const std::string&, const std::vector<gossip_entry>&) override {}
  void disconnect(const std::string&, std::uint32_t, otpp::errc) override {}
  void event(const node_event&) override {}
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const std::uint8_t kinds[] = {wire::kind::hello,  wire::kind::gossip, wire::kind::blocked,
                                       wire::kind::send,   wire::kind::call,   wire::kind::reply,
                                       wire::kind::signal, wire::kind::down};
  const std::uint8_t kind = kinds[data[0] % sizeof kinds];
  if (kind == wire::kind::send || kind == wire::kind::call) {
    // Header without allocation; a body that passed the check must decode.
    auto m = kind == wire::kind::send ? wire::parse_send(data + 1, size - 1)
                                      : wire::parse_call(data + 1, size - 1);
    if (!m) return 0;
    if (!m->body || m->body_size == 0) std::abort();
    msgpack::zone zone;
    auto body = wire::decode_body(zone, m->body, m->body_size);
    (void)body;  // may still refuse a count over the limit; never crash
    return 0;
  }
  auto d = wire::decode(data + 1, size - 1);
  if (!d) return 0;
  switch (kind) {
    case wire::kind::reply: {
      auto r = wire::parse_reply(d->root);
      if (r && r->code == wire::status::ok && !r->body) std::abort();
      (void)wire::to_errc(r ? r->code : wire::status::other);
      break;
    }
    case wire::kind::signal:
      (void)wire::parse_signal(d->root);
      break;
    case wire::kind::down:
      (void)wire::parse_down(d->root);
      break;
    case wire::kind::blocked:
      (void)wire::parse_blocked(d->root);
      break;
    default: {
      auto st =
          kind == wire::kind::hello ? wire::parse_hello(d->root) : wire::parse_gossip(d->root);
      if (!st) break;
      null_io io;
      auto t = otpp::time_point{} + std::chrono::hours(1);
      membership m("self@127.0.0.1:1", 7, membership_options{}, io, 1, t);
      m.peer_connected("peer@127.0.0.1:2", 9, t);
      m.gossip_received("peer@127.0.0.1:2", st->state, t);
      m.tick(t + std::chrono::seconds(5));
      // Self is always listed first, never twice.
      auto ms = m.members();
      if (ms.empty() || !ms.front().self) std::abort();
      for (std::size_t i = 1; i < ms.size(); ++i) {
        if (ms[i].self || ms[i].id == "self@127.0.0.1:1") std::abort();
      }
      break;
    }
  }
  return 0;
}
