// Introspection service: a node_service per node. It answers on cluster channel `introspect`
// and keeps the requests this node sent (one timer each). Frames are msgpack arrays:
//   request: [1, 1, id, kind, args (map)]
//   reply:   [1, 2, id, status, reason, body (any)]
// A reader ignores fields past the ones it knows, so later versions append. Frames come from
// authenticated peers but are still parsed with bounded limits: a malformed one is counted
// in the log and dropped (a request whose id is readable is answered malformed_request).
#include "otpp/registry/introspect.hpp"

#include <algorithm>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include <asio/post.hpp>

#include "otpp/call.hpp"
#include "otpp/cluster/cluster.hpp"
#include "otpp/log.hpp"
#include "otpp/registry.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/registry/global.hpp"
#include "otpp/registry/groups.hpp"

#ifndef OTPP_VERSION
#define OTPP_VERSION "unknown"
#endif

namespace otpp::introspect {

namespace {

constexpr std::uint32_t wire_version = 1;
enum class op : std::uint8_t { request = 1, reply = 2 };

// Pinned wire values of the request kinds and of the answers' status (never errc numbers:
// those may be renumbered, these may not).
enum class kind : std::uint8_t {
  summary = 1,
  processes = 2,
  members = 3,
  globals = 4,
  groups = 5,
  call = 6,
  cast = 7,
  stop = 8,
};
enum class status : std::uint8_t {
  ok = 0,
  timeout = 1,
  noproc = 2,
  nodedown = 3,
  bad_message = 4,
  exit = 5,
  not_authorised = 6,
  mailbox_full = 7,
  node_stopped = 8,
  invalid_argument = 9,
  malformed_request = 10,
  unsupported_version = 11,
  unknown_request = 12,
  no_reply = 13,
  not_serializable = 14,
  other = 255,  // an error this version cannot name: the reason text carries it
};

status to_status(const std::error_code& e) {
  if (e.category() != error_category()) return status::other;
  switch (static_cast<errc>(e.value())) {
    case errc::ok:
      return status::ok;
    case errc::timeout:
      return status::timeout;
    case errc::noproc:
      return status::noproc;
    case errc::nodedown:
      return status::nodedown;
    case errc::bad_message:
      return status::bad_message;
    case errc::exit:
      return status::exit;
    case errc::not_authorised:
      return status::not_authorised;
    case errc::mailbox_full:
      return status::mailbox_full;
    case errc::node_stopped:
      return status::node_stopped;
    case errc::invalid_argument:
      return status::invalid_argument;
    case errc::malformed_frame:
      return status::malformed_request;
    case errc::version_mismatch:
      return status::unsupported_version;
    case errc::not_found:
      return status::unknown_request;
    case errc::no_reply:
      return status::no_reply;
    case errc::not_serializable:
      return status::not_serializable;
    default:
      return status::other;
  }
}

failure to_failure(std::uint64_t s, std::string reason) {
  switch (static_cast<status>(s)) {
    case status::ok:
      return failure(errc::ok, std::move(reason));
    case status::timeout:
      return failure(errc::timeout, std::move(reason));
    case status::noproc:
      return failure(errc::noproc, std::move(reason));
    case status::nodedown:
      return failure(errc::nodedown, std::move(reason));
    case status::bad_message:
      return failure(errc::bad_message, std::move(reason));
    case status::exit:
      return failure(errc::exit, std::move(reason));
    case status::not_authorised:
      return failure(errc::not_authorised, std::move(reason));
    case status::mailbox_full:
      return failure(errc::mailbox_full, std::move(reason));
    case status::node_stopped:
      return failure(errc::node_stopped, std::move(reason));
    case status::invalid_argument:
      return failure(errc::invalid_argument, std::move(reason));
    case status::malformed_request:
      return failure(errc::malformed_frame, std::move(reason));
    case status::unsupported_version:
      return failure(errc::version_mismatch, std::move(reason));
    case status::unknown_request:
      return failure(errc::not_found, std::move(reason));
    case status::no_reply:
      return failure(errc::no_reply, std::move(reason));
    case status::not_serializable:
      return failure(errc::not_serializable, std::move(reason));
    default:
      break;
  }
  return failure(errc::invalid_argument, "status " + std::to_string(s) + ": " + reason);
}

std::string_view kind_name(kind k) {
  switch (k) {
    case kind::summary:
      return "summary";
    case kind::processes:
      return "processes";
    case kind::members:
      return "members";
    case kind::globals:
      return "globals";
    case kind::groups:
      return "groups";
    case kind::call:
      return "call";
    case kind::cast:
      return "cast";
    case kind::stop:
      return "stop";
  }
  return "unknown";
}

struct call_args {
  std::string to;
  msgpack::object message;
  std::uint64_t timeout_ms = 5000;
  MSGPACK_DEFINE_MAP(to, message, timeout_ms)
};

std::int64_t millis_since(time_point now, time_point then) {
  if (then == time_point{} || then > now) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - then).count();
}

// A body packed on its own (appended to a reply frame as is).
using packed = std::shared_ptr<msgpack::sbuffer>;
template <class T>
packed pack_body(const T& value) {
  auto out = std::make_shared<msgpack::sbuffer>();
  msgpack::pack(*out, value);
  return out;
}

msgpack::sbuffer encode_request(std::uint64_t id, kind k, const msgpack::sbuffer& args) {
  msgpack::sbuffer out;
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(5);
  pk.pack(wire_version);
  pk.pack(static_cast<std::uint8_t>(op::request));
  pk.pack(id);
  pk.pack(static_cast<std::uint8_t>(k));
  out.write(args.data(), args.size());
  return out;
}

msgpack::sbuffer encode_reply(std::uint64_t id, const result<packed>& r) {
  msgpack::sbuffer out;
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_array(6);
  pk.pack(wire_version);
  pk.pack(static_cast<std::uint8_t>(op::reply));
  pk.pack(id);
  if (r) {
    pk.pack(static_cast<std::uint8_t>(status::ok));
    pk.pack(std::string_view{});
    out.write((*r)->data(), (*r)->size());
  } else {
    pk.pack(static_cast<std::uint8_t>(to_status(r.fail().code)));
    // An error of another category travels as its text.
    auto reason = to_status(r.fail().code) == status::other ? r.fail().message() : r.fail().reason;
    pk.pack(reason);
    pk.pack_nil();
  }
  return out;
}

const msgpack::object& at(const msgpack::object& a, std::uint32_t i) {
  return a.via.array.ptr[i];
}

struct pending_request {
  node_atom peer;
  std::uint32_t creation = 0;
  kind what = kind::summary;
  std::function<void(result<msgpack::object_handle>)> done;
  timer_ref timer;
};

class core : public std::enable_shared_from_this<core> {
 public:
  explicit core(node& n) : node_(n) {}

  result<void> serve(serve_options o) {
    {
      std::lock_guard lock(mu_);
      options_ = o;
      serving_ = true;
    }
    if (!open_channel()) return failure(errc::nodedown, node_.name() + " has not joined a cluster");
    return {};
  }

  serve_options options() {
    std::lock_guard lock(mu_);
    return options_;
  }

  // ---- answers (this node's, for a peer or a local caller)
  void answer(kind k, const msgpack::object& args, std::string_view asker,
              std::function<void(result<packed>)> reply) {
    const auto o = options();
    try {
      switch (k) {
        case kind::summary:
          return reply(pack_body(summary(node_)));
        case kind::processes: {
          process_query q;
          if (args.type == msgpack::type::MAP) args.convert(q);
          if (q.limit == 0 || q.limit > o.max_processes) q.limit = o.max_processes;
          return reply(pack_body(processes(node_, q)));
        }
        case kind::members:
          return reply(pack_body(members(node_)));
        case kind::globals:
          return reply(pack_body(globals(node_)));
        case kind::groups:
          return reply(pack_body(groups(node_)));
        case kind::call:
        case kind::cast: {
          if (!o.allow_call) {
            return reply(failure(errc::not_authorised, "this node serves no calls for peers"));
          }
          call_args a;
          args.convert(a);
          auto to = resolve(a.to);
          if (!to) return reply(to.fail());
          if (a.message.type != msgpack::type::MAP) {
            return reply(failure(errc::bad_message, "a message is a map with a \"type\" field"));
          }
          auto message = msgpack::clone(a.message);
          if (k == kind::cast) {
            auto sent = cast_dynamic(node_, *to, std::move(message));
            if (!sent) return reply(sent.fail());
            return reply(pack_body(msgpack::type::nil_t{}));
          }
          auto timeout = std::chrono::milliseconds(std::min<std::uint64_t>(a.timeout_ms, 3600000));
          call_dynamic(node_, *to, std::move(message), timeout,
                       [reply](result<msgpack::object_handle> r) {
                         if (!r) return reply(r.fail());
                         auto out = std::make_shared<msgpack::sbuffer>();
                         msgpack::pack(*out, r->get());
                         reply(out);
                       });
          return;
        }
        case kind::stop: {
          if (!o.allow_stop) return reply(failure(errc::not_authorised, "this node refuses stop"));
          log(log_level::warning, "introspect", node_.name(), ": stopping, as ", asker, " asked");
          reply(pack_body(msgpack::type::nil_t{}));
          // After the answer had time to leave (node.stop() closes the connections).
          node_.run_after(std::chrono::milliseconds(100), [n = &node_] { n->stop(); });
          return;
        }
      }
      return reply(failure(errc::not_found,
                           "unknown request kind " + std::to_string(static_cast<unsigned>(k))));
    } catch (const std::invalid_argument& e) {
      return reply(failure(errc::invalid_argument, e.what()));
    } catch (const std::exception& e) {
      return reply(
          failure(errc::bad_message, std::string(kind_name(k)) + " arguments: " + e.what()));
    }
  }

  result<pid> resolve(const std::string& to) {
    if (to.empty()) return failure(errc::invalid_argument, "no target process");
    if (to.front() == '<') {
      auto p = pid::parse(to);
      if (!p) return failure(errc::invalid_argument, "'" + to + "' is not a pid");
      return *p;
    }
    // A global name first (what a cluster's callers share), else a local name of this node.
    if (cluster::find(node_)) {
      if (auto holder = whereis(node_, global(to))) return *holder;
    }
    if (auto local = whereis(node_, to)) return *local;
    return failure(errc::noproc,
                   "no process named '" + to + "' (global or on " + node_.name() + ")");
  }

  // ---- requests this node sends
  void request(std::string_view target, kind k, msgpack::sbuffer args, millis timeout,
               std::function<void(result<msgpack::object_handle>)> done) {
    auto finish_later = [this](std::function<void(result<msgpack::object_handle>)> d,
                               result<msgpack::object_handle> r) {
      asio::post(node_.context(),
                 [d = std::move(d), r = std::move(r)]() mutable { d(std::move(r)); });
    };
    if (!node_.running()) return finish_later(std::move(done), failure(errc::node_stopped));
    if (target == node_.name()) {
      auto handle = msgpack::unpack(args.data(), args.size());
      answer(k, handle.get(), node_.name(),
             [finish_later, done = std::move(done)](result<packed> r) mutable {
               if (!r) return finish_later(std::move(done), r.fail());
               finish_later(std::move(done), msgpack::unpack((*r)->data(), (*r)->size()));
             });
      return;
    }
    auto* c = open_channel();
    if (!c) {
      return finish_later(std::move(done),
                          failure(errc::nodedown, "this node has not joined a cluster"));
    }
    auto atom = node_atom::find(target);
    std::uint32_t creation = 0;
    bool ready = false;
    if (atom != node_atom{}) {
      for (const auto& peer : c->ready_peers()) {
        if (peer.atom == atom) {
          creation = peer.creation;
          ready = true;
        }
      }
    }
    if (!ready) {
      return finish_later(std::move(done),
                          failure(errc::nodedown, std::string(target) + ": no connection"));
    }
    auto p = std::make_shared<pending_request>();
    p->peer = atom;
    p->creation = creation;
    p->what = k;
    p->done = std::move(done);
    std::uint64_t id = 0;
    {
      std::lock_guard lock(mu_);
      id = next_id_++;
      std::weak_ptr<core> weak = shared_from_this();
      p->timer = node_.run_after(timeout, [weak, id, t = std::string(target), k] {
        if (auto self = weak.lock()) {
          self->finish(id, failure(errc::timeout,
                                   std::string(kind_name(k)) + " on " + t + ": no answer in time"));
        }
      });
      pending_.emplace(id, p);
    }
    auto frame = encode_request(id, k, args);
    auto sent =
        c->send_channel(atom, creation, cluster::channels::introspect,
                        {reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size()});
    if (!sent) finish(id, sent.fail());
  }

  // `from`: the peer a reply came from; only the connection the request went out on may
  // answer it (another peer's frame with that id is logged and dropped).
  void finish(std::uint64_t id, result<msgpack::object_handle> r,
              const cluster::peer* from = nullptr) {
    std::shared_ptr<pending_request> p;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(id);
      if (it == pending_.end()) return;  // answered, expired or failed already
      if (from && (it->second->peer != from->atom || it->second->creation != from->creation)) {
        log(log_level::warning, "introspect", node_.name(), ": reply ", id, " from ", from->id(),
            " dropped: that request went to another node");
        return;
      }
      p = std::move(it->second);
      pending_.erase(it);
    }
    node_.cancel_timer(p->timer);
    asio::post(node_.context(), [p, r = std::move(r)]() mutable { p->done(std::move(r)); });
  }

  void fail_all(const failure& why) {
    std::unordered_map<std::uint64_t, std::shared_ptr<pending_request>> lost;
    {
      std::lock_guard lock(mu_);
      lost.swap(pending_);
    }
    for (auto& [id, p] : lost) {
      node_.cancel_timer(p->timer);
      p->done(why);
    }
  }

 private:
  cluster::service* open_channel() {
    auto* c = cluster::find(node_);
    if (!c) return nullptr;
    std::lock_guard lock(mu_);
    if (opened_ == c) return c;
    opened_ = c;
    std::weak_ptr<core> weak = shared_from_this();
    c->open_channel(cluster::channels::introspect,
                    cluster::channel_handlers{
                        .on_frame =
                            [weak](const cluster::peer& from, std::span<const std::uint8_t> b) {
                              if (auto self = weak.lock()) self->on_frame(from, b);
                            },
                        .on_peer_up = {},
                        .on_peer_down =
                            [weak](const cluster::peer& p) {
                              if (auto self = weak.lock()) self->on_peer_down(p);
                            },
                    });
    return c;
  }

  void on_peer_down(const cluster::peer& peer) {
    std::vector<std::uint64_t> lost;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, p] : pending_) {
        if (p->peer == peer.atom && p->creation == peer.creation) lost.push_back(id);
      }
    }
    for (auto id : lost) {
      finish(id, failure(errc::nodedown, std::string(peer.id()) + ": connection lost"));
    }
  }

  void on_frame(const cluster::peer& from, std::span<const std::uint8_t> bytes) {
    msgpack::object_handle frame;
    try {
      const auto bound = bytes.size();
      const msgpack::unpack_limit limit(bound, bound, bound, bound, bound, 64);
      std::size_t off = 0;
      frame = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), off,
                              nullptr, nullptr, limit);
      if (off != bytes.size()) throw std::runtime_error("trailing bytes after the frame");
    } catch (const std::exception& e) {
      return malformed(from, e.what());
    }
    const auto& root = frame.get();
    if (root.type != msgpack::type::ARRAY || root.via.array.size < 4) {
      return malformed(from, "[version, op, id, ...] expected");
    }
    std::uint64_t id = 0;
    std::uint32_t o = 0;
    try {
      id = at(root, 2).as<std::uint64_t>();
      o = at(root, 1).as<std::uint32_t>();
      const auto v = at(root, 0).as<std::uint32_t>();
      if (v != wire_version) {
        log(log_level::warning, "introspect", node_.name(), ": frame version ", v, " from ",
            from.id(), " (this node speaks ", wire_version, ")");
        if (o == static_cast<std::uint32_t>(op::request)) {
          send_reply(from, id,
                     failure(errc::version_mismatch,
                             "introspection version " + std::to_string(wire_version)));
        }
        return;
      }
    } catch (const std::exception& e) {
      return malformed(from, e.what());
    }
    if (o == static_cast<std::uint32_t>(op::request)) {
      if (root.via.array.size < 5) {
        malformed(from, "a request has 5 fields");
        return send_reply(from, id, failure(errc::malformed_frame, "a request has 5 fields"));
      }
      std::uint32_t k = 0;
      try {
        k = at(root, 3).as<std::uint32_t>();
      } catch (const std::exception& e) {
        malformed(from, e.what());
        return send_reply(from, id, failure(errc::malformed_frame, "request kind"));
      }
      if (!serving()) {
        return send_reply(from, id, failure(errc::not_authorised, "introspection not served"));
      }
      // Off the connection's I/O thread: a process list of a big node takes a while.
      auto shared = std::make_shared<msgpack::object_handle>(std::move(frame));
      std::weak_ptr<core> weak = shared_from_this();
      asio::post(node_.context(), [weak, from, id, k, shared] {
        auto self = weak.lock();
        if (!self) return;
        const auto& args = at(shared->get(), 4);
        self->answer(static_cast<kind>(k), args, from.id(),
                     [weak, from, id, shared](result<packed> r) {
                       if (auto s = weak.lock()) s->send_reply(from, id, r);
                     });
      });
      return;
    }
    if (o == static_cast<std::uint32_t>(op::reply)) {
      if (root.via.array.size < 6) return malformed(from, "a reply has 6 fields");
      try {
        auto code = at(root, 3).as<std::uint64_t>();
        auto reason = at(root, 4).as<std::string>();
        if (code != static_cast<std::uint64_t>(status::ok)) {
          return finish(id, to_failure(code, std::move(reason)), &from);
        }
        msgpack::object body = at(root, 5);
        finish(id, msgpack::object_handle(body, std::move(frame.zone())), &from);
      } catch (const std::exception& e) {
        malformed(from, e.what());
        finish(id, failure(errc::malformed_frame, std::string("reply: ") + e.what()), &from);
      }
      return;
    }
    malformed(from, "unknown op " + std::to_string(o));
  }

  bool serving() {
    std::lock_guard lock(mu_);
    return serving_;
  }

  void send_reply(const cluster::peer& to, std::uint64_t id, const result<packed>& r) {
    auto* c = cluster::find(node_);
    if (!c) return;
    auto frame = encode_reply(id, r);
    auto sent =
        c->send_channel(to.atom, to.creation, cluster::channels::introspect,
                        {reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size()});
    if (!sent) {
      log(log_level::warning, "introspect", node_.name(), ": answer to ", to.id(), ": ",
          sent.fail().message());
    }
  }

  void malformed(const cluster::peer& from, std::string_view why) {
    log(log_level::warning, "introspect", node_.name(), ": malformed frame from ", from.id(),
        " dropped: ", why);
  }

  node& node_;
  std::mutex mu_;
  serve_options options_;
  bool serving_ = false;
  cluster::service* opened_ = nullptr;
  std::unordered_map<std::uint64_t, std::shared_ptr<pending_request>> pending_;
  std::uint64_t next_id_ = 1;
};

class introspect_service final : public node_service {
 public:
  explicit introspect_service(node& n) : state(std::make_shared<core>(n)) {
    std::weak_ptr<core> weak = state;
    n.add_stop_hook([weak, name = n.name()] {
      if (auto c = weak.lock()) c->fail_all(failure(errc::node_stopped, name));
    });
  }
  ~introspect_service() override { state->fail_all(failure(errc::node_stopped, "node destroyed")); }
  std::shared_ptr<core> state;
};

core& core_of(node& n) {
  return *n.use_service<introspect_service>().state;
}

template <class T>
void typed(node& n, std::string_view target, kind k, msgpack::sbuffer args, millis timeout,
           std::function<void(result<T>)> done) {
  core_of(n).request(target, k, std::move(args), timeout,
                     [done = std::move(done), k](result<msgpack::object_handle> r) {
                       if (!r) return done(r.fail());
                       std::optional<T> value;
                       try {
                         value.emplace(r->get().as<T>());
                       } catch (const std::exception& e) {
                         return done(failure(errc::bad_message,
                                             std::string(kind_name(k)) + " answer: " + e.what()));
                       }
                       done(std::move(*value));
                     });
}

msgpack::sbuffer empty_args() {
  msgpack::sbuffer out;
  msgpack::packer<msgpack::sbuffer>(out).pack_map(0);
  return out;
}

msgpack::sbuffer pack_call(const std::string& to, const msgpack::object& message, millis timeout) {
  msgpack::sbuffer out;
  msgpack::packer<msgpack::sbuffer> pk(out);
  pk.pack_map(3);
  pk.pack(std::string_view("to"));
  pk.pack(to);
  pk.pack(std::string_view("message"));
  pk.pack(message);
  pk.pack(std::string_view("timeout_ms"));
  pk.pack(static_cast<std::uint64_t>(timeout.count()));
  return out;
}

// A peer's answer may take the call's whole time there, plus the way back.
millis request_bound(millis call_timeout) {
  return call_timeout + std::max(millis(500), call_timeout / 4);
}

}  // namespace

result<void> serve(node& n, serve_options o) {
  return core_of(n).serve(o);
}

node_summary summary(node& n) {
  node_summary s;
  s.id = n.name();
  s.creation = n.creation();
  s.processes = n.process_count();
  s.version = OTPP_VERSION;
  s.behaviours = registered_behaviours(n);
  s.members = 1;
  if (auto* c = cluster::find(n)) {
    s.members = 0;
    for (const auto& m : c->members()) {
      if (m.self) s.uptime_ms = millis_since(n.now(), m.up_since);
      if (m.status == cluster::member_status::up) ++s.members;
    }
  }
  return s;
}

process_list processes(node& n, const process_query& q) {
  auto all = n.processes();
  process_list out;
  out.total = all.size();
  // Names by pid: local names, and the global names held by this node's processes.
  std::multimap<pid, std::string> names, global_names;
  for (auto& name : registered_names(n)) {
    if (auto p = whereis(n, name)) names.emplace(*p, std::move(name));
  }
  if (cluster::find(n)) {
    for (auto& name : otpp::global_names(n)) {
      auto p = whereis(n, global(name));
      if (p && p->node() == n.atom()) global_names.emplace(*p, std::move(name));
    }
  }
  auto key = [&q](const process_info& i) -> std::uint64_t {
    if (q.sort == "mailbox") return i.mailbox;
    if (q.sort == "memory") return i.memory;
    if (q.sort == "handled") return i.handled;
    return 0;
  };
  if (q.sort == "uptime") {
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.started < b.started; });
  } else if (q.sort == "mailbox" || q.sort == "memory" || q.sort == "handled") {
    std::stable_sort(all.begin(), all.end(),
                     [&key](const auto& a, const auto& b) { return key(a) > key(b); });
  } else if (q.sort != "pid" && !q.sort.empty()) {
    throw std::invalid_argument("sort by pid, mailbox, memory, handled or uptime, not '" + q.sort +
                                "'");
  }
  const auto limit = q.limit == 0 ? all.size() : std::min(q.limit, all.size());
  const auto now = n.now();
  out.processes.reserve(limit);
  for (std::size_t i = 0; i < limit; ++i) {
    const auto& info = all[i];
    process_entry e;
    e.pid = info.self.to_string();
    for (auto [it, end] = names.equal_range(info.self); it != end; ++it)
      e.names.push_back(it->second);
    for (auto [it, end] = global_names.equal_range(info.self); it != end; ++it) {
      e.global_names.push_back(it->second);
    }
    e.behaviour = info.label;
    e.type = info.type;
    e.mailbox = info.mailbox;
    e.handled = info.handled;
    e.memory = info.memory;
    e.uptime_ms = millis_since(now, info.started);
    out.processes.push_back(std::move(e));
  }
  return out;
}

std::vector<member_entry> members(node& n) {
  std::vector<member_entry> out;
  auto* c = cluster::find(n);
  if (!c) {
    member_entry self;
    self.id = n.name();
    self.creation = n.creation();
    self.status = "up";
    self.self = true;
    self.connected = true;
    out.push_back(std::move(self));
    return out;
  }
  const auto now = n.now();
  for (const auto& m : c->members()) {
    out.push_back(member_entry{.id = m.id,
                               .creation = m.creation,
                               .status = std::string(cluster::to_string(m.status)),
                               .self = m.self,
                               .connected = m.connected,
                               .reachable = m.reachable,
                               .uptime_ms = millis_since(now, m.up_since),
                               .tags = m.tags});
  }
  return out;
}

std::vector<global_entry> globals(node& n) {
  std::vector<global_entry> out;
  if (!cluster::find(n)) return out;
  for (auto& name : otpp::global_names(n)) {
    auto found = global_lookup(n, global(name));
    if (!found) continue;  // released since the listing
    out.push_back(global_entry{.name = name,
                               .pid = found->holder.to_string(),
                               .node = std::string(found->holder.node().name()),
                               .epoch = found->epoch});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::vector<group_entry> groups(node& n) {
  std::vector<group_entry> out;
  if (!cluster::find(n)) return out;
  for (auto& group : pg::which_groups(n)) {
    group_entry e{.group = group, .members = {}};
    for (const auto& p : pg::members(n, group)) e.members.push_back(p.to_string());
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.group < b.group; });
  return out;
}

void remote_summary(node& n, std::string_view target, millis timeout,
                    std::function<void(result<node_summary>)> done) {
  typed(n, target, kind::summary, empty_args(), timeout, std::move(done));
}

void remote_processes(node& n, std::string_view target, process_query q, millis timeout,
                      std::function<void(result<process_list>)> done) {
  msgpack::sbuffer args;
  msgpack::pack(args, q);
  typed(n, target, kind::processes, std::move(args), timeout, std::move(done));
}

void remote_members(node& n, std::string_view target, millis timeout,
                    std::function<void(result<std::vector<member_entry>>)> done) {
  typed(n, target, kind::members, empty_args(), timeout, std::move(done));
}

void remote_globals(node& n, std::string_view target, millis timeout,
                    std::function<void(result<std::vector<global_entry>>)> done) {
  typed(n, target, kind::globals, empty_args(), timeout, std::move(done));
}

void remote_groups(node& n, std::string_view target, millis timeout,
                   std::function<void(result<std::vector<group_entry>>)> done) {
  typed(n, target, kind::groups, empty_args(), timeout, std::move(done));
}

void remote_call(node& n, std::string_view target, std::string to, msgpack::object_handle message,
                 millis timeout, std::function<void(result<msgpack::object_handle>)> done) {
  core_of(n).request(target, kind::call, pack_call(to, message.get(), timeout),
                     request_bound(timeout), std::move(done));
}

void remote_cast(node& n, std::string_view target, std::string to, msgpack::object_handle message,
                 millis timeout, std::function<void(result<void>)> done) {
  core_of(n).request(target, kind::cast, pack_call(to, message.get(), timeout), timeout,
                     [done = std::move(done)](result<msgpack::object_handle> r) {
                       if (!r) return done(r.fail());
                       done({});
                     });
}

void remote_stop(node& n, std::string_view target, millis timeout,
                 std::function<void(result<void>)> done) {
  core_of(n).request(target, kind::stop, empty_args(), timeout,
                     [done = std::move(done)](result<msgpack::object_handle> r) {
                       if (!r) return done(r.fail());
                       done({});
                     });
}

}  // namespace otpp::introspect
