// tcp_relay: one io_context on one thread owns every socket and every setting; control
// methods run on that thread and wait, so a change is in effect when they return.
#include "otpp_test/tcp_relay.hpp"

#include <asio/connect.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <atomic>
#include <cstdio>
#include <deque>
#include <exception>
#include <future>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace otpp_test {
namespace {

using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
constexpr std::size_t read_size = 64 * 1024;

int index_of(direction d) {
  return d == direction::a_to_b ? 0 : 1;
}

// rst: linger 0 makes close() send RST, which peers see at once as a reset connection.
void close_socket(tcp::socket& s, bool rst) {
  if (!s.is_open()) return;
  std::error_code ec;
  if (rst) s.set_option(asio::socket_base::linger(true, 0), ec);
  s.close(ec);
}

}  // namespace

struct tcp_relay::impl {
  class connection;

  explicit impl(std::size_t max_queued) : max_queued_bytes(max_queued) {}

  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  tcp::resolver::results_type target;
  const std::size_t max_queued_bytes;
  std::uint16_t port = 0;  // set before the thread starts, constant after

  // Owned by the io thread.
  link_mode mode[2] = {link_mode::pass, link_mode::pass};
  steady::duration delay[2] = {};
  bool refusing = false;
  std::unordered_set<std::shared_ptr<connection>> live;

  // Read from any thread.
  std::atomic<std::size_t> open{0};
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> delivered[2] = {0, 0};
  std::atomic<std::uint64_t> dropped[2] = {0, 0};

  std::thread thread;

  // Runs f on the io thread and waits for it.
  template <class F>
  void run_on_io(F&& f) {
    std::promise<void> done;
    auto finished = done.get_future();
    asio::post(io, [&] {
      f();
      done.set_value();
    });
    finished.wait();
  }

  void accept_next();
  void apply_settings();  // after a mode or delay change
  void close_all();
  void shutdown();
};

// One relayed connection: the accepted client socket, a fresh socket to the target, and a
// pump per direction (read -> timed queue -> write).
class tcp_relay::impl::connection : public std::enable_shared_from_this<connection> {
 public:
  connection(impl& relay, tcp::socket client)
      : relay_(relay),
        client_(std::move(client)),
        server_(relay.io),
        pumps_{pump(0, client_, server_, relay.io), pump(1, server_, client_, relay.io)} {}

  void connect() {
    asio::async_connect(server_, relay_.target,
                        [self = shared_from_this()](std::error_code ec, const tcp::endpoint&) {
                          if (self->closed_) return;
                          if (ec) return self->close(true);  // target down: client sees a reset
                          self->connected_ = true;
                          std::error_code ignored;
                          // Latency is what tests measure: no Nagle on either side.
                          self->client_.set_option(tcp::no_delay(true), ignored);
                          self->server_.set_option(tcp::no_delay(true), ignored);
                          self->settings_changed();
                        });
  }

  // Re-reads the relay's settings: a drop discards what waits, a new delay re-times the
  // queue, a cut or pass stops or resumes reading and writing.
  void settings_changed() {
    if (!connected_ || closed_) return;
    for (int i = 0; i < 2; ++i) {
      auto& p = pumps_[i];
      if (relay_.mode[i] == link_mode::drop) discard_queue(p);
      if (p.waiting) p.timer.cancel();  // its handler re-times against the current delay
      maybe_write(p);
      maybe_read(p);
    }
  }

  void close(bool rst) {
    if (closed_) return;
    closed_ = true;
    close_socket(client_, rst);
    close_socket(server_, rst);
    for (auto& p : pumps_) p.timer.cancel();
    auto self = shared_from_this();  // erase may drop the last owner
    relay_.live.erase(self);
    relay_.open.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  struct chunk {
    steady::time_point read_at;  // due at read_at + the direction's current delay
    std::vector<char> data;
  };
  struct pump {
    pump(int i, tcp::socket& f, tcp::socket& t, asio::io_context& io)
        : index(i), from(f), to(t), buffer(new char[read_size]), timer(io) {}
    int index;
    tcp::socket& from;
    tcp::socket& to;
    std::unique_ptr<char[]> buffer;
    std::deque<chunk> queue;
    std::size_t queued = 0;
    bool reading = false, writing = false, waiting = false;
    bool eof = false, fin_sent = false;
    asio::steady_timer timer;
  };

  void maybe_read(pump& p) {
    if (closed_ || p.reading || p.eof || relay_.mode[p.index] == link_mode::cut) return;
    if (p.queued >= relay_.max_queued_bytes) return;  // backpressure: resumed by a write
    p.reading = true;
    p.from.async_read_some(asio::buffer(p.buffer.get(), read_size), [self = shared_from_this(), &p](
                                                                        std::error_code ec,
                                                                        std::size_t n) {
      p.reading = false;
      if (self->closed_) return;
      if (n > 0) {
        if (self->relay_.mode[p.index] == link_mode::drop) {
          self->relay_.dropped[p.index].fetch_add(n, std::memory_order_relaxed);
        } else {
          p.queue.push_back({steady::now(), std::vector<char>(p.buffer.get(), p.buffer.get() + n)});
          p.queued += n;
        }
      }
      if (ec == asio::error::eof) {
        p.eof = true;
      } else if (ec) {
        return self->close(true);  // a reset on one side is passed on as a reset
      }
      self->maybe_write(p);
      self->maybe_read(p);
    });
  }

  void maybe_write(pump& p) {
    // cut holds the queue; drop emptied it and holds a peer's close back too (silence).
    if (closed_ || p.writing || p.waiting || relay_.mode[p.index] != link_mode::pass) return;
    if (p.queue.empty()) {
      if (p.eof && !p.fin_sent) {
        p.fin_sent = true;
        std::error_code ignored;
        p.to.shutdown(tcp::socket::shutdown_send, ignored);
        if (pumps_[1 - p.index].fin_sent) close(false);  // both sides closed: done
      }
      return;
    }
    auto due = p.queue.front().read_at + relay_.delay[p.index];
    if (due > steady::now()) {
      p.waiting = true;
      p.timer.expires_at(due);
      p.timer.async_wait([self = shared_from_this(), &p](std::error_code) {
        p.waiting = false;
        self->maybe_write(p);
      });
      return;
    }
    p.writing = true;
    asio::async_write(p.to, asio::buffer(p.queue.front().data),
                      [self = shared_from_this(), &p](std::error_code ec, std::size_t n) {
                        p.writing = false;
                        if (self->closed_) return;
                        if (ec) return self->close(true);
                        self->relay_.delivered[p.index].fetch_add(n, std::memory_order_relaxed);
                        p.queued -= p.queue.front().data.size();
                        p.queue.pop_front();
                        self->maybe_write(p);
                        self->maybe_read(p);
                      });
  }

  // Keeps the chunk an in-flight write still reads from; its completion pops it.
  void discard_queue(pump& p) {
    std::size_t keep = p.writing ? 1 : 0;
    std::size_t discarded = 0;
    while (p.queue.size() > keep) {
      discarded += p.queue.back().data.size();
      p.queue.pop_back();
    }
    p.queued -= discarded;
    relay_.dropped[p.index].fetch_add(discarded, std::memory_order_relaxed);
  }

  impl& relay_;
  tcp::socket client_;
  tcp::socket server_;
  pump pumps_[2];
  bool connected_ = false;
  bool closed_ = false;
};

void tcp_relay::impl::accept_next() {
  acceptor.async_accept([this](std::error_code ec, tcp::socket s) {
    if (!acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors and the like: retry shortly instead of spinning.
      accept_retry.expires_after(std::chrono::milliseconds(50));
      accept_retry.async_wait([this](std::error_code e) {
        if (!e) accept_next();
      });
      return;
    }
    accepted.fetch_add(1, std::memory_order_relaxed);
    if (refusing) {
      close_socket(s, true);
    } else {
      auto c = std::make_shared<connection>(*this, std::move(s));
      live.insert(c);
      open.fetch_add(1, std::memory_order_relaxed);
      c->connect();
    }
    accept_next();
  });
}

void tcp_relay::impl::apply_settings() {
  // A copy: a connection whose both sides are done closes, and leaves `live`, right here.
  std::vector<std::shared_ptr<connection>> snapshot(live.begin(), live.end());
  for (auto& c : snapshot) c->settings_changed();
}

void tcp_relay::impl::close_all() {
  auto all = std::move(live);
  live.clear();
  for (auto& c : all) c->close(true);
}

void tcp_relay::impl::shutdown() {
  run_on_io([this] {
    std::error_code ignored;
    acceptor.close(ignored);
    accept_retry.cancel();
    close_all();
  });
  // Everything is closed or cancelled: run() returns once the aborted handlers have run.
  guard.reset();
  if (thread.joinable()) thread.join();
}

tcp_relay::tcp_relay(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

tcp_relay::~tcp_relay() {
  impl_->shutdown();
}

std::unique_ptr<tcp_relay> tcp_relay::start(relay_options o) {
  auto p = std::make_unique<impl>(o.max_queued_bytes);
  tcp::resolver resolver(p->io);
  p->target = resolver.resolve(o.target_host, std::to_string(o.target_port));
  auto local =
      *resolver.resolve(o.listen_host, std::to_string(o.listen_port), tcp::resolver::passive)
           .begin();
  p->acceptor.open(local.endpoint().protocol());
  // A relay restarted on a fixed port must not wait out TIME_WAIT.
  p->acceptor.set_option(tcp::acceptor::reuse_address(true));
  p->acceptor.bind(local.endpoint());
  p->acceptor.listen(asio::socket_base::max_listen_connections);
  p->port = p->acceptor.local_endpoint().port();
  p->accept_next();
  auto* raw = p.get();
  p->thread = std::thread([raw] {
    for (;;) {
      try {
        raw->io.run();
        return;
      } catch (const std::exception& e) {  // a bug in a handler: report, keep relaying
        std::fprintf(stderr, "tcp_relay: %s\n", e.what());
      }
    }
  });
  return std::unique_ptr<tcp_relay>(new tcp_relay(std::move(p)));
}

std::unique_ptr<tcp_relay> tcp_relay::start(std::string target_host, std::uint16_t target_port,
                                            std::uint16_t listen_port) {
  relay_options o;
  o.target_host = std::move(target_host);
  o.target_port = target_port;
  o.listen_port = listen_port;
  return start(std::move(o));
}

std::uint16_t tcp_relay::port() const {
  return impl_->port;
}

void tcp_relay::set_delay(direction d, std::chrono::milliseconds delay) {
  impl_->run_on_io([&] {
    impl_->delay[index_of(d)] = delay;
    impl_->apply_settings();
  });
}

void tcp_relay::set_mode(direction d, link_mode mode) {
  impl_->run_on_io([&] {
    impl_->mode[index_of(d)] = mode;
    impl_->apply_settings();
  });
}

void tcp_relay::cut_both() {
  impl_->run_on_io([&] {
    impl_->mode[0] = impl_->mode[1] = link_mode::cut;
    impl_->apply_settings();
  });
}

void tcp_relay::heal() {
  impl_->run_on_io([&] {
    impl_->mode[0] = impl_->mode[1] = link_mode::pass;
    impl_->apply_settings();
  });
}

void tcp_relay::reset_connections() {
  impl_->run_on_io([&] { impl_->close_all(); });
}

void tcp_relay::refuse_new(bool refuse) {
  impl_->run_on_io([&] { impl_->refusing = refuse; });
}

std::size_t tcp_relay::connections() const {
  return impl_->open.load();
}
std::uint64_t tcp_relay::accepted() const {
  return impl_->accepted.load();
}
std::uint64_t tcp_relay::bytes(direction d) const {
  return impl_->delivered[index_of(d)].load();
}
std::uint64_t tcp_relay::dropped(direction d) const {
  return impl_->dropped[index_of(d)].load();
}

bool parse_direction(const std::string& text, direction& out) {
  if (text != "a_to_b" && text != "b_to_a") return false;
  out = text == "a_to_b" ? direction::a_to_b : direction::b_to_a;
  return true;
}

bool parse_link_mode(const std::string& text, link_mode& out) {
  if (text == "pass") {
    out = link_mode::pass;
  } else if (text == "drop") {
    out = link_mode::drop;
  } else if (text == "cut") {
    out = link_mode::cut;
  } else {
    return false;
  }
  return true;
}

}  // namespace otpp_test
