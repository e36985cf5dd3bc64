#include <mutex>
#include <unordered_map>

#include "otpp/log.hpp"
#include "otpp/registry.hpp"

namespace otpp {
namespace {

// The node's name table: a service the node owns, so it lives exactly as long as the node
// (names stay readable while processes run terminate during a stop, and a later node at the
// same address starts with an empty table).
class name_service final : public node_service {
 public:
  explicit name_service(node& n) {
    // Frees the name of a watched process as it exits, before links and monitors hear of it.
    n.add_exit_listener([this](const pid& p, const exit_reason&) { erase(p); });
  }

  std::mutex mutex;
  std::unordered_map<std::string, pid> by_name;
  std::unordered_map<pid, std::string> by_pid;

  void erase(const pid& p) {
    std::lock_guard lock(mutex);
    auto it = by_pid.find(p);
    if (it != by_pid.end()) {
      by_name.erase(it->second);
      by_pid.erase(it);
    }
  }
};

name_service& names(node& n) {
  return n.use_service<name_service>();
}

}  // namespace

result<void> register_name(node& n, std::string name, const pid& p) {
  if (name.empty()) return failure(errc::invalid_argument, "empty name");
  auto& table = names(n);
  {
    std::lock_guard lock(table.mutex);
    if (auto it = table.by_name.find(name); it != table.by_name.end()) {
      log(log_level::debug, "registry", "register '", name, "': already_registered by ",
          it->second.to_string());
      return failure(errc::already_registered, it->second.to_string());
    }
    if (auto it = table.by_pid.find(p); it != table.by_pid.end()) {
      return failure(errc::already_registered,
                     p.to_string() + " already has the name '" + it->second + "'");
    }
    table.by_name.emplace(name, p);
    table.by_pid.emplace(p, name);
  }
  // Flag first, then check liveness: either the exiting process sees the flag and removes the
  // name, or we see it dead here and remove it ourselves (removal is idempotent).
  n.watch_exit(p, true);
  if (!n.alive(p)) {
    std::lock_guard lock(table.mutex);
    auto it = table.by_name.find(name);
    if (it != table.by_name.end() && it->second == p) {
      table.by_name.erase(it);
      table.by_pid.erase(p);
    }
    return failure(errc::noproc, p.to_string());
  }
  return {};
}

result<void> unregister_name(node& n, std::string_view name) {
  auto& table = names(n);
  std::lock_guard lock(table.mutex);
  auto it = table.by_name.find(std::string(name));
  if (it == table.by_name.end()) return failure(errc::not_found, std::string(name));
  table.by_pid.erase(it->second);
  table.by_name.erase(it);
  return {};
}

result<pid> whereis(node& n, std::string_view name) {
  auto& table = names(n);
  std::lock_guard lock(table.mutex);
  auto it = table.by_name.find(std::string(name));
  if (it == table.by_name.end()) return failure(errc::noproc, std::string(name));
  return it->second;
}

std::vector<std::string> registered_names(node& n) {
  auto& table = names(n);
  std::lock_guard lock(table.mutex);
  std::vector<std::string> out;
  out.reserve(table.by_name.size());
  for (const auto& [name, p] : table.by_name) out.push_back(name);
  return out;
}

}  // namespace otpp
