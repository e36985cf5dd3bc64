#include "otpp/cluster/downing.hpp"

#include <utility>

namespace otpp::cluster {

std::string_view to_string(downing_strategy s) noexcept {
  switch (s) {
    case downing_strategy::keep_majority:
      return "keep_majority";
    case downing_strategy::static_quorum:
      return "static_quorum";
    case downing_strategy::down_on_silence:
      return "down_on_silence";
    case downing_strategy::off:
      return "off";
  }
  return "unknown";
}

result<void> downing_rule::validate(const downing_options& options) {
  switch (options.strategy) {
    case downing_strategy::keep_majority:
    case downing_strategy::down_on_silence:
    case downing_strategy::off:
      break;
    case downing_strategy::static_quorum:
      if (options.quorum == 0) {
        return failure(errc::invalid_argument,
                       "downing: static_quorum needs a quorum of at least 1 member (set it above "
                       "half of the intended cluster size)");
      }
      break;
    default:
      return failure(errc::invalid_argument, "downing: unknown strategy");
  }
  if (options.stable_after < clock_type::duration::zero()) {
    return failure(errc::invalid_argument, "downing: stable_after must not be negative");
  }
  return {};
}

downing_rule::downing_rule(std::string self_id, downing_options options)
    : self_(std::move(self_id)), options_(options) {
  validate(options_).value();  // throws on invalid options: a misconfigured rule could down all
}

void downing_rule::add_member(std::string_view id, time_point now) {
  if (id == self_) return;
  auto it = members_.find(id);
  if (it == members_.end()) {
    members_.emplace(std::string(id), true);
    changed(now);
  } else if (!it->second) {
    it->second = true;
    --unreachable_;
    changed(now);
  }
}

void downing_rule::remove_member(std::string_view id, time_point now) {
  auto it = members_.find(id);
  if (it == members_.end()) return;
  if (!it->second) --unreachable_;
  members_.erase(it);
  changed(now);
}

void downing_rule::set_reachable(std::string_view id, bool reachable, time_point now) {
  auto it = members_.find(id);
  if (it == members_.end() || it->second == reachable) return;
  it->second = reachable;
  if (reachable) {
    --unreachable_;
  } else {
    ++unreachable_;
  }
  changed(now);
}

std::optional<time_point> downing_rule::next_decision_time() const {
  if (minority_ || options_.strategy == downing_strategy::off || unreachable_ == 0) {
    return std::nullopt;
  }
  // An unreachable member implies a recorded change (set_reachable is the only way in).
  return *last_change_ + options_.stable_after;
}

downing_decision downing_rule::evaluate(time_point now) {
  downing_decision decision;
  auto due = next_decision_time();
  if (!due || now < *due) return decision;

  const std::size_t total = members();
  const std::size_t reachable = total - unreachable_;
  bool survive = true;
  switch (options_.strategy) {
    case downing_strategy::keep_majority:
      if (reachable * 2 > total) {
        survive = true;
      } else if (reachable * 2 < total) {
        survive = false;
      } else {
        // Exact half: the side holding the lowest id wins; both sides compute the same.
        // members_ is sorted, so its first entry is the lowest other member.
        survive = members_.empty() || self_ < members_.begin()->first || members_.begin()->second;
      }
      break;
    case downing_strategy::static_quorum:
      survive = reachable >= options_.quorum;
      break;
    case downing_strategy::down_on_silence:
      survive = true;
      break;
    case downing_strategy::off:
      return decision;  // not reached: next_decision_time() is nullopt
  }

  if (!survive) {
    minority_ = true;
    decision.minority = true;
    return decision;
  }
  for (auto it = members_.begin(); it != members_.end();) {
    if (!it->second) {
      decision.down.push_back(it->first);  // map order: sorted
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
  unreachable_ = 0;
  changed(now);
  return decision;
}

bool downing_rule::is_member(std::string_view id) const {
  return id == self_ || members_.find(id) != members_.end();
}

bool downing_rule::is_reachable(std::string_view id) const {
  if (id == self_) return true;
  auto it = members_.find(id);
  return it != members_.end() && it->second;
}

void downing_rule::reset() {
  members_.clear();
  unreachable_ = 0;
  last_change_.reset();
  minority_ = false;
}

}  // namespace otpp::cluster
