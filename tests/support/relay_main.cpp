// otpp_relay: the TCP relay as a process, for multi-process scripts.
//   otpp_relay <target_host> <target_port> [listen_port]
// Prints "port <n>" once listening, then reads one command per line on stdin and answers
// each with one line ("ok", a stats line, or "error <why>"):
//   delay <a_to_b|b_to_a|both> <ms>     mode <a_to_b|b_to_a|both> <pass|drop|cut>
//   cut   heal   reset   refuse <on|off>   stats   quit
// End of stdin quits too, so the relay never outlives the script that started it.
#include <cstdio>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "otpp_test/tcp_relay.hpp"

namespace {

using otpp_test::direction;

bool parse_port(const std::string& text, std::uint16_t& out) {
  try {
    std::size_t used = 0;
    unsigned long v = std::stoul(text, &used);
    if (used != text.size() || v > 65535) return false;
    out = static_cast<std::uint16_t>(v);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool parse_directions(const std::string& text, std::vector<direction>& out) {
  direction d;
  if (text == "both") {
    out = {direction::a_to_b, direction::b_to_a};
  } else if (otpp_test::parse_direction(text, d)) {
    out = {d};
  } else {
    return false;
  }
  return true;
}

// Runs one command line; returns the answer line.
std::string run(otpp_test::tcp_relay& relay, const std::string& line, bool& quit) {
  std::istringstream in(line);
  std::string cmd, a, b, extra;
  in >> cmd >> a >> b >> extra;
  std::vector<direction> dirs;
  if (cmd == "delay" && parse_directions(a, dirs) && extra.empty()) {
    try {
      std::size_t used = 0;
      long ms = std::stol(b, &used);
      if (used == b.size() && ms >= 0) {
        for (auto d : dirs) relay.set_delay(d, std::chrono::milliseconds(ms));
        return "ok";
      }
    } catch (const std::exception&) {
    }
    return "error delay wants a number of milliseconds >= 0";
  }
  otpp_test::link_mode mode;
  if (cmd == "mode" && parse_directions(a, dirs) && extra.empty()) {
    if (!otpp_test::parse_link_mode(b, mode)) return "error mode wants pass, drop or cut";
    for (auto d : dirs) relay.set_mode(d, mode);
    return "ok";
  }
  if (!b.empty() || (!a.empty() && cmd != "refuse")) return "error unknown command: " + line;
  if (cmd == "cut") {
    relay.cut_both();
  } else if (cmd == "heal") {
    relay.heal();
  } else if (cmd == "reset") {
    relay.reset_connections();
  } else if (cmd == "refuse" && (a == "on" || a == "off")) {
    relay.refuse_new(a == "on");
  } else if (cmd == "stats") {
    return "stats connections " + std::to_string(relay.connections()) + " accepted " +
           std::to_string(relay.accepted()) + " a_to_b " +
           std::to_string(relay.bytes(direction::a_to_b)) + " b_to_a " +
           std::to_string(relay.bytes(direction::b_to_a)) + " dropped_a_to_b " +
           std::to_string(relay.dropped(direction::a_to_b)) + " dropped_b_to_a " +
           std::to_string(relay.dropped(direction::b_to_a));
  } else if (cmd == "quit") {
    quit = true;
  } else {
    return "error unknown command: " + line;
  }
  return "ok";
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t target_port = 0, listen_port = 0;
  if (argc < 3 || argc > 4 || !parse_port(argv[2], target_port) ||
      (argc == 4 && !parse_port(argv[3], listen_port))) {
    std::fprintf(stderr, "usage: %s <target_host> <target_port> [listen_port]\n", argv[0]);
    return 2;
  }
  std::unique_ptr<otpp_test::tcp_relay> relay;
  try {
    relay = otpp_test::tcp_relay::start(argv[1], target_port, listen_port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "otpp_relay: %s\n", e.what());
    return 1;
  }
  std::cout << "port " << relay->port() << std::endl;  // endl: the script waits for it
  std::string line;
  bool quit = false;
  while (!quit && std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::cout << run(*relay, line, quit) << std::endl;
  }
  return 0;
}
