#include "otpp/transport/handshake.hpp"

#include <msgpack.hpp>

#include <cstring>

#include "otpp/transport/frame.hpp"

namespace otpp::transport {

namespace {
constexpr std::string_view proof_i_label = "otpp/1 initiator";
constexpr std::string_view proof_a_label = "otpp/1 acceptor";
constexpr std::string_view key_ia_label = "otpp/1 key I->A";
constexpr std::string_view key_ai_label = "otpp/1 key A->I";

// Packs into a msgpack::sbuffer, then copies out (vector::insert from the packer trips g++ 12
// -O3 -Wstringop-overflow false positives).
std::vector<std::uint8_t> to_vector(const msgpack::sbuffer& buf) {
  const auto* b = reinterpret_cast<const std::uint8_t*>(buf.data());
  return std::vector<std::uint8_t>(b, b + buf.size());
}

// Strict limits for untrusted handshake input: small arrays, no maps, no ext, shallow.
msgpack::unpack_limit handshake_limits() {
  return {8, 0, 512, 64, 0, 2};
}

// Unpacks exactly one msgpack array (no trailing bytes); false, with the reason in `why`,
// on any problem.
bool unpack_array(bytes_view payload, msgpack::object_handle& handle, std::string& why) {
  try {
    std::size_t offset = 0;
    handle = msgpack::unpack(reinterpret_cast<const char*>(payload.data()), payload.size(), offset,
                             nullptr, nullptr, handshake_limits());
    if (offset != payload.size()) {
      why = "trailing bytes";
      return false;
    }
    if (handle.get().type != msgpack::type::ARRAY) {
      why = "not an array";
      return false;
    }
    return true;
  } catch (const std::exception& e) {
    why = e.what();
    return false;
  }
}

bool get_u32(const msgpack::object& o, std::uint32_t& v) {
  if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > 0xffffffffu) return false;
  v = static_cast<std::uint32_t>(o.via.u64);
  return true;
}

template <std::size_t N>
bool get_bin(const msgpack::object& o, std::array<std::uint8_t, N>& out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != N) return false;
  std::memcpy(out.data(), o.via.bin.ptr, N);
  return true;
}

failure malformed(std::string_view what, std::string_view why = {}) {
  std::string reason = "malformed ";
  reason += what;
  if (!why.empty()) {
    reason += ": ";
    reason += why;
  }
  return failure(errc::handshake_failed, std::move(reason));
}
}  // namespace

bool valid_node_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > max_node_id_size) return false;
  for (char c : id)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

std::vector<std::uint8_t> encode_hello(const hello_message& m) {
  msgpack::sbuffer out(128);
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(4);
  pk.pack_uint32(m.version);
  pk.pack_str(static_cast<std::uint32_t>(m.node_id.size()));
  pk.pack_str_body(m.node_id.data(), static_cast<std::uint32_t>(m.node_id.size()));
  pk.pack_uint32(m.creation);
  pk.pack_bin(nonce_size);
  pk.pack_bin_body(reinterpret_cast<const char*>(m.challenge.data()), nonce_size);
  return to_vector(out);
}

std::vector<std::uint8_t> encode_proof(const digest& proof) {
  msgpack::sbuffer out(128);
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(1);
  pk.pack_bin(digest_size);
  pk.pack_bin_body(reinterpret_cast<const char*>(proof.data()), digest_size);
  return to_vector(out);
}

std::vector<std::uint8_t> encode_accept(const accept_message& m) {
  msgpack::sbuffer out(128);
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(2);
  pk.pack_uint32(m.status);
  if (m.status == 0) {
    pk.pack_bin(digest_size);
    pk.pack_bin_body(reinterpret_cast<const char*>(m.proof.data()), digest_size);
  } else {
    pk.pack_nil();
  }
  return to_vector(out);
}

result<hello_message> parse_hello(bytes_view payload) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_array(payload, handle, why)) return malformed("hello", why);
  const auto& arr = handle.get().via.array;
  hello_message m;
  // The version comes first and is judged before the rest, so that any future layout of
  // the remaining fields still yields a clear version_mismatch.
  if (arr.size < 1 || !get_u32(arr.ptr[0], m.version)) return malformed("hello", "no version");
  if (m.version != protocol_version)
    return failure(errc::version_mismatch, "peer speaks protocol version " +
                                               std::to_string(m.version) + ", this node " +
                                               std::to_string(protocol_version));
  if (arr.size != 4) return malformed("hello", "expected 4 fields");
  const auto& id = arr.ptr[1];
  if (id.type != msgpack::type::STR) return malformed("hello", "node id");
  m.node_id.assign(id.via.str.ptr, id.via.str.size);
  if (!valid_node_id(m.node_id)) return malformed("hello", "invalid node id");
  if (!get_u32(arr.ptr[2], m.creation)) return malformed("hello", "creation");
  if (!get_bin(arr.ptr[3], m.challenge)) return malformed("hello", "nonce");
  return m;
}

result<digest> parse_proof(bytes_view payload) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_array(payload, handle, why)) return malformed("proof", why);
  const auto& arr = handle.get().via.array;
  digest d{};
  if (arr.size != 1 || !get_bin(arr.ptr[0], d)) return malformed("proof");
  return d;
}

result<accept_message> parse_accept(bytes_view payload) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_array(payload, handle, why)) return malformed("accept", why);
  const auto& arr = handle.get().via.array;
  accept_message m;
  if (arr.size != 2 || !get_u32(arr.ptr[0], m.status)) return malformed("accept");
  if (m.status == 0) {
    if (!get_bin(arr.ptr[1], m.proof)) return malformed("accept", "proof");
  } else if (arr.ptr[1].type != msgpack::type::NIL) {
    return malformed("accept", "status");
  }
  return m;
}

std::error_code accept_status_error(std::uint32_t status) noexcept {
  switch (static_cast<accept_status>(status)) {
    case accept_status::accepted:
      return {};
    case accept_status::not_authorised:
      return make_error_code(errc::not_authorised);
    case accept_status::duplicate_connection:
    case accept_status::endpoint_closing:
      return make_error_code(errc::connection_closed);
  }
  return make_error_code(errc::handshake_failed);
}

digest transcript_hash(bytes_view hello_initiator, bytes_view hello_acceptor, bytes_view channel) {
  std::uint8_t li[4], la[4];
  li[0] = static_cast<std::uint8_t>(hello_initiator.size() >> 24);
  li[1] = static_cast<std::uint8_t>(hello_initiator.size() >> 16);
  li[2] = static_cast<std::uint8_t>(hello_initiator.size() >> 8);
  li[3] = static_cast<std::uint8_t>(hello_initiator.size());
  la[0] = static_cast<std::uint8_t>(hello_acceptor.size() >> 24);
  la[1] = static_cast<std::uint8_t>(hello_acceptor.size() >> 16);
  la[2] = static_cast<std::uint8_t>(hello_acceptor.size() >> 8);
  la[3] = static_cast<std::uint8_t>(hello_acceptor.size());
  if (channel.empty())
    return sha256({as_bytes("otpp/1 transcript"), li, hello_initiator, la, hello_acceptor});
  // A separate label: a TLS transcript can never equal a plain one.
  std::uint8_t lc[4];
  put_u32(lc, static_cast<std::uint32_t>(channel.size()));
  return sha256(
      {as_bytes("otpp/1 transcript+tls"), li, hello_initiator, la, hello_acceptor, lc, channel});
}

digest initiator_proof(bytes_view secret, const digest& transcript) {
  return hmac_sha256::compute(secret, {as_bytes(proof_i_label), transcript});
}

digest acceptor_proof(bytes_view secret, const digest& transcript) {
  return hmac_sha256::compute(secret, {as_bytes(proof_a_label), transcript});
}

session_keys derive_session_keys(bytes_view secret, const digest& transcript) {
  const digest prk = hmac_sha256::compute(transcript, {secret});
  static constexpr std::uint8_t one[1] = {0x01};
  session_keys keys;
  keys.initiator_to_acceptor = hmac_sha256::compute(prk, {as_bytes(key_ia_label), one});
  keys.acceptor_to_initiator = hmac_sha256::compute(prk, {as_bytes(key_ai_label), one});
  return keys;
}

}  // namespace otpp::transport
