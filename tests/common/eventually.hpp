// Bounded polling on a condition (never a fixed sleep standing in for one).
#pragma once

#include <chrono>
#include <thread>

namespace otpp_test {

// Polls `pred` every millisecond up to `bound`; returns whether it came true.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
  auto until = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

}  // namespace otpp_test
