#include "otpp/transport/connection.hpp"

#include <openssl/ssl.h>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/write.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "endpoint_state.hpp"
#include "otpp/log.hpp"

namespace otpp::transport {

namespace {
constexpr std::size_t initial_read_buffer = std::size_t{128} << 10;
constexpr std::size_t min_read_space = std::size_t{16} << 10;
constexpr std::size_t shrink_threshold = std::size_t{4} << 20;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string address_of(const asio::ip::tcp::socket& s) {
  std::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return {};
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::vector<std::uint8_t> encode_refusal(accept_status status) {
  accept_message m;
  m.status = static_cast<std::uint32_t>(status);
  return encode_accept(m);
}
}  // namespace

connection::connection(passkey, std::shared_ptr<detail::endpoint_state> state,
                       asio::ip::tcp::socket socket, bool initiator)
    : state_(std::move(state)),
      ex_(socket.get_executor()),
      socket_(std::move(socket)),
      timer_(ex_),
      initiator_(initiator) {
  last_receive_.store(now_ns(), std::memory_order_relaxed);
  last_send_.store(now_ns(), std::memory_order_relaxed);
  write_progress_.store(now_ns(), std::memory_order_relaxed);
}

connection::~connection() = default;

void connection::release_handshake_slot() {
  if (!holds_handshake_slot_) return;
  holds_handshake_slot_ = false;
  state_->release_handshake(handshake_slot_);
}

std::chrono::steady_clock::time_point connection::last_receive() const noexcept {
  return std::chrono::steady_clock::time_point(
      std::chrono::nanoseconds(last_receive_.load(std::memory_order_relaxed)));
}

std::size_t connection::queued_bytes() const {
  std::lock_guard lock(mu_);
  return pending_.size() + inflight_;
}

template <class F>
void connection::with_stream(F&& f) {
  if (tls_)
    f(*tls_);
  else
    f(socket_);
}

// ---------------------------------------------------------------------------------------
// Start: TCP is connected (or accepted).

void connection::start(connect_handler handler, std::string expected_peer) {
  connect_handler_ = std::move(handler);
  expected_peer_ = std::move(expected_peer);
  remote_ = address_of(socket_);
  std::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  arm_handshake_timer();
  if (state_->cfg.tls.enabled)
    start_tls();
  else
    start_handshake();
}

void connection::arm_handshake_timer() {
  timer_.expires_after(state_->cfg.handshake_timeout);
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->phase_ == phase::established || self->phase_ == phase::closed) return;
    self->fail(failure(errc::handshake_failed, "handshake timed out"));
  });
}

void connection::start_tls() {
  phase_ = phase::tls;
  auto& ctx = initiator_ ? *state_->tls_client : *state_->tls_server;
  tls_.emplace(socket_, ctx);
  const auto& opts = state_->cfg.tls;
  if (initiator_ && !opts.server_name.empty()) {
    SSL_set_tlsext_host_name(tls_->native_handle(), opts.server_name.c_str());
    tls_->set_verify_callback(asio::ssl::host_name_verification(opts.server_name));
  }
  tls_->async_handshake(
      initiator_ ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
      [self = shared_from_this()](const std::error_code& ec) {
        if (self->phase_ == phase::closed) return;
        if (ec) {
          self->fail(failure(errc::tls_error, "TLS handshake: " + ec.message()));
          return;
        }
        // Channel binding: both ends derive the same value from this TLS session only, and
        // it enters the handshake transcript (handshake.hpp).
        self->channel_binding_.resize(channel_binding_size);
        if (SSL_export_keying_material(self->tls_->native_handle(), self->channel_binding_.data(),
                                       channel_binding_size, channel_binding_label.data(),
                                       channel_binding_label.size(), nullptr, 0, 0) != 1) {
          self->fail(failure(errc::tls_error, "TLS exporter (channel binding) unavailable"));
          return;
        }
        self->start_handshake();
      });
}

void connection::start_handshake() {
  phase_ = phase::hello;
  hello_message hello;
  hello.node_id = state_->cfg.node_id;
  hello.creation = state_->cfg.creation;
  hello.protections = state_->cfg.record_protections;
  random_bytes(hello.challenge);
  my_hello_ = encode_hello(hello);
  enqueue_plain(kind::hello, my_hello_);
  do_read();
}

// ---------------------------------------------------------------------------------------
// Reading.

void connection::do_read() {
  if (phase_ == phase::closed) return;
  if (rbeg_ == rend_) {
    rbeg_ = rend_ = 0;
    if (rbuf_.size() > shrink_threshold && need_ <= initial_read_buffer) {
      rbuf_.release();
    }
  }
  // Until the peer is authenticated it gets a small buffer (handshake frames are <= 1 KiB).
  const bool up = phase_ == phase::established;
  const std::size_t space = up ? min_read_space : 512;
  const std::size_t base = up ? initial_read_buffer : 2048;
  const std::size_t have = rend_ - rbeg_;
  // The record length is read before the MAC can be checked: honour it only as its bytes
  // arrive (at most doubling what is buffered per step), so a peer that announces 60 MiB
  // and sends 10 bytes costs a small buffer, not 60 MiB of zeroed memory. Growing by
  // doubling keeps the copying amortised O(record size).
  const std::size_t need = std::max(std::min(need_, std::max(base, 2 * have + space)), have + 1);
  if (rbeg_ > 0 && (rbuf_.size() - rbeg_ < need || rbuf_.size() - rend_ < space)) {
    std::memmove(rbuf_.data(), rbuf_.data() + rbeg_, have);
    rend_ = have;
    rbeg_ = 0;
  }
  if (rbuf_.size() < std::max(need, rend_ + space)) {
    rbuf_.resize(std::max({need, rend_ + space, base}));
    if (rbuf_.capacity() > rbuf_peak_.load(std::memory_order_relaxed))
      rbuf_peak_.store(rbuf_.capacity(), std::memory_order_relaxed);
  }
  with_stream([&](auto& s) {
    s.async_read_some(asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_),
                      [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                        self->on_read(ec, n);
                      });
  });
}

void connection::on_read(const std::error_code& ec, std::size_t n) {
  if (phase_ == phase::closed) return;
  bytes_received_.fetch_add(n, std::memory_order_relaxed);
  if (ec) {
    const std::size_t partial = rend_ - rbeg_;
    if (partial > 0) {
      fail(failure(errc::malformed_frame, "truncated frame: peer closed after " +
                                              std::to_string(partial) + " bytes of a frame (" +
                                              ec.message() + ")"));
    } else if (phase_ != phase::established) {
      fail(failure(errc::handshake_failed, "peer closed during the handshake: " + ec.message()));
    } else {
      fail(failure(errc::connection_closed, "peer closed: " + ec.message()));
    }
    return;
  }
  rend_ += n;
  last_receive_.store(now_ns(), std::memory_order_relaxed);
  process_input();
  do_read();
}

void connection::process_input() {
  const connection_ptr self = shared_from_this();
  std::uint64_t delivered = 0;
  while (phase_ != phase::closed && rend_ > rbeg_) {
    const bytes_view avail(rbuf_.data() + rbeg_, rend_ - rbeg_);
    if (phase_ == phase::established) {
      const std::uint64_t seq = opener_.next_sequence();
      const record_step step = opener_.open(std::span(rbuf_.data() + rbeg_, rend_ - rbeg_));
      if (step.error == make_error_code(errc::unknown_frame_kind)) {
        // Nothing of a record holding a refused kind is delivered.
        fail(failure(errc::unknown_frame_kind, "frame kind " + std::to_string(step.kind)));
        break;
      }
      if (step.error) {
        fail(failure(step.error, "record #" + std::to_string(seq) + " rejected (" +
                                     std::string(to_string(opener_.protection())) +
                                     ", frame limit " + std::to_string(opener_.max_payload()) +
                                     " bytes)"));
        break;
      }
      if (step.consumed == 0) {
        need_ = step.needed;
        break;
      }
      rbeg_ += step.consumed;
      need_ = 0;
      // The record is authentic, well formed and holds accepted kinds only. body points into
      // rbuf_, which only do_read (after this loop) moves or resizes.
      frame_view f;
      for (frame_reader r(step.body); phase_ != phase::closed && r.next(f);) {
        if (f.kind == kind::heartbeat) continue;
        ++delivered;
        if (state_->events.on_frame) state_->events.on_frame(self, f);
      }
    } else {
      const decode_step step = decode_plain_frame(avail);
      if (step.error) {
        fail(failure(errc::handshake_failed,
                     "bad handshake frame: " +
                         make_error_code(static_cast<errc>(step.error.value())).message()));
        break;
      }
      if (step.consumed == 0) {
        need_ = step.needed;
        break;
      }
      rbeg_ += step.consumed;
      need_ = 0;
      on_handshake_frame(step.frame);
    }
  }
  if (delivered) frames_received_.fetch_add(delivered, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------
// Handshake.

void connection::on_handshake_frame(const frame_view& f) {
  switch (phase_) {
    case phase::hello:
      if (f.kind != kind::hello) break;
      on_hello(f);
      return;
    case phase::wait_proof:
      if (f.kind != kind::proof) break;
      on_proof(f);
      return;
    case phase::wait_accept:
      if (f.kind != kind::accept) break;
      on_accept(f);
      return;
    default:
      break;
  }
  fail(
      failure(errc::handshake_failed, "unexpected handshake frame kind " + std::to_string(f.kind)));
}

void connection::on_hello(const frame_view& f) {
  auto hello = parse_hello(f.payload);
  if (!hello) {
    fail(hello.fail(), true);
    return;
  }
  if (hello->node_id == state_->cfg.node_id) {
    fail(failure(errc::handshake_failed, "peer has our own node id " + hello->node_id));
    return;
  }
  if (initiator_ && !expected_peer_.empty() && hello->node_id != expected_peer_) {
    fail(failure(errc::handshake_failed,
                 "expected peer " + expected_peer_ + ", reached " + hello->node_id));
    return;
  }
  // Both ends see both offers (the HELLOs cross), so both agree, or both refuse with the
  // same clear error.
  const auto agreed = negotiate_protection(state_->cfg.record_protections, hello->protections);
  if (!agreed) {
    fail(failure(errc::protection_mismatch, "peer " + hello->node_id + ": this node accepts " +
                                                protection_list(state_->cfg.record_protections) +
                                                "; the peer offers " +
                                                protection_list(hello->protections)));
    return;
  }
  protection_ = *agreed;
  peer_id_ = hello->node_id;
  peer_creation_ = hello->creation;
  peer_hello_.assign(f.payload.begin(), f.payload.end());
  if (initiator_) {
    transcript_ = transcript_hash(my_hello_, peer_hello_, channel_binding_);
    if (expected_peer_.empty()) state_->add_pending(shared_from_this(), peer_id_);
    enqueue_plain(kind::proof, encode_proof(initiator_proof(state_->secret_bytes(), transcript_)));
    phase_ = phase::wait_accept;
  } else {
    transcript_ = transcript_hash(peer_hello_, my_hello_, channel_binding_);
    phase_ = phase::wait_proof;
  }
}

void connection::on_proof(const frame_view& f) {
  auto proof = parse_proof(f.payload);
  if (!proof) {
    fail(proof.fail());
    return;
  }
  const digest expected = initiator_proof(state_->secret_bytes(), transcript_);
  if (!constant_time_equal(expected, *proof)) {
    enqueue_plain(kind::accept, encode_refusal(accept_status::not_authorised));
    fail(failure(errc::not_authorised, "peer " + peer_id_ +
                                           " failed the challenge (different secret/cookie" +
                                           (tls_ ? ", or a relayed TLS channel)" : ")")),
         true);
    return;
  }
  connection_ptr victim;
  std::string why;
  if (const accept_status st = state_->decide_incoming(shared_from_this(), victim, why);
      st != accept_status::accepted) {
    enqueue_plain(kind::accept, encode_refusal(st));
    fail(failure(errc::connection_closed, why), true);
    return;
  }
  accept_message ok;
  ok.proof = acceptor_proof(state_->secret_bytes(), transcript_);
  establish(encode_accept(ok));
  if (victim) victim->abort(failure(errc::connection_closed, "superseded by a newer connection"));
}

void connection::on_accept(const frame_view& f) {
  auto acc = parse_accept(f.payload);
  if (!acc) {
    fail(acc.fail());
    return;
  }
  if (acc->status != static_cast<std::uint32_t>(accept_status::accepted)) {
    const std::error_code code = accept_status_error(acc->status);
    switch (static_cast<accept_status>(acc->status)) {
      case accept_status::duplicate_connection:
        fail(failure(code, "duplicate connection: peer " + peer_id_ +
                               " kept the connection opened by the lower node id"));
        break;
      case accept_status::not_authorised:
        fail(failure(code, "peer " + peer_id_ +
                               " refused our challenge response (different secret/cookie)"));
        break;
      case accept_status::endpoint_closing:
        fail(failure(code, "peer " + peer_id_ + " is shutting down"));
        break;
      default:
        fail(failure(code, "refused by peer " + peer_id_ + " with unknown status " +
                               std::to_string(acc->status)));
        break;
    }
    return;
  }
  const digest expected = acceptor_proof(state_->secret_bytes(), transcript_);
  if (!constant_time_equal(expected, acc->proof)) {
    fail(failure(errc::not_authorised, "peer " + peer_id_ + " failed the challenge"));
    return;
  }
  connection_ptr victim = state_->establish_outgoing(shared_from_this());
  establish({});
  if (victim) victim->abort(failure(errc::connection_closed, "superseded by a newer connection"));
}

// Acceptor: `accept` is the ACCEPT payload; it is queued ahead of any sealed frame but only
// leaves once this side is fully up (is_open, in the table), so the peer never sees the
// connection up before we do.
void connection::establish(const std::vector<std::uint8_t>& accept) {
  const session_keys keys = derive_session_keys(state_->secret_bytes(), transcript_, protection_);
  const auto in_dir =
      initiator_ ? direction::acceptor_to_initiator : direction::initiator_to_acceptor;
  const auto out_dir =
      initiator_ ? direction::initiator_to_acceptor : direction::acceptor_to_initiator;
  opener_ = record_opener(initiator_ ? keys.acceptor_to_initiator : keys.initiator_to_acceptor,
                          in_dir, state_->cfg.max_frame_size, protection_);
  std::bitset<256> kinds;
  for (std::size_t k = kind::first_app; k < 256; ++k)
    if (state_->cfg.accepted_kinds.test(k)) kinds.set(k);
  kinds.set(kind::heartbeat);
  opener_.accept_kinds(kinds);
  // Set before any record can be queued (send_open_ below); only the writer uses it.
  sealer_ = record_sealer(initiator_ ? keys.initiator_to_acceptor : keys.acceptor_to_initiator,
                          out_dir, protection_);
  release_handshake_slot();
  bool kick = false;
  {
    std::lock_guard lock(mu_);
    if (!accept.empty()) {
      pending_.add_plain_frame(kind::accept, accept);
      if (!writing_) kick = writing_ = true;
    }
    send_open_ = true;
  }
  phase_ = phase::established;
  open_.store(true, std::memory_order_release);
  if (kick) do_write();
  std::vector<std::uint8_t>().swap(my_hello_);
  std::vector<std::uint8_t>().swap(peer_hello_);
  timer_.cancel();
  arm_heartbeat();
  const connection_ptr self = shared_from_this();
  if (state_->events.on_up) state_->events.on_up(self);
  if (connect_handler_) {
    auto h = std::move(connect_handler_);
    connect_handler_ = nullptr;
    if (phase_ == phase::established) {
      h(self);
    } else {
      h(failure(errc::connection_closed, "closed before the connect handler ran"));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Writing.

result<void> connection::send(std::uint8_t k, bytes_view payload) {
  if (k < kind::first_app) return failure(errc::invalid_argument, "reserved frame kind");
  if (payload.size() > state_->cfg.max_frame_size)
    return failure(errc::frame_too_large, std::to_string(payload.size()) + " bytes");
  const std::size_t size = record_batch::cost(payload.size());
  bool kick = false, steal = false;
  {
    std::lock_guard lock(mu_);
    if (!send_open_) return failure(errc::connection_closed);
    const std::size_t queued = pending_.size() + inflight_;
    if (queued > 0 && queued + size > state_->cfg.max_queue_bytes)
      return failure(errc::mailbox_full,
                     "outgoing queue holds " + std::to_string(queued) + " bytes");
    pending_.add_frame(k, payload);
    // Counted under the lock, so a plain load and store do (an atomic add would be one more
    // locked instruction per frame).
    frames_sent_.store(frames_sent_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (!writing_) {
      kick = writing_ = true;
      // A new write chain: the stall clock starts now, not at the last (old) write.
      write_progress_.store(now_ns(), std::memory_order_relaxed);
    } else if (write_job_ != 0 && pending_.size() >= cork_bytes &&
               state_->io.get_executor().running_in_this_thread()) {
      // A sender on one of the node's I/O threads filled a whole write while the chain's next
      // step, a job, has not started (with one thread it cannot start before this sender's
      // handler returns): the sender takes the chain and seals and writes the batch itself
      // while its bytes are still in its cache, instead of letting megabytes pile up that are
      // then sealed and written from memory (the 64 B stream: 1.5x the frames per second with
      // AES-GCM). A foreign thread leaves the write to the strand, which seals and writes on
      // another core while the sender copies more.
      write_job_ = 0;
      steal = true;
    }
  }
  // last_send_ (heartbeat idleness) is stamped by the writer, once per batch.
  if (steal) {
    write_batch(writer::stream_sender);
    // Still a stream: the sender's next chain is a batch, not a direct write of its own.
    last_direct_.store(now_ns(), std::memory_order_relaxed);
  } else if (kick) {
    // Direct only when this connection has not just started a chain: a sender streaming
    // frames (a chain per frame, each a syscall) is better served by the strand, which
    // gathers everything queued meanwhile into one write. A request/reply exchange starts a
    // chain per round trip, far apart, and writes directly.
    const std::int64_t now = now_ns();
    const bool streaming = now - last_direct_.load(std::memory_order_relaxed) < direct_gap_ns;
    if (tls_ || streaming) {
      if (!tls_) last_direct_.store(now, std::memory_order_relaxed);
      asio::dispatch(ex_, [self = shared_from_this()] { self->do_write(); });
    } else {
      last_direct_.store(now, std::memory_order_relaxed);
      write_batch(writer::sender);
    }
  }
  return {};
}

// The holder of a write chain (it holds the writing_ token, so wbuf_ and sealer_ are its
// alone) seals the batch and tries one non-blocking write. A sender that starts a chain on an
// idle connection does so on its own thread, and that is the whole write: no hop to the
// connection's strand, which would cost a thread wake-up on each end of a round trip.
// Whatever does not fit in the socket buffer is handed to the strand, which finishes the
// chain with async writes. (TLS streams are not thread-safe: they always write from the
// strand, asynchronously.)
void connection::write_batch(writer by) {
  const bool on_strand = by == writer::strand;
  if (!take_batch(!on_strand)) {
    if (on_strand && close_after_flush_) close_socket();  // the chain ended: a flush is done
    return;
  }
  ssize_t n = -1;
  {
    // close_socket() closes the descriptor under fd_mu_: it cannot be closed (and its number
    // reused) during this write.
    std::lock_guard fd(fd_mu_);
    if (!fd_closed_) {
      std::array<bytes_view, max_gather> parts;
      const std::size_t count = unwritten(parts);
      iovec iov[max_gather];
      for (std::size_t i = 0; i < count; ++i)
        iov[i] = {const_cast<std::uint8_t*>(parts[i].data()), parts[i].size()};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = count;
      n = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  }
  if (n > 0) {
    woff_ = static_cast<std::size_t>(n);
    bytes_sent_.fetch_add(woff_, std::memory_order_relaxed);
  }
  if (woff_ == wbuf_.size()) {
    wbuf_.clear(spare_chunks());
    std::uint64_t job = 0;
    {
      std::lock_guard lock(mu_);
      inflight_ = 0;
      // Frames queued meanwhile go out even if a close came since: they were accepted while
      // the connection was open, and a closing flush waits for them (a node's leave frame,
      // queued behind this write, was lost otherwise). The strand stops at a closed socket.
      // A stream keeps the chain until the job runs, as an async write keeps it until
      // its completion runs: what senders queue meanwhile leaves in one batch.
      if (by != writer::sender || !pending_.empty())
        job = write_job_ = ++write_jobs_;
      else
        writing_ = false;
    }
    if (job != 0) {
      // Through the node's queue into the strand, as an async write's completion goes: a job
      // posted on the strand itself ran right after this handler (on the strand), ending the
      // chain before other threads' senders queued more, so each batch was smaller
      // (remote.call_c64 lost about a fifth of its calls per second).
      asio::post(state_->io, [self = shared_from_this(), job] {
        asio::dispatch(self->ex_, [self, job] { self->run_write_job(job); });
      });
    } else if (failed_.load(std::memory_order_acquire)) {
      // A close waiting for the flush.
      asio::post(ex_, [self = shared_from_this()] {
        if (self->close_after_flush_) self->close_socket();
      });
    }
    return;
  }
  // Partial write, EAGAIN, or an error (which the async write reports in turn).
  if (on_strand) {
    write_some();  // do_write checked the socket is open, and only the strand closes it
    return;
  }
  asio::post(ex_, [self = shared_from_this()] {
    if (self->socket_closed_) {
      self->on_write(asio::error::operation_aborted, 0);
      return;
    }
    self->write_some();
  });
}

void connection::enqueue_plain(std::uint8_t k, const std::vector<std::uint8_t>& payload) {
  bool kick = false;
  {
    std::lock_guard lock(mu_);
    pending_.add_plain_frame(k, payload);
    if (!writing_) kick = writing_ = true;
  }
  if (kick) asio::dispatch(ex_, [self = shared_from_this()] { self->do_write(); });
}

// The chain's next step on the strand, unless a sender took the chain over meanwhile.
void connection::run_write_job(std::uint64_t job) {
  {
    std::lock_guard lock(mu_);
    if (write_job_ != job) return;
    write_job_ = 0;
  }
  do_write();
}

// The holder of the chain, on the strand: writes everything queued. Without TLS the first
// try is a plain non-blocking write (the rest, if any, goes on asynchronously); a TLS stream
// writes asynchronously only.
void connection::do_write() {
  if (socket_closed_) return;
  if (!tls_) {
    write_batch(writer::strand);
    return;
  }
  if (take_batch(false)) write_some();
}

// The holder of the write chain takes everything queued and seals it (false: nothing to
// write, and the chain ends). `direct`: a sender's direct write, which also stops once the
// connection no longer accepts sends.
bool connection::take_batch(bool direct) {
  {
    std::lock_guard lock(mu_);
    if (pending_.empty()) {
      writing_ = false;
      return false;
    }
    if (direct && !send_open_) {
      // Closed since this sender started the chain: the strand writes what was queued before
      // (a flushing close waits for it) or drops it at a closed socket; not this thread.
      asio::post(ex_, [self = shared_from_this()] { self->do_write(); });
      return false;
    }
    wbuf_.swap(pending_);
    inflight_ = wbuf_.size();
  }
  // A direction whose sequence numbers are used up closes rather than reuse a nonce
  // (2^64 records: unreachable in practice, but the limit must hold by construction).
  if (wbuf_.records() > sealer_.records_left()) {
    wbuf_.clear();  // before giving up the token: wbuf_ is the token holder's
    {
      std::lock_guard lock(mu_);
      inflight_ = 0;
      writing_ = false;
      send_open_ = false;
    }
    abort(failure(errc::connection_closed, "record sequence exhausted: reconnect for new keys"));
    return false;
  }
  // The batch is ours now: protect its records outside the lock (senders keep appending to
  // the fresh pending_ meanwhile). Only the chain's holder uses sealer_, so the record
  // sequence follows the byte order on the wire.
  wbuf_.seal(sealer_);
  const std::int64_t now = now_ns();
  last_send_.store(now, std::memory_order_relaxed);
  write_progress_.store(now, std::memory_order_relaxed);
  woff_ = 0;
  return true;
}

// The part of wbuf_ not written yet (from woff_), as up to max_gather pieces.
std::size_t connection::unwritten(std::array<bytes_view, max_gather>& out) const noexcept {
  std::size_t n = 0, skip = woff_;
  for (std::size_t i = 0; i < wbuf_.pieces() && n < max_gather; ++i) {
    const bytes_view p = wbuf_.piece(i);
    if (skip >= p.size()) {
      skip -= p.size();
      continue;
    }
    out[n++] = p.subspan(skip);
    skip = 0;
  }
  return n;
}

// A busy connection keeps the chunks its batches used (the heartbeat tick trims them once
// it is idle); without heartbeats there is no tick, so batches keep only a few.
std::size_t connection::spare_chunks() const noexcept {
  return state_->cfg.heartbeat_interval.count() > 0 ? record_batch::all
                                                    : record_batch::max_spare_chunks;
}

// The batch leaves through write_some steps rather than one async_write, so that every
// partial write counts as progress: a slow reader of a large batch is not a stalled one.
void connection::write_some() {
  // A gather write of the batch's chunks (a TLS stream takes the first piece per call).
  std::array<bytes_view, max_gather> parts;
  const std::size_t count = unwritten(parts);
  std::array<asio::const_buffer, max_gather> buffers;  // unused entries stay empty
  for (std::size_t i = 0; i < count; ++i)
    buffers[i] = asio::buffer(parts[i].data(), parts[i].size());
  with_stream([&](auto& s) {
    s.async_write_some(buffers,
                       [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                         self->on_write(ec, n);
                       });
  });
}

void connection::on_write(const std::error_code& ec, std::size_t n) {
  if (ec) {
    {
      std::lock_guard lock(mu_);
      inflight_ = 0;
      writing_ = false;
      send_open_ = false;
    }
    if (phase_ != phase::closed) {
      fail(failure(errc::connection_closed, "write failed: " + ec.message()));
    }
    close_socket();
    return;
  }
  woff_ += n;
  bytes_sent_.fetch_add(n, std::memory_order_relaxed);
  if (n > 0) write_progress_.store(now_ns(), std::memory_order_relaxed);
  if (woff_ < wbuf_.size()) {
    write_some();
    return;
  }
  wbuf_.clear(spare_chunks());
  bool more;
  {
    std::lock_guard lock(mu_);
    inflight_ = 0;
    more = !pending_.empty() && !socket_closed_;
    // The write chain ends here unless more is queued; the next send() starts a new one
    // (writing_ is the token: exactly one chain at a time, so wbuf_ is never swapped while a
    // write is in flight).
    if (!more) writing_ = false;
  }
  if (!more) {
    if (close_after_flush_) close_socket();
    return;
  }
  do_write();
}

// ---------------------------------------------------------------------------------------
// Heartbeats and closing.

void connection::arm_heartbeat() {
  if (state_->cfg.heartbeat_interval.count() <= 0) return;
  timer_.expires_after(state_->cfg.heartbeat_interval);
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->phase_ != phase::established) return;
    self->on_heartbeat_tick();
  });
}

void connection::on_heartbeat_tick() {
  const std::int64_t now = now_ns();
  const auto& cfg = state_->cfg;
  const auto silence =
      std::chrono::nanoseconds(now - last_receive_.load(std::memory_order_relaxed));
  if (silence > cfg.silence_timeout) {
    fail(failure(
        errc::heartbeat_timeout,
        "no data from " + peer_id_ + " for " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silence).count()) +
            " ms"));
    return;
  }
  bool busy;
  {
    std::lock_guard lock(mu_);
    busy = writing_;
    if (!busy && now - write_progress_.load(std::memory_order_relaxed) >
                     std::chrono::nanoseconds(cfg.heartbeat_interval).count()) {
      // Idle for a tick: give back the chunks a burst left (wbuf_ is nobody's without the
      // writing_ token).
      pending_.trim(record_batch::max_spare_chunks);
      wbuf_.trim(record_batch::max_spare_chunks);
    }
  }
  if (cfg.write_stall_timeout.count() > 0) {
    const auto stalled =
        std::chrono::nanoseconds(now - write_progress_.load(std::memory_order_relaxed));
    if (busy && stalled > cfg.write_stall_timeout) {
      // Heartbeats prove the peer alive, not that it reads: without this a peer that never
      // reads keeps the connection (and every sender's mailbox_full) forever.
      fail(failure(errc::write_stalled,
                   "no write progress to " + peer_id_ + " for " +
                       std::to_string(
                           std::chrono::duration_cast<std::chrono::milliseconds>(stalled).count()) +
                       " ms with " + std::to_string(queued_bytes()) +
                       " bytes queued: the peer does not read"));
      return;
    }
  }
  const auto idle = std::chrono::nanoseconds(now - last_send_.load(std::memory_order_relaxed));
  if (idle >= cfg.heartbeat_interval / 2) {
    bool kick = false;
    {
      std::lock_guard lock(mu_);
      if (send_open_) {
        pending_.add_frame(kind::heartbeat, {});  // control frame: not subject to the bound
        if (!writing_) {
          kick = writing_ = true;
          write_progress_.store(now, std::memory_order_relaxed);
        }
      }
    }
    last_send_.store(now, std::memory_order_relaxed);
    if (kick) do_write();
  }
  arm_heartbeat();
}

void connection::close() {
  asio::dispatch(ex_, [self = shared_from_this()] {
    if (self->phase_ == phase::closed) return;
    if (self->phase_ != phase::established) {
      self->fail(failure(errc::connection_closed, "closed locally"));
      return;
    }
    self->fail(failure(errc::connection_closed, "closed locally"), true);
  });
}

void connection::abort(failure reason) {
  asio::dispatch(ex_, [self = shared_from_this(), reason = std::move(reason)]() mutable {
    self->fail(std::move(reason));
  });
}

void connection::fail(failure reason, bool flush) {
  if (phase_ == phase::closed) return;
  const bool was_established = phase_ == phase::established;
  phase_ = phase::closed;
  failed_.store(true, std::memory_order_release);
  open_.store(false, std::memory_order_release);
  bool writes_pending;
  {
    std::lock_guard lock(mu_);
    send_open_ = false;
    writes_pending = writing_;
  }
  timer_.cancel();
  release_handshake_slot();
  // Ordinary ends of a connection are informational; every rejected input is a warning.
  // Unauthenticated inbound connections cost an attacker nothing to open and close, so
  // their lines are rate-limited (on_rejected still reports each one).
  const bool ordinary = reason.code == make_error_code(errc::connection_closed);
  std::uint64_t suppressed = 0;
  bool log_now = true;
  if (!initiator_ && !was_established) {
    std::lock_guard lock(state_->mu);
    log_now = state_->may_log(state_->handshake_log, suppressed);
  }
  if (log_now)
    otpp::log(ordinary ? log_level::info : log_level::warning, "transport", "connection ",
              initiator_ ? "to " : "from ", peer_id_.empty() ? remote_ : peer_id_, " (", remote_,
              ") closed: ", reason.message(),
              suppressed ? " (" + std::to_string(suppressed) +
                               " lines about failed inbound handshakes suppressed)"
                         : std::string());
  if (flush && writes_pending) {
    close_after_flush_ = true;
    // Do not wait forever for a peer that does not read.
    timer_.expires_after(std::chrono::seconds(2));
    timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
      if (!ec) self->close_socket();
    });
  } else {
    close_socket();
  }
  state_->remove(this, peer_id_);
  const connection_ptr self = shared_from_this();
  if (was_established) {
    if (state_->events.on_down) state_->events.on_down(self, reason);
  } else if (connect_handler_) {
    auto h = std::move(connect_handler_);
    connect_handler_ = nullptr;
    h(std::move(reason));
  } else if (!initiator_ && state_->events.on_rejected) {
    state_->events.on_rejected(reason, remote_);
  }
}

void connection::close_socket() {
  if (socket_closed_) return;
  socket_closed_ = true;
  timer_.cancel();
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  std::lock_guard fd(fd_mu_);  // not while a sender writes on it directly
  fd_closed_ = true;
  socket_.close(ec);
}

}  // namespace otpp::transport
