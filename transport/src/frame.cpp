#include "otpp/transport/frame.hpp"

#include <algorithm>
#include <cstring>

#include <openssl/crypto.h>

#include "otpp/error.hpp"

namespace otpp::transport {

namespace {
void put_prefix(direction dir, std::uint64_t seq, std::uint8_t (&prefix)[9]) noexcept {
  prefix[0] = static_cast<std::uint8_t>(dir);
  for (int i = 0; i < 8; ++i) prefix[1 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
}
}  // namespace

std::uint8_t* byte_buffer::grow(std::size_t n) {
  if (capacity_ - size_ < n) {
    const std::size_t want = std::max({size_ + n, capacity_ * 2, std::size_t{4096}});
    std::unique_ptr<std::uint8_t[]> bigger(new std::uint8_t[want]);
    if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = want;
  }
  std::uint8_t* at = data_.get() + size_;
  size_ += n;
  return at;
}

void byte_buffer::resize(std::size_t n) {
  if (n > capacity_) {
    const std::size_t want = std::max({n, capacity_ * 2, std::size_t{4096}});
    std::unique_ptr<std::uint8_t[]> bigger(new std::uint8_t[want]);
    if (size_ > 0) std::memcpy(bigger.get(), data_.get(), std::min(size_, n));
    data_ = std::move(bigger);
    capacity_ = want;
  }
  size_ = n;
}

void write_frame(std::uint8_t kind, bytes_view payload, std::uint8_t* p) noexcept {
  put_u32(p, static_cast<std::uint32_t>(payload.size() + 1));
  p[length_size] = kind;
  if (!payload.empty()) std::memcpy(p + header_size, payload.data(), payload.size());
}

void append_plain_frame(std::uint8_t kind, bytes_view payload, byte_buffer& out) {
  write_frame(kind, payload, out.grow(header_size + payload.size()));
}

void append_plain_frame(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out) {
  const std::size_t at = out.size();
  out.resize(at + header_size + payload.size());
  write_frame(kind, payload, out.data() + at);
}

decode_step decode_frame(bytes_view in, std::size_t max_payload) noexcept {
  decode_step step;
  if (in.size() < length_size) {
    step.needed = header_size;
    return step;
  }
  const std::uint32_t length = get_u32(in.data());
  if (length == 0) {
    step.error = make_error_code(errc::malformed_frame);
    return step;
  }
  if (std::size_t{length} - 1 > max_payload) {
    step.error = make_error_code(errc::frame_too_large);
    return step;
  }
  step.needed = length_size + std::size_t{length};
  if (in.size() < step.needed) return step;
  step.consumed = step.needed;
  step.frame.kind = in[length_size];
  step.frame.payload = in.subspan(header_size, step.needed - header_size);
  return step;
}

// ---------------------------------------------------------------------------------------
// Records.

namespace detail {

namespace {
constexpr std::string_view key_update_label = "otpp/1 key update";

aead::algorithm algorithm_of(record_protection mode) noexcept {
  return mode == record_protection::chacha20_poly1305 ? aead::algorithm::chacha20_poly1305
                                                      : aead::algorithm::aes_256_gcm;
}
}  // namespace

record_state::record_state(const session_key& key, direction dir, record_protection mode,
                           bool sealing, std::uint64_t key_update_bytes,
                           std::uint64_t first_sequence)
    : mode_(mode),
      dir_(dir),
      sealing_(sealing),
      seq_(first_sequence),
      key_update_bytes_(key_update_bytes == 0 ? default_key_update_bytes : key_update_bytes) {
  set_key(key);
}

record_state::~record_state() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

void record_state::set_key(const session_key& key) {
  if (mode_ == record_protection::hmac_sha256) {
    mac_ = frame_mac(key);
    return;
  }
  key_ = key;
  aead_ = aead(algorithm_of(mode_), key_, sealing_);
}

aead::nonce_type record_state::nonce() const noexcept {
  aead::nonce_type n{};
  n[0] = static_cast<std::uint8_t>(dir_);
  for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<std::uint8_t>(seq_ >> (56 - 8 * i));
  return n;
}

digest record_state::hmac_tag(const std::uint8_t* record, std::size_t body) noexcept {
  std::uint8_t prefix[9];
  put_prefix(dir_, seq_, prefix);
  mac_.begin();
  mac_.update(prefix);
  mac_.update(bytes_view(record, record_header_size + body));
  return mac_.finish();
}

void record_state::protect(std::uint8_t* record, std::size_t body) noexcept {
  if (mode_ == record_protection::hmac_sha256) {
    const digest tag = hmac_tag(record, body);
    std::memcpy(record + record_header_size + body, tag.data(), mac_size);
  } else {
    aead_.seal(nonce(), bytes_view(record, record_header_size),
               std::span<std::uint8_t>(record + record_header_size, body),
               record + record_header_size + body);
  }
  advance(body);
}

bool record_state::verify(std::uint8_t* record, std::size_t body) noexcept {
  if (mode_ == record_protection::hmac_sha256) {
    const digest tag = hmac_tag(record, body);
    if (!constant_time_equal(bytes_view(tag.data(), mac_size),
                             bytes_view(record + record_header_size + body, mac_size)))
      return false;
  } else if (!aead_.open(nonce(), bytes_view(record, record_header_size),
                         std::span<std::uint8_t>(record + record_header_size, body),
                         record + record_header_size + body)) {
    return false;
  }
  advance(body);
  return true;
}

void record_state::advance(std::size_t body) noexcept {
  ++seq_;
  if (mode_ == record_protection::hmac_sha256) return;
  key_bytes_ += body;
  if (key_bytes_ < key_update_bytes_) return;
  // Both ends count the same bodies, so they step at the same record. An OpenSSL failure
  // here (out of memory) leaves the old key: the peer's next record then fails its check
  // and the connection closes; it never continues with a key the peer does not have.
  static constexpr std::uint8_t one[1] = {0x01};
  try {
    const digest next = hmac_sha256::compute(key_, {as_bytes(key_update_label), one});
    set_key(next);
  } catch (const std::exception&) {
    aead_ = aead();
    return;
  }
  key_bytes_ = 0;
}

}  // namespace detail

void record_sealer::seal_in_place(std::uint8_t* record, std::size_t body_size) noexcept {
  put_u32(record, static_cast<std::uint32_t>(body_size));
  protect(record, body_size);
}

void record_sealer::seal(std::span<const frame_view> frames, std::vector<std::uint8_t>& out) {
  std::size_t body = 0;
  for (const auto& f : frames) body += header_size + f.payload.size();
  const std::size_t at = out.size();
  out.resize(at + record_overhead + body);
  std::uint8_t* p = out.data() + at + record_header_size;
  for (const auto& f : frames) {
    write_frame(f.kind, f.payload, p);
    p += header_size + f.payload.size();
  }
  seal_in_place(out.data() + at, body);
}

void record_sealer::seal(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out) {
  const frame_view f{kind, payload};
  seal(std::span<const frame_view>(&f, 1), out);
}

record_step record_opener::open(std::span<std::uint8_t> in) {
  record_step step;
  if (in.size() < record_header_size) {
    step.needed = record_overhead + header_size;
    return step;
  }
  const std::uint32_t length = get_u32(in.data());
  if (length == 0) {
    step.error = make_error_code(errc::malformed_frame);
    return step;
  }
  if (std::size_t{length} > max_record_body(max_payload_)) {
    step.error = make_error_code(errc::frame_too_large);
    return step;
  }
  const std::size_t total = record_overhead + std::size_t{length};
  if (in.size() < total) {
    step.needed = total;
    return step;
  }
  if (next_sequence() > last_sequence) {  // never reached in practice: 2^64 records
    step.error = make_error_code(errc::bad_mac);
    return step;
  }
  // Authenticate the whole record before any byte of its body is interpreted.
  if (!verify(in.data(), length)) {
    step.error = make_error_code(errc::bad_mac);
    return step;
  }
  // Authentic: the body must be an exact sequence of well-formed frames.
  bytes_view body = in.subspan(record_header_size, length);
  for (bytes_view rest = body; !rest.empty();) {
    const decode_step f = decode_frame(rest, max_payload_);
    if (f.error) {
      step.error = f.error;
      return step;
    }
    if (f.consumed == 0) {  // a frame runs past the end of the record
      step.error = make_error_code(errc::malformed_frame);
      return step;
    }
    if (!kinds_.test(f.frame.kind)) {
      step.error = make_error_code(errc::unknown_frame_kind);
      step.kind = f.frame.kind;
      return step;
    }
    rest = rest.subspan(f.consumed);
  }
  step.consumed = total;
  step.body = body;
  return step;
}

bool frame_reader::next(frame_view& f) noexcept {
  if (rest_.size() < header_size) return false;
  const std::size_t n = length_size + get_u32(rest_.data());
  if (n > rest_.size()) return false;  // cannot happen on a validated body
  f.kind = rest_[length_size];
  f.payload = rest_.subspan(header_size, n - header_size);
  rest_ = rest_.subspan(n);
  return true;
}

// ---------------------------------------------------------------------------------------
// Outgoing batches.

void record_batch::ensure(std::size_t n) {
  if (room() >= n) return;
  if (n <= chunk_size) {
    if (used_ == chunks_.size()) {
      chunks_.push_back(
          {std::unique_ptr<std::uint8_t[]>(new std::uint8_t[chunk_size]), 0, chunk_size});
    }
  } else {
    // An outsized chunk for one large frame, placed before the spare ones.
    chunks_.insert(chunks_.begin() + static_cast<std::ptrdiff_t>(used_),
                   chunk{std::unique_ptr<std::uint8_t[]>(new std::uint8_t[n]), 0, n});
  }
  chunks_[used_].size = 0;
  ++used_;
}

std::uint8_t* record_batch::take(std::size_t n) noexcept {
  chunk& c = chunks_[used_ - 1];
  std::uint8_t* at = c.data.get() + c.size;
  c.size += n;
  size_ += n;
  return at;
}

void record_batch::add_frame(std::uint8_t kind, bytes_view payload) {
  const std::size_t n = header_size + payload.size();
  if (open_ && (records_.back().body + n > record_body_target || room() < n + mac_size))
    close_record();
  if (!open_) {
    ensure(record_overhead + n);
    records_.push_back({used_ - 1, chunks_[used_ - 1].size, 0});
    take(record_header_size);  // the length, written when sealed
    open_ = true;
  }
  write_frame(kind, payload, take(n));
  records_.back().body += n;
}

void record_batch::add_plain_frame(std::uint8_t kind, bytes_view payload) {
  close_record();
  const std::size_t n = header_size + payload.size();
  ensure(n);
  write_frame(kind, payload, take(n));
}

void record_batch::close_record() {
  if (!open_) return;
  take(mac_size);  // the MAC, written when sealed (every frame added left room for it)
  open_ = false;
}

void record_batch::seal(record_sealer& sealer) {
  close_record();
  for (const record& r : records_)
    sealer.seal_in_place(chunks_[r.chunk].data.get() + r.offset, r.body);
}

std::vector<std::uint8_t> record_batch::bytes() const {
  std::vector<std::uint8_t> out;
  out.reserve(size_);
  for (std::size_t i = 0; i < used_; ++i) {
    const bytes_view p = piece(i);
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

std::size_t record_batch::capacity() const noexcept {
  std::size_t total = 0;
  for (const chunk& c : chunks_) total += c.capacity;
  return total;
}

void record_batch::clear(std::size_t keep_spare) noexcept {
  std::reverse(chunks_.begin(), chunks_.begin() + static_cast<std::ptrdiff_t>(used_));
  std::erase_if(chunks_, [](const chunk& c) { return c.capacity != chunk_size; });
  if (chunks_.size() > keep_spare) chunks_.resize(keep_spare);
  for (chunk& c : chunks_) c.size = 0;
  used_ = 0;
  size_ = 0;
  records_.clear();
  open_ = false;
}

void record_batch::trim(std::size_t keep_spare) noexcept {
  if (chunks_.size() > used_ + keep_spare) chunks_.resize(used_ + keep_spare);
}

void record_batch::release() noexcept {
  std::vector<chunk>().swap(chunks_);
  std::vector<record>().swap(records_);
  used_ = size_ = 0;
  open_ = false;
}

void record_batch::swap(record_batch& other) noexcept {
  chunks_.swap(other.chunks_);
  records_.swap(other.records_);
  std::swap(used_, other.used_);
  std::swap(size_, other.size_);
  std::swap(open_, other.open_);
}

}  // namespace otpp::transport
