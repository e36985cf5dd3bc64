// A TCP relay that tests put between two nodes to simulate network faults: added latency,
// silence, a clean pause of one or both directions, connection resets and refused connects.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace otpp_test {

// a_to_b: from the client that connected to the relay towards the target;
// b_to_a: from the target back to that client.
enum class direction { a_to_b, b_to_a };

// What one direction of every relayed connection does with the bytes it is given.
enum class link_mode {
  // Forwards bytes (after the configured delay).
  pass,
  // Reads and discards bytes, including any still waiting out their delay: the sender's
  // writes succeed and the receiver hears nothing (a peer's close is held back too). TCP has
  // no holes, so the receiver's stream is corrupt if the direction later passes again: use
  // drop for "silence, then the connection dies" (followed by reset_connections(), or the
  // nodes' own heartbeat timeouts).
  drop,
  // Stops reading and holds anything already read: bytes pile up in kernel buffers, then the
  // sender's writes block, and the connection stays open (a blackhole, or a peer under
  // SIGSTOP). Switching back to pass delivers everything in order: a clean pause. Partition
  // tests typically cut both directions, then heal() or reset_connections().
  cut,
};

struct relay_options {
  std::string target_host = "127.0.0.1";  // resolved once, at start
  std::uint16_t target_port = 0;
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;  // 0: an ephemeral port, see port()
  // Bytes one direction of one connection may hold while they wait out their delay (or a
  // cut); beyond it the relay stops reading that direction (backpressure to the sender).
  std::size_t max_queued_bytes = std::size_t{16} << 20;
};

// Listens and forwards every accepted connection to the target on a fresh connection. Runs
// its own io_context on its own thread; every method may be called from any thread. Control
// methods return once the change is in effect on every connection (bytes already handed to
// the kernel still arrive), and apply to connections accepted later too. A side's close is
// passed on as a close and a reset as a reset (a target that is down resets the client at
// once), except in a direction that is cut or dropped: there nothing is heard.
class tcp_relay {
 public:
  // Throws std::system_error when the target does not resolve or the listen port is taken.
  static std::unique_ptr<tcp_relay> start(relay_options options);
  static std::unique_ptr<tcp_relay> start(std::string target_host, std::uint16_t target_port,
                                          std::uint16_t listen_port = 0);

  // Stops the relay's thread and closes every connection (with RST) and the listener.
  ~tcp_relay();
  tcp_relay(const tcp_relay&) = delete;
  tcp_relay& operator=(const tcp_relay&) = delete;

  std::uint16_t port() const;  // the listening port

  // Added one-way latency: bytes leave the relay `delay` after it read them. A change applies
  // to bytes still waiting in the relay too (lowering it to 0 releases them at once); order
  // is always kept.
  void set_delay(direction d, std::chrono::milliseconds delay);
  void set_mode(direction d, link_mode mode);
  void cut_both();  // both directions cut
  void heal();      // both directions pass (delays are left as they are)

  // Closes every relayed connection on both sides with RST; the listener stays open.
  void reset_connections();
  // true: new connections are accepted and reset at once, never reaching the target (a
  // reconnect that fails immediately); existing connections are untouched.
  void refuse_new(bool refuse);

  std::size_t connections() const;           // relayed connections currently open
  std::uint64_t accepted() const;            // connections accepted so far (refused ones too)
  std::uint64_t bytes(direction d) const;    // bytes delivered to the receiving side
  std::uint64_t dropped(direction d) const;  // bytes discarded by drop

 private:
  struct impl;
  explicit tcp_relay(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

// Parses "a_to_b" / "b_to_a" and "pass" / "drop" / "cut" (for the standalone tool).
bool parse_direction(const std::string& text, direction& out);
bool parse_link_mode(const std::string& text, link_mode& out);

}  // namespace otpp_test
