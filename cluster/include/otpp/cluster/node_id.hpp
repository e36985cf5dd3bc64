// Node ids: "name@host:port", parsed and validated with one clear error per rule broken.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "otpp/result.hpp"

namespace otpp::cluster {

struct node_id {
  // Limits of the text form. The whole text stays within otpp::node_atom's 255 characters, so
  // every valid id can name a node (its pids print and travel with it).
  static constexpr std::size_t max_name_length = 64;
  static constexpr std::size_t max_host_length = 253;  // hostname, RFC 1123
  static constexpr std::size_t max_label_length = 63;  // one hostname label
  static constexpr std::size_t max_text_length = 255;

  // Letter first, then letters, digits, '_' or '-'; case kept.
  std::string name;
  // Canonical host: an IPv4 dotted quad, an IPv6 address without brackets (inet_ntop's form:
  // lower case, zeros compressed) or a hostname in lower case (hostnames are case-insensitive,
  // so one machine gets one id).
  std::string host;
  std::uint16_t port = 0;  // 1..65535

  // "name@host:port", "name@10.0.0.1:4370", "name@[::1]:4370". Non-canonical input (an upper
  // case hostname, an uncompressed IPv6) is accepted and normalised, so
  // parse(to_string(id)) == id always, while to_string(parse(text)) may differ from text.
  // Errors: errc::invalid_argument with a reason naming the rule broken and the input.
  static result<node_id> parse(std::string_view text);
  // The same rules from parts; host may be an IPv6 address with or without brackets.
  static result<node_id> make(std::string_view name, std::string_view host, std::uint16_t port);

  // Canonical text form: IPv6 hosts in brackets.
  std::string to_string() const;

  friend auto operator<=>(const node_id&, const node_id&) = default;
};

// "name@host:port" from parts (brackets added around an IPv6 host), not validated.
std::string format_node_id(std::string_view name, std::string_view host, std::uint16_t port);

}  // namespace otpp::cluster

template <>
struct std::hash<otpp::cluster::node_id> {
  std::size_t operator()(const otpp::cluster::node_id& id) const noexcept {
    std::size_t h = std::hash<std::string>{}(id.name);
    h ^= std::hash<std::string>{}(id.host) + std::size_t{0x9e3779b9} + (h << 6) + (h >> 2);
    h ^= std::hash<std::uint16_t>{}(id.port) + std::size_t{0x9e3779b9} + (h << 6) + (h >> 2);
    return h;
  }
};
