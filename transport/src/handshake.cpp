#include "otpp/transport/handshake.hpp"

#include <msgpack.hpp>

#include <algorithm>
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

std::string_view to_string(record_protection p) noexcept {
  switch (p) {
    case record_protection::hmac_sha256:
      return "hmac-sha256";
    case record_protection::aes_256_gcm:
      return "aes-256-gcm";
    case record_protection::chacha20_poly1305:
      return "chacha20-poly1305";
  }
  return "unknown";
}

std::optional<record_protection> parse_record_protection(std::string_view name) noexcept {
  for (auto p : {record_protection::hmac_sha256, record_protection::aes_256_gcm,
                 record_protection::chacha20_poly1305})
    if (to_string(p) == name) return p;
  return std::nullopt;
}

namespace {
int strength_rank(record_protection p) noexcept {
  switch (p) {
    case record_protection::aes_256_gcm:
      return 0;
    case record_protection::chacha20_poly1305:
      return 1;
    case record_protection::hmac_sha256:
      return 2;
  }
  return 3;
}
}  // namespace

std::optional<record_protection> negotiate_protection(
    std::span<const record_protection> a, std::span<const record_protection> b) noexcept {
  std::optional<record_protection> best;
  std::size_t best_score = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = 0; j < b.size(); ++j) {
      if (a[i] != b[j]) continue;
      const std::size_t score = i + j;
      if (!best || score < best_score ||
          (score == best_score && strength_rank(a[i]) < strength_rank(*best))) {
        best = a[i];
        best_score = score;
      }
      break;
    }
  }
  return best;
}

std::string protection_list(std::span<const record_protection> modes) {
  std::string out;
  for (auto m : modes) {
    if (!out.empty()) out += ", ";
    out += to_string(m);
  }
  return out.empty() ? std::string("nothing known") : out;
}

bool valid_node_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > max_node_id_size) return false;
  for (char c : id)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

std::vector<std::uint8_t> encode_hello(const hello_message& m) {
  msgpack::sbuffer out(128);
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(m.protections.empty() ? 4 : 5);
  pk.pack_uint32(m.version);
  pk.pack_str(static_cast<std::uint32_t>(m.node_id.size()));
  pk.pack_str_body(m.node_id.data(), static_cast<std::uint32_t>(m.node_id.size()));
  pk.pack_uint32(m.creation);
  pk.pack_bin(nonce_size);
  pk.pack_bin_body(reinterpret_cast<const char*>(m.challenge.data()), nonce_size);
  if (!m.protections.empty()) {
    const std::size_t n = std::min(m.protections.size(), max_offered_protections);
    pk.pack_array(static_cast<std::uint32_t>(n));
    for (std::size_t i = 0; i < n; ++i) {
      const std::string_view name = to_string(m.protections[i]);
      pk.pack_str(static_cast<std::uint32_t>(name.size()));
      pk.pack_str_body(name.data(), static_cast<std::uint32_t>(name.size()));
    }
  }
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
  if (arr.size != 4 && arr.size != 5) return malformed("hello", "expected 4 or 5 fields");
  const auto& id = arr.ptr[1];
  if (id.type != msgpack::type::STR) return malformed("hello", "node id");
  m.node_id.assign(id.via.str.ptr, id.via.str.size);
  if (!valid_node_id(m.node_id)) return malformed("hello", "invalid node id");
  if (!get_u32(arr.ptr[2], m.creation)) return malformed("hello", "creation");
  if (!get_bin(arr.ptr[3], m.challenge)) return malformed("hello", "nonce");
  if (arr.size == 4) return m;  // no negotiation: hmac-sha256 records
  const auto& offer = arr.ptr[4];
  if (offer.type != msgpack::type::ARRAY || offer.via.array.size > max_offered_protections)
    return malformed("hello", "protections");
  m.protections.clear();
  for (std::uint32_t i = 0; i < offer.via.array.size; ++i) {
    const auto& name = offer.via.array.ptr[i];
    if (name.type != msgpack::type::STR) return malformed("hello", "protection name");
    const auto p = parse_record_protection(std::string_view(name.via.str.ptr, name.via.str.size));
    // Unknown (newer) modes are skipped, and so are repeats.
    if (p && std::find(m.protections.begin(), m.protections.end(), *p) == m.protections.end())
      m.protections.push_back(*p);
  }
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

session_keys derive_session_keys(bytes_view secret, const digest& transcript,
                                 record_protection mode) {
  const digest prk = hmac_sha256::compute(transcript, {secret});
  static constexpr std::uint8_t one[1] = {0x01};
  static constexpr std::uint8_t space[1] = {' '};
  // hmac-sha256 keeps the labels of the records from before negotiation; the other modes
  // append their name, so no key is ever used by two algorithms.
  const bytes_view suffix =
      mode == record_protection::hmac_sha256 ? bytes_view() : bytes_view(space);
  const bytes_view name =
      mode == record_protection::hmac_sha256 ? bytes_view() : as_bytes(to_string(mode));
  session_keys keys;
  keys.initiator_to_acceptor =
      hmac_sha256::compute(prk, {as_bytes(key_ia_label), suffix, name, one});
  keys.acceptor_to_initiator =
      hmac_sha256::compute(prk, {as_bytes(key_ai_label), suffix, name, one});
  return keys;
}

}  // namespace otpp::transport
