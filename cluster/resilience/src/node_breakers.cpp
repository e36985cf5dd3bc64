#include "otpp/resilience/node_breakers.hpp"

#include <map>
#include <mutex>

#include "otpp/cluster/cluster.hpp"
#include "otpp/log.hpp"
#include "otpp/router.hpp"

namespace otpp::resilience {
namespace {

// The gate the runtime asks before a call leaves for another node. Shared by the node (which
// may hold it a moment longer than the service) and the service.
class breaker_gate final : public remote_call_gate {
 public:
  breaker_gate(node& n, breaker_options o) : node_(n), options_(std::move(o)) {}

  result<std::function<void(const failure*)>> admit(node_atom peer) override {
    auto b = breaker_of(peer);
    auto p = b.acquire();
    if (!p) return p.fail();
    return std::function<void(const failure*)>(
        [b, p = *p](const failure* outcome) { b.record(p, outcome); });
  }

  circuit_breaker breaker_of(node_atom peer) {
    std::lock_guard lock(mutex_);
    auto it = breakers_.find(peer);
    if (it == breakers_.end()) {
      auto o = options_;
      o.name = "node " + std::string(peer.name());
      it = breakers_.emplace(peer, circuit_breaker(node_, std::move(o))).first;
    }
    return it->second;
  }

  void event(const cluster::node_event& e) {
    if (e.kind != cluster::node_event_kind::node_down &&
        e.kind != cluster::node_event_kind::node_up) {
      return;
    }
    auto peer = node_atom::find(e.node);
    if (peer == node_atom{}) return;
    auto b = breaker_of(peer);
    if (e.kind == cluster::node_event_kind::node_down) {
      log(log_level::debug, "resilience", "node ", e.node, " down: its breaker is forced open");
      b.force_open();
    } else if (b.state() != breaker_state::closed) {
      log(log_level::debug, "resilience", "node ", e.node, " up: its breaker is reset");
      b.reset();
    }
  }

 private:
  node& node_;
  const breaker_options options_;
  std::mutex mutex_;
  std::map<node_atom, circuit_breaker> breakers_;
};

class breakers_service final : public node_service {
 public:
  explicit breakers_service(node& n) : node_(n) {}
  ~breakers_service() override { disable(); }

  result<void> enable(breaker_options o) {
    auto* c = cluster::find(node_);
    if (!c) return failure(errc::invalid_argument, "node breakers need a joined cluster");
    disable();
    auto g = std::make_shared<breaker_gate>(node_, std::move(o));
    std::weak_ptr<breaker_gate> weak = g;
    {
      std::lock_guard lock(mutex_);
      gate_ = g;
      cluster_ = c;
      subscription_ = c->subscribe([weak](const cluster::node_event& e) {
        if (auto gate = weak.lock()) gate->event(e);
      });
    }
    set_remote_call_gate(node_, g);
    return {};
  }

  void disable() {
    cluster::service* c = nullptr;
    cluster::subscription s = 0;
    {
      std::lock_guard lock(mutex_);
      if (!gate_) return;
      gate_.reset();
      c = std::exchange(cluster_, nullptr);
      s = std::exchange(subscription_, 0);
    }
    set_remote_call_gate(node_, nullptr);
    if (c) c->unsubscribe(s);
  }

  std::shared_ptr<breaker_gate> gate() {
    std::lock_guard lock(mutex_);
    return gate_;
  }

 private:
  node& node_;
  std::mutex mutex_;
  std::shared_ptr<breaker_gate> gate_;
  cluster::service* cluster_ = nullptr;
  cluster::subscription subscription_ = 0;
};

}  // namespace

result<void> enable_node_breakers(node& n, breaker_options o) {
  return n.use_service<breakers_service>().enable(std::move(o));
}

void disable_node_breakers(node& n) {
  n.use_service<breakers_service>().disable();
}

std::optional<circuit_breaker> node_breaker(node& n, std::string_view node_id) {
  auto g = n.use_service<breakers_service>().gate();
  if (!g) return std::nullopt;
  return g->breaker_of(node_atom::intern(node_id));
}

}  // namespace otpp::resilience
