// Fuzz target: the registry's frame parsers, every frame a peer sends on the registry's
// channels: remote spawn (requests, replies) and the replicas of global names and process
// groups (hellos, claims, grants, refusals, adds, removes, unregisters, joins, leaves,
// snapshots).
//
// Input byte 0 picks the channel (modulo 3); the rest is the frame. Parsing must answer a value
// or an error (spawn) or throw a std::exception (replicas), never crash or over-read. A frame
// that parses is encoded again the way the services encode it, and must parse back to the same
// value.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "replica_wire.hpp"
#include "spawn_wire.hpp"

using namespace otpp;
using namespace otpp::registry_detail;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}
// A round trip: what the encoders produce must parse (a throw here is a bug, not a bad frame).
template <class F>
void must(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
    std::abort();
  }
}

std::span<const std::uint8_t> bytes_of(const msgpack::sbuffer& b) {
  return {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()};
}

msgpack::sbuffer pack(const msgpack::object& o) {
  msgpack::sbuffer b;
  msgpack::pack(b, o);
  return b;
}

bool same(const msgpack::sbuffer& a, const msgpack::sbuffer& b) {
  return a.size() == b.size() && std::equal(a.data(), a.data() + a.size(), b.data());
}

// ---- channel spawn
void fuzz_spawn(std::span<const std::uint8_t> in) {
  spawn_wire::decode_error error;
  auto d = spawn_wire::decode(in, error);
  if (!d) {
    check(d.error().value() != 0);
    (void)spawn_wire::to_failure(error.code, error.why.reason);
    return;
  }
  if (d->kind == spawn_wire::op::request) {
    // The args are spliced into the frame as they are packed: the same bytes come back.
    auto args = pack(d->req.args);
    auto frame = spawn_wire::encode(d->req, std::span<const char>(args.data(), args.size()));
    spawn_wire::decode_error again_error;
    auto again = spawn_wire::decode(bytes_of(frame), again_error);
    check(again && again->kind == spawn_wire::op::request);
    const auto& a = d->req;
    const auto& b = again->req;
    check(a.id == b.id && a.caller_serial == b.caller_serial && a.behaviour == b.behaviour &&
          a.link == b.link && a.monitor_ref == b.monitor_ref && a.local_name == b.local_name &&
          a.global_name == b.global_name && a.global_epoch == b.global_epoch);
    check(same(args, pack(b.args)));
  } else {
    check(d->kind == spawn_wire::op::reply);
    auto frame = spawn_wire::encode(d->rep);
    spawn_wire::decode_error again_error;
    auto again = spawn_wire::decode(bytes_of(frame), again_error);
    check(again && again->kind == spawn_wire::op::reply);
    const auto& a = d->rep;
    const auto& b = again->rep;
    check(a.id == b.id && a.code == b.code && a.child_serial == b.child_serial &&
          a.reason == b.reason);
    auto f = spawn_wire::to_failure(a.code, a.reason);
    check(f.code.value() != 0);  // a reply of any status but ok is a failure
  }
}

// ---- channels global and groups
// The peer every frame comes from: the pids it announces as its own are of this incarnation.
const origin& sender() {
  static const origin o{node_atom::intern("peer@127.0.0.1:2"), 9};
  return o;
}

// Unpacks a frame the fuzzer encoded; it must parse.
msgpack::object_array reparse(msgpack::zone& zone, const msgpack::sbuffer& b, std::uint64_t kind) {
  auto f = unpack_frame(zone, bytes_of(b));
  check(frame_kind(f) == kind);
  return f;
}

void fuzz_global(std::uint64_t kind, const msgpack::object_array& f) {
  namespace w = global_wire;
  msgpack::zone z;
  const auto& from = sender();
  switch (kind) {
    case w::claim_kind: {
      auto a = w::parse_claim(f, from);
      must([&] {
        auto b = w::parse_claim(
            reparse(z, make_frame(kind, a.seq, a.name, a.holder, a.stamp, a.epoch), kind), from);
        check(a.seq == b.seq && a.name == b.name && a.holder == b.holder && a.stamp == b.stamp &&
              a.epoch == b.epoch);
        check(a.holder.node() == from.atom && a.holder.creation() == from.creation);
      });
      break;
    }
    case w::grant_kind: {
      auto a = w::parse_grant(f);
      must([&] {
        auto b = w::parse_grant(reparse(z, make_frame(kind, a.seq, a.name, a.holder), kind));
        check(a.seq == b.seq && a.name == b.name && a.holder == b.holder);
      });
      break;
    }
    case w::refuse_kind: {
      auto a = w::parse_refuse(f);
      must([&] {
        auto b = w::parse_refuse(
            reparse(z, make_frame(kind, a.seq, a.holder, static_cast<std::uint8_t>(a.why)), kind));
        check(a.seq == b.seq && a.holder == b.holder && a.why == b.why);
        check(a.why == w::refusal::taken || a.why == w::refusal::stale_epoch);
      });
      break;
    }
    case w::add_kind: {
      auto a = w::parse_add(f, from);
      must([&] {
        auto b = w::parse_add(
            reparse(z, make_frame(kind, a.name, a.holder, a.seq, a.stamp, a.epoch), kind), from);
        check(a.name == b.name && a.holder == b.holder && a.seq == b.seq && a.stamp == b.stamp &&
              a.epoch == b.epoch);
      });
      break;
    }
    case w::remove_kind:
    case w::unregister_kind: {
      auto parse = [&](const msgpack::object_array& x) {
        return kind == w::remove_kind ? w::parse_remove(x, from) : w::parse_unregister(x);
      };
      auto a = parse(f);
      must([&] {
        auto b = parse(reparse(z, make_frame(kind, a.name, a.holder, a.seq), kind));
        check(a.name == b.name && a.holder == b.holder && a.seq == b.seq);
      });
      break;
    }
    case w::snapshot_kind: {
      auto a = w::parse_snapshot(f, from);
      must([&] {
        // The service packs [[name, pid, seq, stamp, epoch], ...], [[name, epoch, pid], ...]:
        // so do tuples.
        std::vector<std::tuple<std::string, pid, std::uint64_t, std::int64_t, std::uint64_t>> list;
        for (const auto& r : a.entries)
          list.emplace_back(r.name, r.holder, r.seq, r.stamp, r.epoch);
        std::vector<std::tuple<std::string, std::uint64_t, pid>> fences;
        for (const auto& x : a.fences) fences.emplace_back(x.name, x.epoch, x.holder);
        auto b = w::parse_snapshot(reparse(z, make_frame(kind, list, fences), kind), from);
        check(a.entries.size() == b.entries.size() && a.fences.size() == b.fences.size());
        for (std::size_t i = 0; i < a.entries.size(); ++i) {
          const auto& x = a.entries[i];
          const auto& y = b.entries[i];
          check(x.name == y.name && x.holder == y.holder && x.seq == y.seq && x.stamp == y.stamp &&
                x.epoch == y.epoch);
        }
        for (std::size_t i = 0; i < a.fences.size(); ++i) {
          const auto& x = a.fences[i];
          const auto& y = b.fences[i];
          check(x.epoch > 0 && x.holder.valid());
          check(x.name == y.name && x.epoch == y.epoch && x.holder == y.holder);
        }
      });
      break;
    }
    default:
      break;  // the service drops an unknown kind
  }
}

void fuzz_groups(std::uint64_t kind, const msgpack::object_array& f) {
  namespace w = groups_wire;
  msgpack::zone z;
  const auto& from = sender();
  auto same_membership = [](const w::membership& a, const w::membership& b) {
    return a.group == b.group && a.member == b.member && a.joins == b.joins;
  };
  switch (kind) {
    case w::join_kind:
    case w::leave_kind: {
      auto a = w::parse_change(f, from);
      must([&] {
        check(a.joins > 0 && a.joins <= w::max_joins && !a.group.empty() &&
              a.group.size() <= max_key_length);
        auto b =
            w::parse_change(reparse(z, make_frame(kind, a.group, a.member, a.joins), kind), from);
        check(same_membership(a, b));
      });
      break;
    }
    case w::snapshot_kind: {
      auto a = w::parse_snapshot(f, from);
      must([&] {
        std::vector<std::tuple<std::string, pid, std::uint32_t>> list;
        for (const auto& m : a) list.emplace_back(m.group, m.member, m.joins);
        auto b = w::parse_snapshot(reparse(z, make_frame(kind, list), kind), from);
        check(a.size() == b.size());
        for (std::size_t i = 0; i < a.size(); ++i) check(same_membership(a[i], b[i]));
      });
      break;
    }
    default:
      break;
  }
}

void fuzz_replica(bool global, std::span<const std::uint8_t> in) {
  msgpack::zone zone;
  msgpack::object_array f{};
  std::uint64_t kind = 0;
  try {
    f = unpack_frame(zone, in);
    kind = frame_kind(f);
  } catch (const std::exception&) {
    return;
  }
  try {
    if (kind == hello_kind) {
      bool want = parse_hello(f);
      must([&] {
        msgpack::zone z;
        check(parse_hello(reparse(z, make_frame(hello_kind, want), hello_kind)) == want);
      });
    } else if (global) {
      fuzz_global(kind, f);
    } else {
      fuzz_groups(kind, f);
    }
  } catch (const std::exception&) {
    // A malformed frame: the service counts and drops it.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::span<const std::uint8_t> frame(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz_spawn(frame);
      break;
    case 1:
      fuzz_replica(true, frame);
      break;
    default:
      fuzz_replica(false, frame);
      break;
  }
  return 0;
}
