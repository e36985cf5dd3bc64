// A small expected-style result: a value, or an error_code with an optional reason text
// (the callee's exit reason for errc::exit, a decoder message for bad_message, ...).
#pragma once

#include <cassert>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "otpp/error.hpp"

namespace otpp {

// The error side of a result.
struct failure {
  std::error_code code;
  std::string reason;  // may be empty

  failure() = default;
  failure(std::error_code c, std::string r = {}) : code(c), reason(std::move(r)) {}
  failure(errc e, std::string r = {}) : code(make_error_code(e)), reason(std::move(r)) {}

  // "timeout", or "exit: boom" when a reason is attached. The reason's text ends at a NUL:
  // a domain error keeps its encoded details after one (otpp/domain_error.hpp).
  std::string message() const {
    return reason.empty() ? code.message() : code.message() + ": " + reason.c_str();
  }
  friend bool operator==(const failure& a, const failure& b) { return a.code == b.code; }
};

// value() on an error throws this: what() reads "<error message>" or "<reason>: <error message>".
[[noreturn]] inline void throw_failure(const failure& f) {
  if (f.reason.empty()) throw std::system_error(f.code);
  throw std::system_error(f.code, f.reason.c_str());
}

template <class T>
class [[nodiscard]] result {
 public:
  using value_type = T;

  result() requires std::is_default_constructible_v<T> : state_(std::in_place_index<0>) {}
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  result(failure f) : state_(std::in_place_index<1>, std::move(f)) {}
  result(errc e, std::string reason = {}) : result(failure(e, std::move(reason))) {}
  result(std::error_code ec, std::string reason = {}) : result(failure(ec, std::move(reason))) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return check(), std::get<0>(state_); }
  const T& value() const& { return check(), std::get<0>(state_); }
  T&& value() && { return check(), std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(state_) : static_cast<T>(std::forward<U>(fallback));
  }

  std::error_code error() const noexcept {
    return has_value() ? std::error_code{} : std::get<1>(state_).code;
  }
  const failure& fail() const {
    assert(!has_value());
    return std::get<1>(state_);
  }
  // Exit reason or detail text; empty on success.
  std::string reason() const { return has_value() ? std::string{} : std::get<1>(state_).reason; }

 private:
  void check() const {
    if (!has_value()) throw_failure(std::get<1>(state_));
  }
  std::variant<T, failure> state_;
};

// result<void>: success or a failure.
template <>
class result<void> {
 public:
  using value_type = void;
  result() = default;
  result(failure f) : failure_(std::move(f)), failed_(true) {}
  result(errc e, std::string reason = {}) : result(failure(e, std::move(reason))) {}
  result(std::error_code ec, std::string reason = {}) {
    if (ec) *this = result(failure(ec, std::move(reason)));
  }

  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (failed_) throw_failure(failure_);
  }
  std::error_code error() const noexcept { return failure_.code; }
  const failure& fail() const { return failure_; }
  std::string reason() const { return failure_.reason; }

 private:
  failure failure_;
  bool failed_ = false;
};

}  // namespace otpp
