// One authenticated connection to a peer node. Created by an endpoint (endpoint.hpp),
// handed to the application once the handshake succeeded, always as a shared_ptr.
#pragma once

#include <array>
#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "otpp/result.hpp"
#include "otpp/spin_lock.hpp"
#include "otpp/transport/frame.hpp"
#include "otpp/transport/handshake.hpp"

namespace otpp::transport {

class connection;
namespace detail {
struct endpoint_state;
}

using connection_ptr = std::shared_ptr<connection>;
using connect_handler = std::function<void(result<connection_ptr>)>;

class connection : public std::enable_shared_from_this<connection> {
  struct passkey {};

 public:
  // Queues one frame. Thread-safe, never blocks; frames from one thread leave in call order.
  // The payload is copied before send returns (the writer MACs it with its record). The
  // caller's thread may itself make one non-blocking write: the frame of an idle connection,
  // or a 64 KiB batch of a stream sent from one of the node's I/O threads.
  //   invalid_argument   kind below kind::first_app (reserved for the transport)
  //   frame_too_large    payload larger than config::max_frame_size
  //   mailbox_full       the outgoing queue would exceed config::max_queue_bytes (overload:
  //                      nothing was queued; a frame is always accepted into an empty queue)
  //   connection_closed  the connection is closing or closed
  result<void> send(std::uint8_t kind, bytes_view payload);

  // Graceful close: refuses further sends, flushes what is queued, then closes.
  // on_down reports connection_closed ("closed locally"). Thread-safe, idempotent.
  void close();
  // Immediate close with the given reason (reported to on_down). Thread-safe, idempotent.
  void abort(failure reason);

  // Authenticated identity of the peer (valid once on_up / the connect handler ran).
  const std::string& peer_id() const noexcept { return peer_id_; }
  std::uint32_t peer_creation() const noexcept { return peer_creation_; }
  // The record protection both ends agreed on (valid once on_up / the connect handler ran).
  record_protection protection() const noexcept { return protection_; }
  // True when this node opened the TCP connection.
  bool initiated_locally() const noexcept { return initiator_; }
  bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
  // True once the connection began closing (its failure is being or has been reported).
  bool has_failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  bool uses_tls() const noexcept { return tls_.has_value(); }
  // Remote address as "ip:port" (empty if unknown).
  const std::string& remote_address() const noexcept { return remote_; }
  // Time any byte last arrived from the peer (heartbeats included): for failure detectors.
  std::chrono::steady_clock::time_point last_receive() const noexcept;
  // Bytes queued or being written.
  std::size_t queued_bytes() const;
  std::uint64_t frames_sent() const noexcept {
    return frames_sent_.load(std::memory_order_relaxed);
  }
  std::uint64_t frames_received() const noexcept {
    return frames_received_.load(std::memory_order_relaxed);
  }
  // Bytes through the socket (the handshake's included; with TLS, the plaintext).
  std::uint64_t bytes_sent() const noexcept { return bytes_sent_.load(std::memory_order_relaxed); }
  std::uint64_t bytes_received() const noexcept {
    return bytes_received_.load(std::memory_order_relaxed);
  }
  // Largest receive buffer this connection has held (bytes): it grows with the bytes that
  // actually arrived, never straight to a size a peer merely announced. Diagnostics, tests.
  std::size_t receive_buffer_peak() const noexcept {
    return rbuf_peak_.load(std::memory_order_relaxed);
  }

  ~connection();
  connection(passkey, std::shared_ptr<detail::endpoint_state> state, asio::ip::tcp::socket socket,
             bool initiator);
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

 private:
  friend class endpoint;
  friend struct detail::endpoint_state;
  enum class phase { tcp, tls, hello, wait_proof, wait_accept, established, closed };

  void start(connect_handler handler, std::string expected_peer);  // socket connected
  void start_tls();
  void start_handshake();
  void arm_handshake_timer();
  void on_read(const std::error_code& ec, std::size_t n);
  void do_read();
  void process_input();
  void on_handshake_frame(const frame_view& f);
  void on_hello(const frame_view& f);
  void on_proof(const frame_view& f);
  void on_accept(const frame_view& f);
  void establish(const std::vector<std::uint8_t>& accept);
  void enqueue_plain(std::uint8_t kind, const std::vector<std::uint8_t>& payload);
  void do_write();
  void run_write_job(std::uint64_t job);
  bool take_batch(bool direct);
  // Pieces written per write call at most (chunks of record_batch::chunk_size).
  static constexpr std::size_t max_gather = 16;
  std::size_t unwritten(std::array<bytes_view, max_gather>& out) const noexcept;
  std::size_t spare_chunks() const noexcept;
  // Who holds the write chain when it writes (write_batch).
  enum class writer {
    sender,         // a sender that started a chain on an idle connection: ends it when done
    stream_sender,  // a sender on a node thread that took a stream's chain over (cork_bytes)
    strand,         // the strand: a streaming kick, or the chain's next step
  };
  // One non-blocking write of everything queued, by the holder of the write chain; after a
  // complete write a stream (stream_sender, strand) keeps the chain for a job.
  void write_batch(writer by);
  void write_some();
  void on_write(const std::error_code& ec, std::size_t n);
  void release_handshake_slot();
  void fail(failure reason, bool flush = false);
  void close_socket();
  void arm_heartbeat();
  void on_heartbeat_tick();
  template <class F>
  void with_stream(F&& f);

  std::shared_ptr<detail::endpoint_state> state_;
  asio::any_io_executor ex_;  // a strand: every handler of this connection runs on it
  asio::ip::tcp::socket socket_;
  std::optional<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  asio::steady_timer timer_;
  const bool initiator_;
  std::string remote_;

  // Strand-only state.
  phase phase_ = phase::tcp;
  std::string expected_peer_;
  connect_handler connect_handler_;
  std::vector<std::uint8_t> my_hello_, peer_hello_;
  digest transcript_{};
  std::vector<std::uint8_t> channel_binding_;  // TLS exporter value (empty without TLS)
  std::string handshake_slot_;                 // source address of a counted inbound handshake
  bool holds_handshake_slot_ = false;
  record_opener opener_;
  record_sealer sealer_;  // used by the writer only (do_write runs on the strand)
  byte_buffer rbuf_;      // not zeroed as it grows: only bytes read into it are looked at
  std::size_t rbeg_ = 0, rend_ = 0, need_ = 0;
  record_batch wbuf_;     // being sealed or written
  std::size_t woff_ = 0;  // bytes of wbuf_ written so far
  bool close_after_flush_ = false;
  bool socket_closed_ = false;

  // Written once during the handshake (before publication).
  std::string peer_id_;
  std::uint32_t peer_creation_ = 0;
  record_protection protection_ = record_protection::hmac_sha256;

  // Send side, guarded by mu_.
  // A spin lock: held for one frame's copy into the queue or the writer's swap of it, and its
  // release, a plain store, does not wait for that copy to reach the cache (with a mutex that
  // wait was a fifth of a streaming sender's time).
  mutable otpp::spin_lock mu_;
  record_batch pending_;      // frames waiting for the writer (sealed by it, outside mu_)
  std::size_t inflight_ = 0;  // bytes of wbuf_
  bool writing_ = false;      // a write is scheduled or in flight
  bool send_open_ = false;    // established and not closing
  // Non-zero: writing_ is held by this job on the strand, which has not started (wbuf_ is
  // empty then); a sender may take the chain over by clearing it (send()).
  std::uint64_t write_job_ = 0;
  std::uint64_t write_jobs_ = 0;  // jobs numbered so far

  // When a sender last started a write chain (ns); chains closer than direct_gap_ns are a
  // stream: written from the strand in batches instead of directly (send()).
  static constexpr std::int64_t direct_gap_ns = 20000;
  // A streaming sender on one of the node's I/O threads writes its own batch once this much
  // is queued (send()): large enough to spread a write call over a thousand small frames,
  // small enough to stay in cache while it is sealed and written.
  static constexpr std::size_t cork_bytes = std::size_t{64} << 10;
  std::atomic<std::int64_t> last_direct_{0};
  // Guards the descriptor against close during a sender's direct write (write_batch).
  std::mutex fd_mu_;
  bool fd_closed_ = false;

  std::atomic<bool> open_{false};
  std::atomic<bool> failed_{false};  // fail() ran: the connection is closing or closed
  std::atomic<std::int64_t> last_receive_{0};
  std::atomic<std::int64_t> last_send_{0};
  // Last time the outgoing bytes moved (a write chain started or a write completed).
  std::atomic<std::int64_t> write_progress_{0};
  std::atomic<std::size_t> rbuf_peak_{0};
  std::atomic<std::uint64_t> frames_sent_{0};
  std::atomic<std::uint64_t> frames_received_{0};
  std::atomic<std::uint64_t> bytes_sent_{0};
  std::atomic<std::uint64_t> bytes_received_{0};
};

}  // namespace otpp::transport
