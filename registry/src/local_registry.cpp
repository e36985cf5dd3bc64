#include <mutex>
#include <unordered_map>

#include "otpp/log.hpp"
#include "otpp/registry.hpp"

namespace otpp {
namespace {

// One table per node; nodes are found by address. The table lives as long as the node: it is
// dropped by a stop hook-independent exit listener that the node owns.
struct name_table {
  std::mutex mutex;
  std::unordered_map<std::string, pid> by_name;
  std::unordered_map<pid, std::string> by_pid;
};

struct tables {
  std::mutex mutex;
  std::unordered_map<const node*, std::shared_ptr<name_table>> per_node;
};
tables& all_tables() {
  static tables t;
  return t;
}

std::shared_ptr<name_table> table_of(node& n) {
  auto& t = all_tables();
  std::lock_guard lock(t.mutex);
  auto& slot = t.per_node[&n];
  if (!slot) {
    slot = std::make_shared<name_table>();
    std::weak_ptr<name_table> weak = slot;
    n.add_exit_listener([weak](const pid& p, const exit_reason&) {
      if (auto table = weak.lock()) {
        std::lock_guard lock(table->mutex);
        auto it = table->by_pid.find(p);
        if (it != table->by_pid.end()) {
          table->by_name.erase(it->second);
          table->by_pid.erase(it);
        }
      }
    });
    // Forget the table when the node stops, so a later node at the same address starts clean.
    n.add_stop_hook([&n] {
      auto& all = all_tables();
      std::lock_guard lock(all.mutex);
      all.per_node.erase(&n);
    });
  }
  return slot;
}

}  // namespace

result<void> register_name(node& n, std::string name, const pid& p) {
  if (name.empty()) return failure(errc::invalid_argument, "empty name");
  auto table = table_of(n);
  {
    std::lock_guard lock(table->mutex);
    if (table->by_name.contains(name)) {
      log(log_level::debug, "registry", "register '", name, "': already_registered");
      return failure(errc::already_registered, name);
    }
    if (table->by_pid.contains(p)) {
      return failure(errc::already_registered, p.to_string() + " already has a name");
    }
    table->by_name.emplace(name, p);
    table->by_pid.emplace(p, name);
  }
  // Flag first, then check liveness: either the exiting process sees the flag and removes the
  // name, or we see it dead here and remove it ourselves (removal is idempotent).
  n.watch_exit(p, true);
  if (!n.alive(p)) {
    std::lock_guard lock(table->mutex);
    auto it = table->by_name.find(name);
    if (it != table->by_name.end() && it->second == p) {
      table->by_name.erase(it);
      table->by_pid.erase(p);
    }
    return failure(errc::noproc, p.to_string());
  }
  return {};
}

result<void> unregister_name(node& n, std::string_view name) {
  auto table = table_of(n);
  std::lock_guard lock(table->mutex);
  auto it = table->by_name.find(std::string(name));
  if (it == table->by_name.end()) return failure(errc::not_found, std::string(name));
  table->by_pid.erase(it->second);
  table->by_name.erase(it);
  return {};
}

result<pid> whereis(node& n, std::string_view name) {
  auto table = table_of(n);
  std::lock_guard lock(table->mutex);
  auto it = table->by_name.find(std::string(name));
  if (it == table->by_name.end()) return failure(errc::noproc, std::string(name));
  return it->second;
}

std::vector<std::string> registered_names(node& n) {
  auto table = table_of(n);
  std::lock_guard lock(table->mutex);
  std::vector<std::string> out;
  out.reserve(table->by_name.size());
  for (const auto& [name, p] : table->by_name) out.push_back(name);
  return out;
}

}  // namespace otpp
