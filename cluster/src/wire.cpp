// Parsing of the cluster's frames: everything a peer sends goes through here first.
#include "wire.hpp"

namespace otpp::cluster::wire {

status to_status(const std::error_code& ec) noexcept {
  if (!ec) return status::ok;
  if (ec.category() != otpp::error_category()) return status::foreign_error;
  switch (static_cast<errc>(ec.value())) {
    case errc::timeout:
      return status::timeout;
    case errc::noproc:
      return status::noproc;
    case errc::nodedown:
      return status::nodedown;
    case errc::bad_message:
      return status::bad_message;
    case errc::exit:
      return status::exit;
    case errc::unknown_behaviour:
      return status::unknown_behaviour;
    case errc::not_authorised:
      return status::not_authorised;
    case errc::already_registered:
      return status::already_registered;
    case errc::mailbox_full:
      return status::mailbox_full;
    case errc::node_stopped:
      return status::node_stopped;
    case errc::no_reply:
      return status::no_reply;
    case errc::not_serializable:
      return status::not_serializable;
    case errc::calling_self:
      return status::calling_self;
    case errc::init_failed:
      return status::init_failed;
    case errc::invalid_argument:
      return status::invalid_argument;
    case errc::overloaded:
      return status::overloaded;
    case errc::frame_too_large:
      return status::frame_too_large;
    case errc::stale_epoch:
      return status::stale_epoch;
    case errc::not_found:
      return status::not_found;
    case errc::running:
      return status::running;
    case errc::restarting:
      return status::restarting;
    case errc::reached_max_restart_intensity:
      return status::reached_max_restart_intensity;
    case errc::would_block:
      return status::would_block;
    case errc::not_started:
      return status::not_started;
    case errc::circuit_open:
      return status::circuit_open;
    case errc::bulkhead_full:
      return status::bulkhead_full;
    case errc::rate_limited:
      return status::rate_limited;
    case errc::domain_error:
      return status::domain_error;
    case errc::operation_canceled:
      return status::operation_canceled;
    default:
      return status::other;
  }
}

errc to_errc(status s) noexcept {
  switch (s) {
    case status::ok:
      return errc::ok;
    case status::timeout:
      return errc::timeout;
    case status::noproc:
      return errc::noproc;
    case status::nodedown:
      return errc::nodedown;
    case status::bad_message:
      return errc::bad_message;
    case status::exit:
      return errc::exit;
    case status::unknown_behaviour:
      return errc::unknown_behaviour;
    case status::not_authorised:
      return errc::not_authorised;
    case status::already_registered:
      return errc::already_registered;
    case status::mailbox_full:
      return errc::mailbox_full;
    case status::node_stopped:
      return errc::node_stopped;
    case status::no_reply:
      return errc::no_reply;
    case status::not_serializable:
      return errc::not_serializable;
    case status::calling_self:
      return errc::calling_self;
    case status::init_failed:
      return errc::init_failed;
    case status::invalid_argument:
      return errc::invalid_argument;
    case status::overloaded:
      return errc::overloaded;
    case status::frame_too_large:
      return errc::frame_too_large;
    case status::stale_epoch:
      return errc::stale_epoch;
    case status::not_found:
      return errc::not_found;
    case status::running:
      return errc::running;
    case status::restarting:
      return errc::restarting;
    case status::reached_max_restart_intensity:
      return errc::reached_max_restart_intensity;
    case status::would_block:
      return errc::would_block;
    case status::not_started:
      return errc::not_started;
    case status::circuit_open:
      return errc::circuit_open;
    case status::bulkhead_full:
      return errc::bulkhead_full;
    case status::rate_limited:
      return errc::rate_limited;
    case status::domain_error:
      return errc::domain_error;
    case status::operation_canceled:
      return errc::operation_canceled;
    case status::other:
    case status::foreign_error:
      break;
  }
  return errc::exit;  // unknown: the callee failed in a way this node cannot name
}

result<decoded> decode(const std::uint8_t* data, std::size_t size) {
  decoded d;
  d.zone = std::make_unique<msgpack::zone>(size * 2 + 256);
  // msgpack allocates an array's or map's elements from its announced count before reading
  // them: a 5-byte frame announcing 2^32 elements would ask for 100 GB. Every element takes at
  // least one byte of the frame, so no count may exceed the frame's size; nesting is bounded
  // too (the parser recurses).
  const auto bound = static_cast<std::size_t>(size);
  const msgpack::unpack_limit limit(bound, bound, bound, bound, bound, 64);
  try {
    std::size_t off = 0;
    d.root = msgpack::unpack(*d.zone, reinterpret_cast<const char*>(data), size, off, nullptr,
                             nullptr, limit);
    if (off != size) return failure(errc::malformed_frame, "trailing bytes after the frame");
  } catch (const std::exception& e) {
    return failure(errc::malformed_frame, e.what());
  }
  if (d.root.type != msgpack::type::ARRAY) {
    return failure(errc::malformed_frame, "a frame is a msgpack array");
  }
  return d;
}

namespace {

// Field i of an array with at least n fields (checked once by the caller).
const msgpack::object& at(const msgpack::object& a, std::uint32_t i) {
  return a.via.array.ptr[i];
}
bool has(const msgpack::object& a, std::uint32_t n) {
  return a.type == msgpack::type::ARRAY && a.via.array.size >= n;
}
std::string_view str(const msgpack::object& o) {
  if (o.type != msgpack::type::STR) throw msgpack::type_error();
  return {o.via.str.ptr, o.via.str.size};
}

// Runs a parser; a msgpack type error becomes malformed_frame.
template <class T, class F>
result<T> guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return failure(errc::malformed_frame, std::string(what) + ": " + e.what());
  }
}

}  // namespace

namespace {

// Limits for anything unpacked from `size` bytes: no count can exceed the bytes that would
// hold its elements (msgpack allocates from the announced count), nesting bounded.
msgpack::unpack_limit limit_for(std::size_t size) {
  return msgpack::unpack_limit(size, size, size, size, size, 64);
}

// The header of a send/call frame, unpacked into this thread's scratch zone (reused: no
// allocation once warm).
result<message_frame> parse_header(const std::uint8_t* data, std::size_t size, bool call) {
  thread_local msgpack::zone zone(512);
  zone.clear();
  const char* what = call ? "call frame" : "send frame";
  try {
    std::size_t off = 0;
    auto h = msgpack::unpack(zone, reinterpret_cast<const char*>(data), size, off, nullptr, nullptr,
                             limit_for(size));
    if (!has(h, 5))
      return failure(errc::malformed_frame, std::string(what) + ": 5 header fields expected");
    if (off >= size) return failure(errc::malformed_frame, std::string(what) + ": no body");
    message_frame m;
    m.to_serial = at(h, 0).as<std::uint64_t>();
    m.to_creation = at(h, 1).as<std::uint32_t>();
    m.from_serial = at(h, 2).as<std::uint64_t>();
    if (call) {
      m.call_id = at(h, 3).as<std::uint64_t>();
    } else {
      m.info = at(h, 3).as<bool>();
    }
    m.tag = str(at(h, 4));
    m.body = data + off;
    m.body_size = size - off;
    // The body must be exactly one well-formed object: checked here without allocating (the
    // target decodes it later), so a malformed body closes the connection like any other
    // malformed frame.
    msgpack::null_visitor check;
    std::size_t body_off = 0;
    if (!msgpack::parse(reinterpret_cast<const char*>(m.body), m.body_size, body_off, check) ||
        body_off != m.body_size) {
      return failure(errc::malformed_frame, std::string(what) + ": malformed body");
    }
    return m;
  } catch (const std::exception& e) {
    return failure(errc::malformed_frame, std::string(what) + ": " + e.what());
  }
}

}  // namespace

result<message_frame> parse_send(const std::uint8_t* data, std::size_t size) {
  return parse_header(data, size, false);
}
result<message_frame> parse_call(const std::uint8_t* data, std::size_t size) {
  return parse_header(data, size, true);
}

result<msgpack::object> decode_body(msgpack::zone& zone, const std::uint8_t* data,
                                    std::size_t size) {
  try {
    std::size_t off = 0;
    auto o = msgpack::unpack(zone, reinterpret_cast<const char*>(data), size, off, nullptr, nullptr,
                             limit_for(size));
    if (off != size) return failure(errc::malformed_frame, "trailing bytes after the body");
    return o;
  } catch (const std::exception& e) {
    return failure(errc::malformed_frame, std::string("body: ") + e.what());
  }
}

result<reply_frame> parse_reply(const msgpack::object& a) {
  return guarded<reply_frame>("reply frame", [&]() -> result<reply_frame> {
    if (!has(a, 3)) return failure(errc::malformed_frame, "reply frame: 3 fields expected");
    reply_frame r;
    r.call_id = at(a, 0).as<std::uint64_t>();
    r.code = static_cast<status>(at(a, 1).as<std::uint8_t>());
    if (r.code == status::ok) {
      r.body = &at(a, 2);
    } else if (r.code == status::foreign_error) {
      if (!has(a, 5)) return failure(errc::malformed_frame, "reply frame: 5 fields expected");
      r.reason = at(a, 2).as<std::string>();
      r.category = at(a, 3).as<std::string>();
      r.value = at(a, 4).as<int>();
    } else if (r.code == status::domain_error && has(a, 6)) {
      r.reason = at(a, 2).as<std::string>();
      r.domain_code = at(a, 3).as<std::string>();
      r.domain_message = at(a, 4).as<std::string>();
      r.details = at(a, 5).as<std::string>();  // bin
    } else {
      r.reason = at(a, 2).as<std::string>();
    }
    return r;
  });
}

result<signal_frame> parse_signal(const msgpack::object& a) {
  return guarded<signal_frame>("signal frame", [&]() -> result<signal_frame> {
    if (!has(a, 7)) return failure(errc::malformed_frame, "signal frame: 7 fields expected");
    signal_frame s;
    auto code = at(a, 0).as<std::uint8_t>();
    if (code > static_cast<std::uint8_t>(signal_code::stop)) {
      return failure(errc::malformed_frame, "signal frame: unknown signal " + std::to_string(code));
    }
    s.code = static_cast<signal_code>(code);
    s.to_serial = at(a, 1).as<std::uint64_t>();
    s.to_creation = at(a, 2).as<std::uint32_t>();
    s.from_serial = at(a, 3).as<std::uint64_t>();
    s.reason = at(a, 4).as<std::string>();
    s.ref = at(a, 5).as<std::uint64_t>();
    s.from_link = at(a, 6).as<bool>();
    return s;
  });
}

result<down_frame> parse_down(const msgpack::object& a) {
  return guarded<down_frame>("down frame", [&]() -> result<down_frame> {
    if (!has(a, 5)) return failure(errc::malformed_frame, "down frame: 5 fields expected");
    down_frame d;
    d.to_serial = at(a, 0).as<std::uint64_t>();
    d.to_creation = at(a, 1).as<std::uint32_t>();
    d.ref = at(a, 2).as<std::uint64_t>();
    d.who_serial = at(a, 3).as<std::uint64_t>();
    d.reason = at(a, 4).as<std::string>();
    return d;
  });
}

result<state_frame> parse_hello(const msgpack::object& a) {
  return guarded<state_frame>("hello frame", [&]() -> result<state_frame> {
    if (!has(a, 3)) return failure(errc::malformed_frame, "hello frame: 3 fields expected");
    auto version = at(a, 0).as<std::uint32_t>();
    if (version != protocol_version) {
      return failure(errc::version_mismatch, "cluster protocol " + std::to_string(version) +
                                                 ", this node speaks " +
                                                 std::to_string(protocol_version));
    }
    state_frame s;
    s.hidden = at(a, 1).as<bool>();
    s.state = at(a, 2).as<std::vector<gossip_entry>>();
    return s;
  });
}

result<state_frame> parse_gossip(const msgpack::object& a) {
  return guarded<state_frame>("gossip frame", [&]() -> result<state_frame> {
    if (!has(a, 1)) return failure(errc::malformed_frame, "gossip frame: 1 field expected");
    state_frame s;
    s.state = at(a, 0).as<std::vector<gossip_entry>>();
    return s;
  });
}

result<std::string> parse_blocked(const msgpack::object& a) {
  return guarded<std::string>("blocked frame", [&]() -> result<std::string> {
    if (!has(a, 1)) return failure(errc::malformed_frame, "blocked frame: 1 field expected");
    return at(a, 0).as<std::string>();
  });
}

}  // namespace otpp::cluster::wire
