// A small strict parser of the Prometheus text format (0.0.4) for the tests: every line is a
// HELP, a TYPE or a sample; names match the metric-name rule; label values use only the three
// escapes; each family is declared (HELP, TYPE once) before its samples, and contiguous.
#pragma once

#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace otpp_test {

struct prom_sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct prom_text {
  std::map<std::string, std::string> types, helps;
  std::vector<prom_sample> samples;
  // The value of the one sample with this name and these labels (nullopt: none).
  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
};

// The parsed text, or the first error (line number and why) in `error`.
inline std::optional<prom_text> parse_prometheus(const std::string& text, std::string& error) {
  static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex label_re("[a-zA-Z_][a-zA-Z0-9_]*");
  static const std::regex value_re(
      "[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?|NaN|\\+Inf|-Inf");
  prom_text out;
  std::set<std::string> closed;  // families whose samples ended
  std::string current;           // family of the samples being read
  std::set<std::pair<std::string, std::map<std::string, std::string>>> seen;
  if (!text.empty() && text.back() != '\n') {
    error = "no final newline";
    return std::nullopt;
  }
  std::istringstream in(text);
  std::string line;
  int no = 0;
  auto fail = [&](const std::string& why) {
    error = "line " + std::to_string(no) + ": " + why + ": " + line;
    return std::nullopt;
  };
  while (std::getline(in, line)) {
    ++no;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      auto rest = line.substr(7);
      auto sp = rest.find(' ');
      auto name = rest.substr(0, sp);
      if (!std::regex_match(name, name_re)) return fail("bad metric name");
      if (closed.count(name) || (!current.empty() && current != name && out.types.count(name)))
        return fail("family not contiguous");
      if (sp == std::string::npos) return fail("no text");
      auto body = rest.substr(sp + 1);
      if (help) {
        if (out.helps.count(name)) return fail("second HELP");
        for (std::size_t i = 0; i < body.size(); ++i) {
          if (body[i] == '\\' &&
              (i + 1 >= body.size() || (body[i + 1] != '\\' && body[i + 1] != 'n')))
            return fail("bad escape in HELP");
          if (body[i] == '\\') ++i;
        }
        out.helps[name] = body;
      } else {
        if (out.types.count(name)) return fail("second TYPE");
        if (body != "counter" && body != "gauge" && body != "histogram" && body != "summary" &&
            body != "untyped")
          return fail("bad type");
        out.types[name] = body;
      }
      if (current != name && !current.empty()) closed.insert(current);
      current = name;
      continue;
    }
    if (line.empty() || line[0] == '#') return fail("unexpected line");
    prom_sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (!std::regex_match(s.name, name_re)) return fail("bad sample name");
    if (!out.types.count(s.name)) return fail("sample before its TYPE");
    if (s.name != current) return fail("sample outside its family");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        std::size_t eq = line.find('=', i);
        if (eq == std::string::npos) return fail("label without '='");
        auto lname = line.substr(i, eq - i);
        if (!std::regex_match(lname, label_re) || lname.rfind("__", 0) == 0)
          return fail("bad label name");
        if (eq + 1 >= line.size() || line[eq + 1] != '"') return fail("label value not quoted");
        std::string value;
        std::size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            if (++j >= line.size()) return fail("dangling escape");
            if (line[j] == 'n') {
              value += '\n';
            } else if (line[j] == '\\' || line[j] == '"') {
              value += line[j];
            } else {
              return fail("bad escape in label value");
            }
          } else {
            value += line[j];
          }
        }
        if (j >= line.size()) return fail("unterminated label value");
        if (!s.labels.emplace(lname, value).second) return fail("duplicate label");
        i = j + 1;
        if (i < line.size() && line[i] == ',') {
          ++i;
          continue;
        }
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        return fail("bad label list");
      }
    }
    if (i >= line.size() || line[i] != ' ') return fail("no value");
    auto value = line.substr(i + 1);
    if (!std::regex_match(value, value_re)) return fail("bad value");
    s.value = value == "NaN"    ? NAN
              : value == "+Inf" ? INFINITY
              : value == "-Inf" ? -INFINITY
                                : std::strtod(value.c_str(), nullptr);
    if (!seen.emplace(s.name, s.labels).second) return fail("duplicate series");
    if (out.types[s.name] == "counter" && !(s.value >= 0)) return fail("negative counter");
    out.samples.push_back(std::move(s));
  }
  return out;
}

}  // namespace otpp_test
