// A door lock as a gen_statem: buttons enter a code (a partial code is cleared after a second
// of silence: an event timeout), the right code opens the door, which locks itself again after
// 300 ms (a state timeout). Parcels delivered while it is locked wait (postponed) and are taken
// in as soon as it opens; a caller can wait for the door to open (answered later).
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include <asio/use_future.hpp>

#include "otpp/gen_statem.hpp"

namespace {

using namespace std::chrono_literals;

enum class door_state { locked, open };
const char* name_of(door_state s) {
  return s == door_state::locked ? "locked" : "open";
}

struct button {
  static constexpr std::string_view tag = "button";
  char digit = '0';
  MSGPACK_DEFINE_MAP(digit)
};
struct parcel {
  static constexpr std::string_view tag = "parcel";
  std::string label;
  MSGPACK_DEFINE_MAP(label)
};
struct wait_for {
  static constexpr std::string_view tag = "wait_for";
  using reply = int;  // how many parcels the door took in so far
  door_state state = door_state::open;
};
struct clear_code {
  static constexpr std::string_view tag = "clear_code";
  OTPP_NO_FIELDS()
};
struct relock {
  static constexpr std::string_view tag = "relock";
  OTPP_NO_FIELDS()
};

class door : public otpp::gen_statem<door, door_state> {
 public:
  explicit door(std::string code) : gen_statem(door_state::locked), code_(std::move(code)) {}

  static void define_handlers(handler_table& h) {
    using enum door_state;
    h.cast<button>(locked, [](door& d, const button& b) {
      d.entered_ += b.digit;
      if (d.entered_ == d.code_) return next_state(open);
      return keep_state().event_timeout(1s, clear_code{});
    });
    h.timeout<clear_code>(locked, [](door& d, const clear_code&) { d.entered_.clear(); });
    h.timeout<relock>(open, [](door&, const relock&) { return next_state(locked); });
    h.cast<parcel>(locked, [](door&, const parcel&) { return keep_state().postpone(); });
    h.cast<parcel>(open, [](door& d, const parcel& p) {
      std::printf("  took in parcel %s\n", p.label.c_str());
      ++d.parcels_;
    });
    h.call<wait_for>([](door& d, const wait_for& w, otpp::call_from<int>& from) {
      if (d.state() == w.state) return keep_state().reply(from, d.parcels_);
      d.waiting_.push_back({w.state, from.take()});
      return keep_state();
    });
  }

  transition on_enter(door_state old, door_state now) {
    std::printf("  %s -> %s\n", name_of(old), name_of(now));
    std::erase_if(waiting_, [&](auto& w) {
      if (w.first != now) return false;
      w.second(parcels_);
      return true;
    });
    entered_.clear();
    if (now == door_state::open) return keep_state().state_timeout(300ms, relock{});
    return keep_state();
  }

 private:
  std::string code_;
  std::string entered_;
  int parcels_ = 0;
  std::vector<std::pair<door_state, otpp::reply_to<int>>> waiting_;
};

}  // namespace

int main() {
  otpp::set_log_level(otpp::log_level::warning);
  otpp::node node({.name = "statem@localhost", .threads = 2});
  node.start();

  std::printf("starting the door (code 1234)\n");
  auto d = node.spawn<door>(std::string("1234"));
  if (!d) return 1;

  auto opened = otpp::call(node, *d, wait_for{door_state::open}, 5s, asio::use_future);
  std::printf("two parcels arrive while locked\n");
  (void)otpp::cast(node, *d, parcel{"books"});
  (void)otpp::cast(node, *d, parcel{"tea"});
  std::printf("entering the code\n");
  for (char c : std::string("1234")) (void)otpp::cast(node, *d, button{c});
  if (opened.wait_for(5s) != std::future_status::ready) return 1;
  auto on_open = opened.get();
  if (!on_open) return 1;

  std::printf("waiting for the door to lock itself\n");
  auto relocked = otpp::call(node, *d, wait_for{door_state::locked}, 5s, asio::use_future);
  if (relocked.wait_for(5s) != std::future_status::ready) return 1;
  auto parcels = relocked.get();
  if (!parcels || *parcels != 2) {
    std::printf("unexpected: %s\n",
                parcels ? std::to_string(*parcels).c_str() : parcels.fail().message().c_str());
    return 1;
  }
  std::printf("locked again with %d parcels inside\n", *parcels);
  node.stop();
  return 0;
}
