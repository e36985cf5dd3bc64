// A minimal intrusive reference count: processes and call states are shared between threads
// and must not pay for a separate control block.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

namespace otpp::detail {

class ref_counted {
 public:
  void add_ref() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() const noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  ref_counted() = default;
  virtual ~ref_counted() = default;
  ref_counted(const ref_counted&) = delete;
  ref_counted& operator=(const ref_counted&) = delete;

 private:
  mutable std::atomic<std::uint32_t> refs_{0};
};

template <class T>
class ref_ptr {
 public:
  ref_ptr() = default;
  ref_ptr(std::nullptr_t) {}
  explicit ref_ptr(T* p) noexcept : p_(p) {
    if (p_) p_->add_ref();
  }
  ref_ptr(const ref_ptr& o) noexcept : p_(o.p_) {
    if (p_) p_->add_ref();
  }
  ref_ptr(ref_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  template <class U>
  ref_ptr(ref_ptr<U>&& o) noexcept : p_(o.detach()) {}
  template <class U>
  ref_ptr(const ref_ptr<U>& o) : ref_ptr(o.get()) {}
  ~ref_ptr() noexcept {
    if (p_) p_->release();
  }
  ref_ptr& operator=(ref_ptr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }
  T* detach() { return std::exchange(p_, nullptr); }
  void reset() { ref_ptr().swap(*this); }
  void swap(ref_ptr& o) noexcept { std::swap(p_, o.p_); }
  friend bool operator==(const ref_ptr& a, const ref_ptr& b) { return a.p_ == b.p_; }

 private:
  T* p_ = nullptr;
};

}  // namespace otpp::detail
