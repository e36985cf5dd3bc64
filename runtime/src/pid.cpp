#include "otpp/pid.hpp"

#include <charconv>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace otpp {
namespace {
// Interned names live as long as the OS process (pids are 16 bytes and compare as integers);
// intern() bounds what untrusted input can add.
struct atom_table {
  std::shared_mutex mutex;
  std::deque<std::string> names{"nonode"};  // deque: stable addresses for string_views
  std::unordered_map<std::string_view, std::uint32_t> index{{names.front(), 0}};
};
atom_table& atoms() {
  static atom_table table;
  return table;
}
}  // namespace

bool node_atom::valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > max_name_length) return false;
  for (char c : name) {
    if (c <= ' ' || c > '~') return false;  // printable ASCII, no spaces
  }
  return true;
}

node_atom node_atom::find(std::string_view name) {
  auto& t = atoms();
  std::shared_lock lock(t.mutex);
  if (auto it = t.index.find(name); it != t.index.end()) return node_atom(it->second);
  return node_atom{};
}

node_atom node_atom::intern(std::string_view name) {
  auto& t = atoms();
  {
    std::shared_lock lock(t.mutex);
    if (auto it = t.index.find(name); it != t.index.end()) return node_atom(it->second);
  }
  if (!valid_name(name)) return node_atom{};
  std::unique_lock lock(t.mutex);
  if (auto it = t.index.find(name); it != t.index.end()) return node_atom(it->second);
  if (t.names.size() >= max_atoms) return node_atom{};
  t.names.emplace_back(name);
  auto i = static_cast<std::uint32_t>(t.names.size() - 1);
  t.index.emplace(t.names.back(), i);
  return node_atom(i);
}

std::string_view node_atom::name() const {
  auto& t = atoms();
  std::shared_lock lock(t.mutex);
  return t.names[index_];
}

std::string pid::to_string() const {
  std::string out = "<";
  out += node_.name();
  out += '.';
  out += std::to_string(creation_);
  out += '.';
  out += std::to_string(serial_);
  out += '>';
  return out;
}

std::optional<pid> pid::parse(std::string_view text) {
  if (text.size() < 7 || text.front() != '<' || text.back() != '>') return std::nullopt;
  text = text.substr(1, text.size() - 2);
  auto number = [](std::string_view digits, auto& out) {
    if (digits.empty() || digits.size() > 20) return false;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    return ec == std::errc{} && end == digits.data() + digits.size();
  };
  auto last = text.rfind('.');
  if (last == std::string_view::npos || last == 0) return std::nullopt;
  auto middle = text.rfind('.', last - 1);
  if (middle == std::string_view::npos || middle == 0) return std::nullopt;
  std::uint32_t creation = 0;
  std::uint64_t serial = 0;
  if (!number(text.substr(middle + 1, last - middle - 1), creation) ||
      !number(text.substr(last + 1), serial) || serial == 0) {
    return std::nullopt;
  }
  const auto name = text.substr(0, middle);
  auto atom = node_atom::intern(name);
  if (atom.index() == 0 && name != "nonode") return std::nullopt;  // invalid, or the table is full
  return pid(atom, creation, serial);
}

}  // namespace otpp
