// The downing rule: which unreachable members this node declares down after a network split,
// and whether this node is on the losing side. Unreachable is not down (DESIGN section 6):
// silence only marks a member unreachable; down is this rule's decision, taken once the view
// has been stable for a while, so that both sides of a split reach opposite, consistent
// conclusions instead of each claiming to be the cluster.
//
// A plain component: driven by membership/reachability events and the times passed in, no
// sockets, no threads, no locking (the owner serialises calls). Tests run it on virtual time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "otpp/clock.hpp"
#include "otpp/result.hpp"

namespace otpp::cluster {

enum class downing_strategy : std::uint8_t {
  // Default. The side that sees more than half of the known members (self included) downs the
  // rest; the smaller side reports minority. An exact half/half split goes to the side holding
  // the lowest member id (byte-wise), so both sides agree without talking. In a 2-node cluster
  // this means the node with the lower id survives silence and the other reports minority,
  // even when the lower one really crashed: use down_on_silence there if that is not wanted.
  keep_majority,
  // This side survives when it sees at least `quorum` members (self included) and downs the
  // rest; otherwise it reports minority. Set quorum above half of the intended cluster size
  // (quorum > size / 2), or two sides of a split can both survive; the cluster cannot lose
  // more than size - quorum members without every side reporting minority.
  static_quorum,
  // Down every member unreachable for stable_after; never minority. For two-node setups only:
  // in a real split both sides down each other and both go on (split brain), which is the
  // price of staying available when the peer dies.
  down_on_silence,
  // Never decide: unreachable members stay unreachable until downed by hand.
  off,
};

std::string_view to_string(downing_strategy s) noexcept;

struct downing_options {
  downing_strategy strategy = downing_strategy::keep_majority;
  // The view (membership and reachability) must stay unchanged this long before deciding, so
  // a member that flaps or a split still forming is not acted on half-seen.
  clock_type::duration stable_after = std::chrono::milliseconds(1000);
  // static_quorum: members (self included) this side needs to survive. 0 is invalid there;
  // ignored by the other strategies.
  std::size_t quorum = 0;
};

struct downing_decision {
  std::vector<std::string> down;  // member ids this node downs now, sorted
  bool minority = false;          // this side lost: stop counting itself as a member
  bool empty() const noexcept { return down.empty() && !minority; }
};

class downing_rule {
 public:
  // errc::invalid_argument for static_quorum with quorum 0, or a negative stable_after.
  static result<void> validate(const downing_options& options);

  // self_id: this node's id (canonical node_id text); counted as a member, always reachable
  // from itself. Throws std::system_error (invalid_argument) when validate(options) fails.
  downing_rule(std::string self_id, downing_options options);

  // A (non-hidden) member came up, reachable. Re-adding a known member makes it reachable.
  void add_member(std::string_view id, time_point now);
  // Downed, left or replaced by a new incarnation: not counted any more.
  void remove_member(std::string_view id, time_point now);
  // This node's view of a member changed. Unknown ids and self are ignored.
  void set_reachable(std::string_view id, bool reachable, time_point now);

  // Call on every tick (and at next_decision_time()). Non-empty only when some member is
  // unreachable and the view has not changed for stable_after. A decision is given once: the
  // members it downs count as removed, and after a minority decision the rule decides nothing
  // more until reset().
  downing_decision evaluate(time_point now);

  // When evaluate() could next decide (may be in the past: decide now); nullopt when nothing
  // is pending (everyone reachable, strategy off, or already in minority).
  std::optional<time_point> next_decision_time() const;

  std::size_t members() const noexcept { return members_.size() + 1; }  // self included
  std::size_t unreachable() const noexcept { return unreachable_; }
  bool is_member(std::string_view id) const;
  bool is_reachable(std::string_view id) const;  // false for unknown ids; true for self
  bool in_minority() const noexcept { return minority_; }
  const std::string& self() const noexcept { return self_; }
  const downing_options& options() const noexcept { return options_; }

  // Forget every member and the minority state (after this node rejoins as a new incarnation).
  void reset();

 private:
  void changed(time_point now) { last_change_ = now; }

  std::string self_;
  downing_options options_;
  std::map<std::string, bool, std::less<>> members_;  // other members -> reachable
  std::size_t unreachable_ = 0;
  std::optional<time_point> last_change_;
  bool minority_ = false;
};

}  // namespace otpp::cluster
