// Domain errors: a handler's answer that is an error of the application's domain
// (`payment_declined`, with a message and typed details), distinct from a system or transport
// failure. The caller sees errc::domain_error; is_domain / domain_of / domain_details read it.
//
//   h.call<charge>([](shop&, charge c) -> otpp::result<receipt> {
//     if (c.amount > limit) return otpp::domain_failure("payment_declined", "over the limit",
//                                                       declined{c.amount, limit});
//     ...
//   });
//   auto r = co_await otpp::call(node, shop, charge{...}, asio::use_awaitable);
//   if (otpp::is_domain(r)) { auto d = otpp::domain_details<declined>(r.fail()); ... }
//
// It lives in failure::reason, so failure keeps its layout (a larger failure makes g++ 12 at
// -O2 report false maybe-uninitialized warnings wherever results are copied): the reason reads
// "<code>: <message>" (what logs and failure::message() show), then, when there are details, a
// NUL and the details' msgpack bytes. Across nodes it travels as its own pinned wire status
// (code, message and details as separate fields); an older peer reads it as exit with the text.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <msgpack.hpp>

#include "otpp/result.hpp"

namespace otpp {

struct domain_info {
  std::string code;     // the application's error name, e.g. "payment_declined"
  std::string message;  // for people
  friend bool operator==(const domain_info&, const domain_info&) = default;
};

namespace detail {
// A code is a name: no ':' (it ends the code in the reason text) and no NUL.
inline std::string domain_clean(std::string_view s, bool code) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\0' || (code && c == ':')) c = '_';
  }
  return out;
}
}  // namespace detail

// A domain failure from its parts; `details_msgpack` are the details' msgpack bytes (empty:
// none). What the wire decoder rebuilds.
inline failure domain_failure_encoded(std::string_view code, std::string_view message,
                                      std::string_view details_msgpack) {
  std::string reason = detail::domain_clean(code, true);
  if (!message.empty()) reason += ": " + detail::domain_clean(message, false);
  if (!details_msgpack.empty()) {
    reason.push_back('\0');
    reason.append(details_msgpack);
  }
  return failure(errc::domain_error, std::move(reason));
}

inline failure domain_failure(std::string_view code, std::string_view message = {}) {
  return domain_failure_encoded(code, message, {});
}

// With typed details: any type with a msgpack mapping (MSGPACK_DEFINE_MAP, or a std type).
template <class Details>
failure domain_failure(std::string_view code, std::string_view message, const Details& details) {
  msgpack::sbuffer buffer;
  msgpack::pack(buffer, details);
  return domain_failure_encoded(code, message, std::string_view(buffer.data(), buffer.size()));
}

inline bool is_domain(const failure& f) noexcept {
  return f.code == errc::domain_error;
}
template <class T>
bool is_domain(const result<T>& r) noexcept {
  return !r.has_value() && is_domain(r.fail());
}

// Code and message of a domain failure; nothing for another failure.
inline std::optional<domain_info> domain_of(const failure& f) {
  if (!is_domain(f)) return std::nullopt;
  std::string_view text(f.reason.c_str());
  domain_info d;
  auto colon = text.find(": ");
  if (colon == std::string_view::npos) {
    d.code = std::string(text);
  } else {
    d.code = std::string(text.substr(0, colon));
    d.message = std::string(text.substr(colon + 2));
  }
  return d;
}

// The details' msgpack bytes (empty: none, or not a domain failure).
inline std::string_view domain_details_bytes(const failure& f) noexcept {
  if (!is_domain(f)) return {};
  auto nul = f.reason.find('\0');
  if (nul == std::string::npos) return {};
  return std::string_view(f.reason).substr(nul + 1);
}

// The details decoded as T: invalid_argument for another failure, not_found when it has no
// details, bad_message when they do not decode as T.
template <class T>
result<T> domain_details(const failure& f) {
  if (!is_domain(f)) return failure(errc::invalid_argument, "not a domain error: " + f.message());
  auto bytes = domain_details_bytes(f);
  if (bytes.empty()) return failure(errc::not_found, "the domain error has no details");
  try {
    // Bytes from a peer: no count may exceed the bytes that would hold it, nesting bounded.
    const msgpack::unpack_limit limit(bytes.size(), bytes.size(), bytes.size(), bytes.size(),
                                      bytes.size(), 64);
    std::size_t off = 0;
    auto handle = msgpack::unpack(bytes.data(), bytes.size(), off, nullptr, nullptr, limit);
    return handle.get().as<T>();
  } catch (const std::exception& e) {
    return failure(errc::bad_message, std::string("domain error details: ") + e.what());
  }
}

}  // namespace otpp
