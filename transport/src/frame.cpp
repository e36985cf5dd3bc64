#include "otpp/transport/frame.hpp"

#include <algorithm>
#include <cstring>

#include "otpp/error.hpp"

namespace otpp::transport {

namespace {
// Checks the length prefix of a frame; returns an error or the total size needed.
decode_step check_header(bytes_view in, std::size_t max_payload, std::size_t trailer) noexcept {
  decode_step step;
  if (in.size() < length_size) {
    step.needed = header_size + trailer;
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
  step.needed = length_size + std::size_t{length} + trailer;
  return step;
}

void append_header(std::uint8_t kind, std::size_t payload, std::uint8_t* p) noexcept {
  put_u32(p, static_cast<std::uint32_t>(payload + 1));
  p[4] = kind;
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

void append_plain_frame(std::uint8_t kind, bytes_view payload, byte_buffer& out) {
  std::uint8_t* p = out.grow(header_size + payload.size());
  append_header(kind, payload.size(), p);
  if (!payload.empty()) std::memcpy(p + header_size, payload.data(), payload.size());
}

void append_plain_frame(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out) {
  const std::size_t at = out.size();
  out.resize(at + header_size + payload.size());
  append_header(kind, payload.size(), out.data() + at);
  if (!payload.empty()) std::memcpy(out.data() + at + header_size, payload.data(), payload.size());
}

decode_step decode_plain_frame(bytes_view in) noexcept {
  decode_step step = check_header(in, max_plain_payload, 0);
  if (step.error || in.size() < step.needed) return step;
  step.consumed = step.needed;
  step.frame.kind = in[length_size];
  step.frame.payload = in.subspan(header_size, step.needed - header_size);
  return step;
}

void frame_sealer::seal(std::uint8_t kind, bytes_view payload, std::vector<std::uint8_t>& out) {
  const std::size_t at = out.size();
  out.resize(at + sealed_size(payload.size()));
  seal_into(kind, payload, out.data() + at);
}

void frame_sealer::seal(std::uint8_t kind, bytes_view payload, byte_buffer& out) {
  seal_into(kind, payload, out.grow(sealed_size(payload.size())));
}

void frame_sealer::seal_into(std::uint8_t kind, bytes_view payload, std::uint8_t* p) noexcept {
  append_header(kind, payload.size(), p);
  if (!payload.empty()) std::memcpy(p + header_size, payload.data(), payload.size());
  std::uint8_t prefix[9];
  prefix[0] = static_cast<std::uint8_t>(dir_);
  for (int i = 0; i < 8; ++i) prefix[1 + i] = static_cast<std::uint8_t>(seq_ >> (56 - 8 * i));
  mac_.begin();
  mac_.update(prefix);
  mac_.update(bytes_view(p, header_size + payload.size()));
  const digest tag = mac_.finish();
  std::memcpy(p + header_size + payload.size(), tag.data(), mac_size);
  ++seq_;
}

decode_step frame_opener::open(bytes_view in) {
  decode_step step = check_header(in, max_payload_, mac_size);
  if (step.error || in.size() < step.needed) return step;
  const std::size_t body = step.needed - mac_size;  // length prefix + kind + payload
  std::uint8_t prefix[9];
  prefix[0] = static_cast<std::uint8_t>(dir_);
  for (int i = 0; i < 8; ++i) prefix[1 + i] = static_cast<std::uint8_t>(seq_ >> (56 - 8 * i));
  mac_.begin();
  mac_.update(prefix);
  mac_.update(in.first(body));
  const digest tag = mac_.finish();
  if (!constant_time_equal(bytes_view(tag.data(), mac_size), in.subspan(body, mac_size))) {
    step.error = make_error_code(errc::bad_mac);
    step.needed = 0;
    return step;
  }
  ++seq_;
  step.consumed = step.needed;
  step.frame.kind = in[length_size];
  step.frame.payload = in.subspan(header_size, body - header_size);
  return step;
}

}  // namespace otpp::transport
