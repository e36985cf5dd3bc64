#include "replica_wire.hpp"

#include <stdexcept>

namespace otpp::registry_detail {

namespace {

// A snapshot's list of entries, each an array.
const msgpack::object_array& list_field(const msgpack::object_array& a, std::uint32_t i) {
  const auto& list = field(a, i);
  if (list.type != msgpack::type::ARRAY) throw msgpack::type_error();
  return list.via.array;
}
const msgpack::object_array& entry(const msgpack::object_array& list, std::uint32_t i) {
  const auto& e = list.ptr[i];
  if (e.type != msgpack::type::ARRAY) throw msgpack::type_error();
  return e.via.array;
}

// An optional trailing epoch (absent: 0, none); present, it must be an unsigned integer.
std::uint64_t epoch_field(const msgpack::object_array& a, std::uint32_t i) {
  return i < a.size ? a.ptr[i].as<std::uint64_t>() : 0;
}

}  // namespace

pid homed_pid_field(const msgpack::object_array& a, std::uint32_t i, const origin& from) {
  auto p = field(a, i).as<pid>();
  if (p.node() != from.atom || p.creation() != from.creation || !p.valid()) {
    throw std::invalid_argument("a pid not of the sender's incarnation");
  }
  return p;
}

msgpack::object_array unpack_frame(msgpack::zone& zone, std::span<const std::uint8_t> payload) {
  // Bounded like the cluster's own frames: no count may exceed the frame's size (msgpack
  // allocates from announced counts), nesting is shallow.
  const auto bound = payload.size();
  const msgpack::unpack_limit limit(bound, bound, bound, bound, bound, 8);
  std::size_t off = 0;
  const auto root = msgpack::unpack(zone, reinterpret_cast<const char*>(payload.data()),
                                    payload.size(), off, nullptr, nullptr, limit);
  if (off != payload.size()) throw std::invalid_argument("trailing bytes");
  if (root.type != msgpack::type::ARRAY || root.via.array.size == 0) {
    throw std::invalid_argument("not a non-empty array");
  }
  return root.via.array;
}

std::uint64_t frame_kind(const msgpack::object_array& f) {
  return field(f, 0).as<std::uint64_t>();
}

bool parse_hello(const msgpack::object_array& f) {
  return field(f, 1).as<bool>();
}

namespace global_wire {

claim parse_claim(const msgpack::object_array& f, const origin& from) {
  claim c;
  c.seq = field(f, 1).as<std::uint64_t>();
  c.name = key_field(f, 2);
  c.holder = homed_pid_field(f, 3, from);
  c.stamp = field(f, 4).as<std::int64_t>();
  c.epoch = epoch_field(f, 5);
  return c;
}

grant parse_grant(const msgpack::object_array& f) {
  grant g;
  g.seq = field(f, 1).as<std::uint64_t>();
  g.name = key_field(f, 2);
  g.holder = field(f, 3).as<pid>();
  return g;
}

refuse parse_refuse(const msgpack::object_array& f) {
  refuse r;
  r.seq = field(f, 1).as<std::uint64_t>();
  r.holder = field(f, 2).as<std::string>();
  if (f.size > 3) {
    auto why = f.ptr[3].as<std::uint8_t>();
    r.why = why == static_cast<std::uint8_t>(refusal::stale_epoch) ? refusal::stale_epoch
                                                                   : refusal::taken;
  }
  return r;
}

registration parse_add(const msgpack::object_array& f, const origin& from) {
  registration r;
  r.name = key_field(f, 1);
  r.holder = homed_pid_field(f, 2, from);
  r.seq = field(f, 3).as<std::uint64_t>();
  r.stamp = field(f, 4).as<std::int64_t>();
  r.epoch = epoch_field(f, 5);
  return r;
}

removal parse_remove(const msgpack::object_array& f, const origin& from) {
  removal r;
  r.name = key_field(f, 1);
  r.holder = homed_pid_field(f, 2, from);
  r.seq = field(f, 3).as<std::uint64_t>();
  return r;
}

snapshot parse_snapshot(const msgpack::object_array& f, const origin& from) {
  const auto& list = list_field(f, 1);
  snapshot out;
  out.entries.reserve(list.size);
  for (std::uint32_t i = 0; i < list.size; ++i) {
    const auto& e = entry(list, i);
    registration r;
    r.name = key_field(e, 0);
    r.holder = homed_pid_field(e, 1, from);
    r.seq = field(e, 2).as<std::uint64_t>();
    r.stamp = field(e, 3).as<std::int64_t>();
    r.epoch = epoch_field(e, 4);
    out.entries.push_back(std::move(r));
  }
  if (f.size > 2) {
    const auto& fences = list_field(f, 2);
    out.fences.reserve(fences.size);
    for (std::uint32_t i = 0; i < fences.size; ++i) {
      const auto& e = entry(fences, i);
      fence x;
      x.name = key_field(e, 0);
      x.epoch = field(e, 1).as<std::uint64_t>();
      if (x.epoch == 0) throw std::invalid_argument("a fence of epoch 0");
      x.holder = field(e, 2).as<pid>();
      if (!x.holder.valid()) throw std::invalid_argument("a fence without a valid pid");
      out.fences.push_back(std::move(x));
    }
  }
  return out;
}

removal parse_unregister(const msgpack::object_array& f) {
  removal r;
  r.name = key_field(f, 1);
  r.holder = field(f, 2).as<pid>();
  r.seq = field(f, 3).as<std::uint64_t>();
  return r;
}

}  // namespace global_wire

namespace groups_wire {

namespace {

// A count in a frame: at least one join, at most max_joins.
std::uint32_t joins_field(const msgpack::object_array& a, std::uint32_t i) {
  auto n = field(a, i).as<std::uint32_t>();
  if (n == 0) throw std::invalid_argument("zero joins");
  if (n > max_joins) throw std::invalid_argument("joins over the limit");
  return n;
}
membership parse_membership(const msgpack::object_array& a, std::uint32_t first,
                            const origin& from) {
  membership m;
  m.group = key_field(a, first);
  m.member = homed_pid_field(a, first + 1, from);
  m.joins = joins_field(a, first + 2);
  return m;
}

}  // namespace

membership parse_change(const msgpack::object_array& f, const origin& from) {
  return parse_membership(f, 1, from);
}

std::vector<membership> parse_snapshot(const msgpack::object_array& f, const origin& from) {
  const auto& list = list_field(f, 1);
  std::vector<membership> out;
  out.reserve(list.size);
  for (std::uint32_t i = 0; i < list.size; ++i)
    out.push_back(parse_membership(entry(list, i), 0, from));
  return out;
}

}  // namespace groups_wire

}  // namespace otpp::registry_detail
