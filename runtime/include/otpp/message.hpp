// Messages: a C++ struct with a stable tag and a msgpack mapping.
//
//   struct increment {
//     static constexpr std::string_view tag = "increment";
//     using reply = int;              // only for messages used with call()
//     int by = 1;
//     MSGPACK_DEFINE_MAP(by)         // no trailing ';' (-Wpedantic)
//   };
//
// Local sends move the object into the mailbox (no serialization); the msgpack mapping is used
// only when a message crosses the wire or arrives in dynamic form (a map with a "type" field).
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <msgpack.hpp>

#include "otpp/pid.hpp"

// MSGPACK_DEFINE_MAP() needs at least one field; a message without fields uses this instead
// (it packs as an empty map and accepts any map, so the dynamic form {"type": tag} works).
#define OTPP_NO_FIELDS()                                           \
  template <class Packer>                                          \
  void msgpack_pack(Packer& out) const {                           \
    out.pack_map(0);                                               \
  }                                                                \
  void msgpack_unpack(const msgpack::object& o) {                  \
    if (o.type != msgpack::type::MAP) throw msgpack::type_error(); \
  }                                                                \
  template <class Object>                                          \
  void msgpack_object(Object* o, msgpack::zone&) const {           \
    o->type = msgpack::type::MAP;                                  \
    o->via.map.size = 0;                                           \
    o->via.map.ptr = nullptr;                                      \
  }

namespace otpp {

template <class M>
concept message = requires {
  { M::tag } -> std::convertible_to<std::string_view>;
}
&&std::move_constructible<M>;

// Specialised true for the runtime's own messages (see down, exit_message below).
template <class M>
struct is_system_message : std::false_type {};

template <class M>
concept call_message = message<M> && requires {
  typename M::reply;
};

// Why a process ended. Erlang's reasons are terms; ours are text with well-known values.
class exit_reason {
 public:
  exit_reason() : text_("normal") {}
  explicit exit_reason(std::string text) : text_(std::move(text)) {}
  static exit_reason normal() { return exit_reason("normal"); }
  static exit_reason shutdown() { return exit_reason("shutdown"); }
  static exit_reason kill() { return exit_reason("kill"); }  // untrappable when sent by exit()
  static exit_reason killed() { return exit_reason("killed"); }
  static exit_reason noproc() { return exit_reason("noproc"); }
  static exit_reason noconnection() { return exit_reason("noconnection"); }

  const std::string& text() const { return text_; }
  bool is_normal() const { return text_ == "normal"; }
  bool is_shutdown() const { return text_ == "shutdown" || text_.starts_with("shutdown:"); }
  bool is_kill() const { return text_ == "kill"; }
  // normal and shutdown are not failures: they do not kill linked processes that trap nothing
  // special, and transient children are not restarted for them (OTP semantics).
  bool is_failure() const { return !is_normal() && !is_shutdown(); }
  friend bool operator==(const exit_reason& a, const exit_reason& b) = default;
  friend std::ostream& operator<<(std::ostream& out, const exit_reason& r) {
    return out << r.text_;
  }
  MSGPACK_DEFINE(text_)

 private:
  std::string text_;
};

// Delivered to handle_info when a monitored process ends.
struct down {
  static constexpr std::string_view tag = "DOWN";
  monitor_ref ref;
  otpp::pid who;
  exit_reason reason;
  MSGPACK_DEFINE_MAP(ref, who, reason)
};

// Delivered to handle_info of a process that traps exits, for each exit signal it receives.
struct exit_message {
  static constexpr std::string_view tag = "EXIT";
  otpp::pid from;
  exit_reason reason;
  MSGPACK_DEFINE_MAP(from, reason)
};

// Delivered to handle_info when a gen_server's idle timeout elapses with no message.
struct idle_timeout {
  static constexpr std::string_view tag = "idle_timeout";
  OTPP_NO_FIELDS()
};

// System messages come only from the runtime: a dynamic message (a tool, another node's
// payload) with one of these tags never reaches their handlers, so it cannot forge an exit.
template <>
struct is_system_message<down> : std::true_type {};
template <>
struct is_system_message<exit_message> : std::true_type {};
template <>
struct is_system_message<idle_timeout> : std::true_type {};

// Types that can cross the wire (or the dynamic path): those with a msgpack mapping. msgpack's
// own adaptors cannot be detected without instantiating them (a hard error), so this trait
// knows the common shapes; a type with its own msgpack adaptor specialises wire_type.
template <class T>
struct wire_type : std::false_type {};

namespace detail {
template <class T>
concept has_msgpack_members = requires(T& t, const msgpack::object& o) {
  t.msgpack_unpack(o);
};
template <class T>
struct is_wire
    : std::bool_constant<std::is_arithmetic_v<T> || has_msgpack_members<T> || wire_type<T>::value> {
};
template <>
struct is_wire<std::string> : std::true_type {};
template <>
struct is_wire<pid> : std::true_type {};
template <class T, class A>
struct is_wire<std::vector<T, A>> : is_wire<T> {};
template <class K, class V, class C, class A>
struct is_wire<std::map<K, V, C, A>> : std::bool_constant<is_wire<K>::value && is_wire<V>::value> {
};
template <class K, class V, class H, class E, class A>
struct is_wire<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<is_wire<K>::value && is_wire<V>::value> {};
template <class T>
struct is_wire<std::optional<T>> : is_wire<T> {};
template <class A, class B>
struct is_wire<std::pair<A, B>> : std::bool_constant<is_wire<A>::value && is_wire<B>::value> {};
template <class... T>
struct is_wire<std::tuple<T...>> : std::bool_constant<(is_wire<T>::value && ...)> {};
template <class... T>
struct is_wire<std::variant<T...>> : std::bool_constant<(is_wire<T>::value && ...)> {};
template <>
struct is_wire<std::monostate> : std::true_type {};
}  // namespace detail

template <class T>
concept wire_encodable = detail::is_wire<std::remove_cv_t<T>>::value;

// How a message type is encoded, found and decoded. One static instance per type: its
// address is the type's identity on the local path (no string compare per message).
struct message_type {
  std::string_view tag;
  // nullptr: the type has no msgpack mapping (it never leaves the node).
  void (*pack)(msgpack::packer<msgpack::sbuffer>&, const void* value);
  bool system = false;  // made only by the runtime (down, EXIT, idle_timeout): never decoded
};

template <message M>
const message_type* type_of() {
  static const message_type type{
      M::tag,
      [] {
        void (*pack)(msgpack::packer<msgpack::sbuffer>&, const void*) = nullptr;
        if constexpr (wire_encodable<M>) {
          pack = [](msgpack::packer<msgpack::sbuffer>& out, const void* value) {
            out.pack(*static_cast<const M*>(value));
          };
        }
        return pack;
      }(),
      is_system_message<M>::value};
  return &type;
}

// msgpack encoder of any value (reply types need no tag).
struct value_codec {
  void (*pack)(msgpack::packer<msgpack::sbuffer>&, const void* value);
};

// nullptr for a type without a msgpack mapping: its values never leave the node.
template <class T>
const value_codec* codec_of() {
  if constexpr (wire_encodable<T>) {
    static const value_codec codec{[](msgpack::packer<msgpack::sbuffer>& out, const void* value) {
      out.pack(*static_cast<const T*>(value));
    }};
    return &codec;
  } else {
    return nullptr;
  }
}

}  // namespace otpp

// msgpack form of std::variant (msgpack-c 4.1 has none): [alternative index, value];
// std::monostate packs as nil.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<std::monostate> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o, std::monostate) const {
      return o.pack_nil();
    }
  };
  template <>
  struct convert<std::monostate> {
    const msgpack::object& operator()(const msgpack::object& o, std::monostate&) const {
      if (o.type != msgpack::type::NIL) throw msgpack::type_error();
      return o;
    }
  };
  template <class... T>
  struct pack<std::variant<T...>> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o,
                                        const std::variant<T...>& v) const {
      o.pack_array(2);
      o.pack(static_cast<std::uint32_t>(v.index()));
      std::visit([&o](const auto& alt) { o.pack(alt); }, v);
      return o;
    }
  };
  template <class... T>
  struct convert<std::variant<T...>> {
    // One converter per alternative (by index: alternatives may repeat a type).
    template <std::size_t... I>
    static void convert_at(std::index_sequence<I...>, std::size_t index, const msgpack::object& x,
                           std::variant<T...>& out) {
      using converter = void (*)(const msgpack::object&, std::variant<T...>&);
      static constexpr converter table[] = {[](const msgpack::object& in, std::variant<T...>& v) {
        v.template emplace<I>(in.as<std::variant_alternative_t<I, std::variant<T...>>>());
      }...};
      table[index](x, out);
    }
    const msgpack::object& operator()(const msgpack::object& o, std::variant<T...>& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      const auto index = o.via.array.ptr[0].as<std::uint32_t>();
      if (index >= sizeof...(T)) throw msgpack::type_error();
      convert_at(std::index_sequence_for<T...>{}, index, o.via.array.ptr[1], v);
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack
