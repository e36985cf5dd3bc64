#include "otpp/cluster/node_id.hpp"

#include <arpa/inet.h>

#include <array>
#include <charconv>

namespace otpp::cluster {
namespace {

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Input as it can be shown in a log line: control bytes escaped, long input cut.
std::string shown(std::string_view text) {
  constexpr std::size_t max_shown = 80;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  if (text.size() > max_shown) out += "...";
  return out;
}

// One character named in an error: 'x', space, or a byte value.
std::string describe(char ch) {
  auto c = static_cast<unsigned char>(ch);
  if (c == ' ') return "a space";
  if (c > 0x20 && c < 0x7f) return std::string("'") + ch + "'";
  return "byte " + shown(std::string_view(&ch, 1));
}

failure invalid(std::string_view text, const std::string& rule) {
  return failure(errc::invalid_argument, "invalid node id '" + shown(text) + "': " + rule);
}

result<std::uint16_t> parse_port(std::string_view text, std::string_view port) {
  if (port.empty()) return invalid(text, "missing port after ':' (expected name@host:port)");
  if (!is_digit(port.front())) {
    if (port.front() == '+' || port.front() == '-' || port.front() == ' ' || port.front() == '\t') {
      return invalid(
          text, "port '" + shown(port) + "' must be plain decimal digits, without sign or spaces");
    }
    return invalid(text, "port '" + shown(port) + "' is not a number");
  }
  std::size_t digits = 0;
  while (digits < port.size() && is_digit(port[digits])) ++digits;
  if (digits < port.size()) {
    return invalid(
        text, "unexpected trailing characters '" + shown(port.substr(digits)) + "' after the port");
  }
  if (digits > 1 && port.front() == '0') {
    return invalid(text, "port '" + shown(port) + "' has a leading zero");
  }
  unsigned long value = 0;
  // More than 5 digits is out of range whatever they are (and would overflow nothing here).
  if (digits > 5 || std::from_chars(port.data(), port.data() + digits, value).ec != std::errc{} ||
      value == 0 || value > 65535) {
    return invalid(text, "port " + shown(port) + " is out of range 1-65535");
  }
  return static_cast<std::uint16_t>(value);
}

result<void> check_name(std::string_view text, std::string_view name) {
  if (name.empty()) return invalid(text, "empty name before '@'");
  if (name.size() > node_id::max_name_length) {
    return invalid(text, "name is " + std::to_string(name.size()) + " characters, at most " +
                             std::to_string(node_id::max_name_length));
  }
  if (!is_letter(name.front())) {
    return invalid(text, "name must start with a letter, not " + describe(name.front()));
  }
  for (std::size_t i = 1; i < name.size(); ++i) {
    char c = name[i];
    if (!is_letter(c) && !is_digit(c) && c != '_' && c != '-') {
      return invalid(text, "name contains " + describe(c) + " at position " + std::to_string(i) +
                               ": only letters, digits, '_' and '-' are allowed");
    }
  }
  return {};
}

result<std::string> canonical_ipv6(std::string_view text, std::string_view host) {
  std::string copy(host);  // inet_pton wants a terminated string
  in6_addr addr{};
  if (inet_pton(AF_INET6, copy.c_str(), &addr) != 1) {
    return invalid(text, "'" + shown(host) + "' is not a valid IPv6 address");
  }
  std::array<char, INET6_ADDRSTRLEN> out{};
  inet_ntop(AF_INET6, &addr, out.data(), out.size());
  return std::string(out.data());
}

// IPv4 dotted quad or RFC 1123 hostname, returned in canonical (lower case) form.
result<std::string> canonical_host(std::string_view text, std::string_view host) {
  if (host.empty()) return invalid(text, "empty host between '@' and ':'");
  if (host.find(':') != std::string_view::npos) {
    return invalid(text, "host '" + shown(host) +
                             "' contains ':': an IPv6 address must be written in brackets, "
                             "as name@[" +
                             shown(host) + "]:port");
  }
  if (host.find_first_not_of("0123456789.") == std::string_view::npos) {
    // Only digits and dots: meant as an IPv4 address (glibc refuses leading zeros too).
    std::string copy(host);
    in_addr addr{};
    if (inet_pton(AF_INET, copy.c_str(), &addr) != 1) {
      return invalid(text, "'" + shown(host) +
                               "' is not a valid IPv4 address (four numbers 0-255 separated "
                               "by dots)");
    }
    return copy;
  }
  if (host.size() > node_id::max_host_length) {
    return invalid(text, "host is " + std::to_string(host.size()) + " characters, at most " +
                             std::to_string(node_id::max_host_length));
  }
  std::string out;
  out.reserve(host.size());
  std::size_t start = 0;
  while (true) {
    std::size_t dot = host.find('.', start);
    std::string_view label =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) {
      return invalid(text, "host '" + shown(host) +
                               "' has an empty label (a leading, "
                               "trailing or doubled '.')");
    }
    if (label.size() > node_id::max_label_length) {
      return invalid(text, "host label '" + shown(label) + "' is " + std::to_string(label.size()) +
                               " characters, at most " + std::to_string(node_id::max_label_length));
    }
    for (char c : label) {
      if (!is_letter(c) && !is_digit(c) && c != '-') {
        return invalid(text, "host label '" + shown(label) + "' contains " + describe(c) +
                                 ": only letters, digits and '-' are allowed");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return invalid(text, "host label '" + shown(label) + "' must not start or end with '-'");
    }
    for (char c : label) out += to_lower(c);
    if (dot == std::string_view::npos) break;
    out += '.';
    start = dot + 1;
  }
  return out;
}

failure text_too_long(std::string_view text) {
  return invalid(text, "node id is " + std::to_string(text.size()) + " characters, at most " +
                           std::to_string(node_id::max_text_length));
}

}  // namespace

result<node_id> node_id::parse(std::string_view text) {
  // Parts are checked before the total so the error names the part at fault; input far too
  // long to be an id is refused before looking at it.
  if (text.size() > 4 * max_text_length) return text_too_long(text);
  std::size_t at = text.find('@');
  if (at == std::string_view::npos) {
    return invalid(text, "missing '@' between name and host (expected name@host:port)");
  }
  node_id id;
  std::string_view name = text.substr(0, at);
  if (auto ok = check_name(text, name); !ok) return ok.fail();
  id.name = std::string(name);

  std::string_view rest = text.substr(at + 1);
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    std::size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      return invalid(text, "missing ']' after the bracketed IPv6 address");
    }
    std::string_view inner = rest.substr(1, close - 1);
    if (inner.empty()) return invalid(text, "empty host between '[' and ']'");
    auto host = canonical_ipv6(text, inner);
    if (!host) return host.fail();
    id.host = std::move(*host);
    std::string_view after = rest.substr(close + 1);
    if (after.empty()) return invalid(text, "missing port after ']' (expected name@[ipv6]:port)");
    if (after.front() != ':') {
      return invalid(text,
                     "unexpected characters '" + shown(after) + "' after ']' (expected ':port')");
    }
    port = after.substr(1);
  } else {
    std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) {
      if (rest.empty()) return invalid(text, "empty host after '@'");
      return invalid(text, "missing port (expected name@host:port)");
    }
    auto host = canonical_host(text, rest.substr(0, colon));
    if (!host) return host.fail();
    id.host = std::move(*host);
    port = rest.substr(colon + 1);
  }
  auto p = parse_port(text, port);
  if (!p) return p.fail();
  id.port = *p;
  if (text.size() > max_text_length) return text_too_long(text);
  return id;
}

result<node_id> node_id::make(std::string_view name, std::string_view host, std::uint16_t port) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return parse(format_node_id(name, host, port));
}

std::string format_node_id(std::string_view name, std::string_view host, std::uint16_t port) {
  std::string out;
  out.reserve(name.size() + host.size() + 9);
  out += name;
  out += '@';
  bool ipv6 = host.find(':') != std::string_view::npos;
  if (ipv6) out += '[';
  out += host;
  if (ipv6) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

std::string node_id::to_string() const {
  return format_node_id(name, host, port);
}

}  // namespace otpp::cluster
