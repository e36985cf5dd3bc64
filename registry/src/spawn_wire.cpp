#include "spawn_wire.hpp"

#include <exception>

namespace otpp::spawn_wire {

namespace {

const msgpack::object& at(const msgpack::object& a, std::uint32_t i) {
  return a.via.array.ptr[i];
}
std::string text(const msgpack::object& o) {
  if (o.type != msgpack::type::STR) throw msgpack::type_error();
  return {o.via.str.ptr, o.via.str.size};
}

}  // namespace

result<decoded> decode(std::span<const std::uint8_t> bytes, decode_error& error) {
  decoded d;
  try {
    // msgpack allocates an array's elements from its announced count: no count may exceed the
    // frame's size (each element takes a byte at least); nesting is bounded (the parser
    // recurses).
    const auto bound = bytes.size();
    const msgpack::unpack_limit limit(bound, bound, bound, bound, bound, 64);
    std::size_t off = 0;
    d.frame = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), off,
                              nullptr, nullptr, limit);
    if (off != bytes.size()) throw std::runtime_error("trailing bytes after the frame");
  } catch (const std::exception& e) {
    error.why = failure(errc::malformed_frame, std::string("spawn frame: ") + e.what());
    return error.why;
  }
  const auto& root = d.frame.get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 3) {
    error.why = failure(errc::malformed_frame, "spawn frame: [version, op, id, ...] expected");
    return error.why;
  }
  try {
    // The id first: with it, even a request this node cannot read is answered.
    error.id = at(root, 2).as<std::uint64_t>();
    error.id_known = true;
    const auto v = at(root, 0).as<std::uint32_t>();
    const auto o = at(root, 1).as<std::uint32_t>();
    if (v != version) {
      error.code = status::unsupported_version;
      error.why = failure(errc::version_mismatch, "spawn frame version " + std::to_string(v) +
                                                      " (this node speaks " +
                                                      std::to_string(version) + ")");
      return error.why;
    }
    const auto n = root.via.array.size;
    if (o == static_cast<std::uint32_t>(op::request)) {
      if (n < 9) throw std::runtime_error("a request has 9 fields");
      d.kind = op::request;
      d.req.id = error.id;
      d.req.caller_serial = at(root, 3).as<std::uint64_t>();
      d.req.behaviour = text(at(root, 4));
      d.req.args = at(root, 5);
      d.req.link = at(root, 6).as<bool>();
      d.req.monitor_ref = at(root, 7).as<std::uint64_t>();
      d.req.local_name = text(at(root, 8));
      if (n > 9) d.req.global_name = text(at(root, 9));
      if (n > 10) d.req.global_epoch = at(root, 10).as<std::uint64_t>();
    } else if (o == static_cast<std::uint32_t>(op::reply)) {
      // A reply is never answered: a bad one is only logged.
      error.id_known = false;
      if (n < 6) throw std::runtime_error("a reply has 6 fields");
      d.kind = op::reply;
      d.rep.id = error.id;
      d.rep.code = static_cast<status>(at(root, 3).as<std::uint8_t>());
      d.rep.child_serial = at(root, 4).as<std::uint64_t>();
      d.rep.reason = text(at(root, 5));
    } else {
      throw std::runtime_error("unknown op " + std::to_string(o));
    }
  } catch (const std::exception& e) {
    error.why = failure(errc::malformed_frame, std::string("spawn frame: ") + e.what());
    return error.why;
  }
  return d;
}

msgpack::sbuffer encode(const request& r, std::span<const char> packed_args) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(11);
  pk.pack(version);
  pk.pack(static_cast<std::uint8_t>(op::request));
  pk.pack(r.id);
  pk.pack(r.caller_serial);
  pk.pack(r.behaviour);
  b.write(packed_args.data(), packed_args.size());  // already msgpack: spliced in as is
  pk.pack(r.link);
  pk.pack(r.monitor_ref);
  pk.pack(r.local_name);
  pk.pack(r.global_name);
  pk.pack(r.global_epoch);
  return b;
}

msgpack::sbuffer encode(const reply& r) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(6);
  pk.pack(version);
  pk.pack(static_cast<std::uint8_t>(op::reply));
  pk.pack(r.id);
  pk.pack(static_cast<std::uint8_t>(r.code));
  pk.pack(r.child_serial);
  pk.pack(r.reason);
  return b;
}

status to_status(const std::error_code& e) {
  if (e.category() != error_category()) return status::other;
  switch (static_cast<errc>(e.value())) {
    case errc::ok:
      return status::ok;
    case errc::unknown_behaviour:
      return status::unknown_behaviour;
    case errc::bad_message:
      return status::bad_args;
    case errc::init_failed:
      return status::init_failed;
    case errc::already_registered:
      return status::already_registered;
    case errc::not_authorised:
      return status::not_authorised;
    case errc::node_stopped:
      return status::node_stopped;
    case errc::malformed_frame:
      return status::malformed_request;
    case errc::nodedown:
      return status::nodedown;
    case errc::invalid_argument:
      return status::invalid_argument;
    case errc::version_mismatch:
      return status::unsupported_version;
    case errc::timeout:
      return status::timeout;
    case errc::stale_epoch:
      return status::stale_epoch;
    default:
      return status::other;
  }
}

failure to_failure(status s, std::string reason) {
  switch (s) {
    case status::ok:
      break;
    case status::unknown_behaviour:
      return failure(errc::unknown_behaviour, std::move(reason));
    case status::bad_args:
      return failure(errc::bad_message, std::move(reason));
    case status::init_failed:
      return failure(errc::init_failed, std::move(reason));
    case status::already_registered:
      return failure(errc::already_registered, std::move(reason));
    case status::not_authorised:
      return failure(errc::not_authorised, std::move(reason));
    case status::node_stopped:
      return failure(errc::node_stopped, std::move(reason));
    case status::malformed_request:
      return failure(errc::bad_message, "the target could not read the request: " + reason);
    case status::nodedown:
      return failure(errc::nodedown, std::move(reason));
    case status::invalid_argument:
      return failure(errc::invalid_argument, std::move(reason));
    case status::unsupported_version:
      return failure(errc::version_mismatch, std::move(reason));
    case status::timeout:
      return failure(errc::timeout, std::move(reason));
    case status::stale_epoch:
      return failure(errc::stale_epoch, std::move(reason));
    case status::other:
      break;
  }
  // Unknown to this version, or a failure the target could not name: the spawn did not happen.
  return failure(errc::init_failed, reason.empty() ? "spawn failed on the target" : reason);
}

}  // namespace otpp::spawn_wire
