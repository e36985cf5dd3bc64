// Process identifiers: node identity + creation (incarnation) + serial.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include <msgpack.hpp>

namespace otpp {

// Node names are interned once per OS process so a pid is 16 bytes and compares as integers.
class node_atom {
 public:
  static constexpr std::size_t max_name_length = 255;
  static constexpr std::size_t max_atoms = 65536;  // distinct node names per OS process

  constexpr node_atom() = default;
  // Interns a node name. Names come from configuration and from the wire, so they are checked
  // (1..255 printable ASCII characters, no spaces) and the table is bounded: an invalid name, or
  // a new one past max_atoms, answers the "nonode" atom and valid() == false.
  static node_atom intern(std::string_view name);
  // The atom of a name already interned; no new entry (for untrusted input).
  static node_atom find(std::string_view name);
  static bool valid_name(std::string_view name) noexcept;
  std::string_view name() const;
  constexpr std::uint32_t index() const { return index_; }
  friend constexpr auto operator<=>(node_atom, node_atom) = default;

 private:
  explicit constexpr node_atom(std::uint32_t i) : index_(i) {}
  std::uint32_t index_ = 0;  // 0: "nonode"
};

class pid {
 public:
  constexpr pid() = default;
  constexpr pid(node_atom node, std::uint32_t creation, std::uint64_t serial)
      : node_(node), creation_(creation), serial_(serial) {}

  constexpr node_atom node() const { return node_; }
  constexpr std::uint32_t creation() const { return creation_; }
  constexpr std::uint64_t serial() const { return serial_; }
  constexpr bool valid() const { return serial_ != 0; }
  explicit constexpr operator bool() const { return valid(); }

  // "<api@127.0.0.1:4370.3.42>"
  std::string to_string() const;
  // The inverse of to_string (tools and logs): nullopt unless `text` is "<node.creation.serial>"
  // with a valid node name and serial != 0. Interns the node name (bounded, see node_atom).
  static std::optional<pid> parse(std::string_view text);
  friend std::ostream& operator<<(std::ostream& out, const pid& p) { return out << p.to_string(); }
  friend constexpr auto operator<=>(const pid&, const pid&) = default;

 private:
  node_atom node_;
  std::uint32_t creation_ = 0;
  std::uint64_t serial_ = 0;
};

// Monitor and timer references: unique per node incarnation.
struct monitor_ref {
  std::uint64_t id = 0;
  friend constexpr auto operator<=>(const monitor_ref&, const monitor_ref&) = default;
  MSGPACK_DEFINE(id)
};
struct timer_ref {
  std::uint64_t id = 0;
  friend constexpr auto operator<=>(const timer_ref&, const timer_ref&) = default;
  MSGPACK_DEFINE(id)
};

}  // namespace otpp

template <>
struct std::hash<otpp::pid> {
  std::size_t operator()(const otpp::pid& p) const noexcept {
    std::uint64_t h = p.serial() * 0x9E3779B97F4A7C15ull;
    h ^= (std::uint64_t{p.node().index()} << 32 | p.creation()) + 0x632BE59BD9B4E019ull + (h << 6) +
         (h >> 2);
    return static_cast<std::size_t>(h);
  }
};

// msgpack form of a pid: [node name, creation, serial].
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct convert<otpp::pid> {
    const msgpack::object& operator()(const msgpack::object& o, otpp::pid& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 3) throw msgpack::type_error();
      auto name = o.via.array.ptr[0].as<std::string_view>();
      // A pid names a node; a malformed or unbounded name is refused, not interned.
      if (name == "nonode") {
        v = otpp::pid(otpp::node_atom{}, o.via.array.ptr[1].as<std::uint32_t>(),
                      o.via.array.ptr[2].as<std::uint64_t>());
        return o;
      }
      auto atom = otpp::node_atom::intern(name);
      if (atom == otpp::node_atom{}) throw msgpack::type_error();
      v = otpp::pid(atom, o.via.array.ptr[1].as<std::uint32_t>(),
                    o.via.array.ptr[2].as<std::uint64_t>());
      return o;
    }
  };
  template <>
  struct pack<otpp::pid> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o, const otpp::pid& v) const {
      o.pack_array(3);
      o.pack(v.node().name());
      o.pack(v.creation());
      o.pack(v.serial());
      return o;
    }
  };
  template <>
  struct object_with_zone<otpp::pid> {
    void operator()(msgpack::object::with_zone& o, const otpp::pid& v) const {
      o.type = type::ARRAY;
      o.via.array.size = 3;
      o.via.array.ptr =
          static_cast<msgpack::object*>(o.zone.allocate_align(sizeof(msgpack::object) * 3));
      o.via.array.ptr[0] = msgpack::object(v.node().name(), o.zone);
      o.via.array.ptr[1] = msgpack::object(v.creation(), o.zone);
      o.via.array.ptr[2] = msgpack::object(v.serial(), o.zone);
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack
