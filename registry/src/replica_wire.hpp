// The frames of the replica channels (global names, process groups): what a peer's bytes parse
// into. Pure functions over msgpack, apart from the services (which need a node) so that the
// fuzzer reaches every parser. Private to the registry.
//
// A frame is a msgpack array whose element 0 is its kind; kind 0 is the replicas' hello on
// every replica channel. A parser throws on a malformed frame (msgpack::type_error or
// std::invalid_argument, both std::exception): the service counts, logs and drops it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "otpp/pid.hpp"

namespace otpp::registry_detail {

// Names and groups are bounded: they travel in every snapshot.
inline constexpr std::size_t max_key_length = 1024;

// Frame kind 0 of every replica channel: [0, want_snapshot]. A node sends it to a peer when it
// attaches (want_snapshot: it missed what came before) and when the peer comes up.
inline constexpr std::uint64_t hello_kind = 0;

// The incarnation a frame came from: the pids it announces as its own must be of it.
struct origin {
  node_atom atom;
  std::uint32_t creation = 0;
};

// Helpers to build frames: msgpack arrays whose first element is the kind.
template <class... T>
msgpack::sbuffer make_frame(std::uint64_t kind, const T&... fields) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(static_cast<std::uint32_t>(1 + sizeof...(T)));
  pk.pack(kind);
  (pk.pack(fields), ...);
  return b;
}

// Element i of a frame, or a type_error when the frame is too short.
inline const msgpack::object& field(const msgpack::object_array& a, std::uint32_t i) {
  if (i >= a.size) throw msgpack::type_error();
  return a.ptr[i];
}
// A bounded key (name or group): non-empty, at most max_key_length bytes.
inline std::string key_field(const msgpack::object_array& a, std::uint32_t i) {
  auto s = field(a, i).as<std::string>();
  if (s.empty() || s.size() > max_key_length) throw msgpack::type_error();
  return s;
}
// A valid pid of the sender's own incarnation.
pid homed_pid_field(const msgpack::object_array& a, std::uint32_t i, const origin& from);

// Unpacks untrusted bytes into `zone` (counts bounded by their size, nesting shallow): a
// non-empty array. Its kind is frame_kind().
msgpack::object_array unpack_frame(msgpack::zone& zone, std::span<const std::uint8_t> payload);
std::uint64_t frame_kind(const msgpack::object_array& f);
// [0, want_snapshot]
bool parse_hello(const msgpack::object_array& f);

namespace global_wire {

// Fields appended since the first version are optional on reading (an older peer's frame
// lacks them: epoch 0, no fences) and ignored by older readers: the replicas of a cluster may
// run different versions while it is upgraded.
enum : std::uint64_t {
  claim_kind = 1,       // home -> arbiter: [1, seq, name, pid, stamp, epoch]
  grant_kind = 2,       // arbiter -> home: [2, seq, name, pid]
  refuse_kind = 3,      // arbiter -> home: [3, seq, holder text, refusal]
  add_kind = 4,         // home -> all: [4, name, pid, seq, stamp, epoch]
  remove_kind = 5,      // home -> all: [5, name, pid, seq]
  snapshot_kind = 6,    // home -> peer: [6, [[name, pid, seq, stamp, epoch], ...],
                        //                [[name, epoch, pid], ...]]  (entries, then fences)
  unregister_kind = 7,  // any -> home: [7, name, pid, seq]
};

// Why an arbiter refused a claim. Pinned wire values (never errc numbers); a value this
// version does not know reads as `taken` (a refusal all the same).
enum class refusal : std::uint8_t {
  taken = 0,        // already_registered: the text names the holder
  stale_epoch = 1,  // stale_epoch: the text names the epoch that fences the claim
};

struct claim {
  std::uint64_t seq = 0;
  std::string name;
  pid holder;  // of the sender
  std::int64_t stamp = 0;
  std::uint64_t epoch = 0;  // 0: none
};
struct grant {
  std::uint64_t seq = 0;
  std::string name;
  pid holder;  // any node's: the receiver checks it is its own
};
struct refuse {
  std::uint64_t seq = 0;
  std::string holder;  // the holder's pid, or why the epoch is stale
  refusal why = refusal::taken;
};
// An add, and each entry of a snapshot.
struct registration {
  std::string name;
  pid holder;  // of the sender
  std::uint64_t seq = 0;
  std::int64_t stamp = 0;
  std::uint64_t epoch = 0;  // 0: none
};
// The highest epoch a replica saw registered for a name, and by whom (any node's process:
// hearsay, merged by keeping the higher epoch). epoch >= 1.
struct fence {
  std::string name;
  std::uint64_t epoch = 0;
  pid holder;
};
struct snapshot {
  std::vector<registration> entries;  // the sender's own registrations
  std::vector<fence> fences;          // what the sender remembers (absent from older peers)
};
// A remove (holder of the sender) or an unregister (holder of any node: its home checks).
struct removal {
  std::string name;
  pid holder;
  std::uint64_t seq = 0;
};

claim parse_claim(const msgpack::object_array& f, const origin& from);
grant parse_grant(const msgpack::object_array& f);
refuse parse_refuse(const msgpack::object_array& f);
registration parse_add(const msgpack::object_array& f, const origin& from);
removal parse_remove(const msgpack::object_array& f, const origin& from);
snapshot parse_snapshot(const msgpack::object_array& f, const origin& from);
removal parse_unregister(const msgpack::object_array& f);

}  // namespace global_wire

namespace groups_wire {

enum : std::uint64_t {
  join_kind = 1,      // home -> all: [1, group, pid, joins]
  leave_kind = 2,     // home -> all: [2, group, pid, joins]
  snapshot_kind = 3,  // home -> peer: [3, [[group, pid, joins], ...]]
};

// Joins of one pid to one group, at most: a count is materialised (members() lists a pid once
// per join, subscribers hear each), so a frame of a few bytes may not announce billions.
inline constexpr std::uint32_t max_joins = 65536;

// A join or a leave, and each entry of a snapshot: `joins` (1 to max_joins) joins of a pid of
// the sender.
struct membership {
  std::string group;
  pid member;
  std::uint32_t joins = 0;
};

// A join or a leave frame.
membership parse_change(const msgpack::object_array& f, const origin& from);
std::vector<membership> parse_snapshot(const msgpack::object_array& f, const origin& from);

}  // namespace groups_wire

}  // namespace otpp::registry_detail
