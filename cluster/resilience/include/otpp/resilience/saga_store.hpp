// Where a saga runner keeps its runs: one record per run (saga name, input, status) and an
// append-only log of step events, written ahead of the work they describe. A store is shared
// by every run of a runner and called from any node thread: implementations are thread-safe.
// Calls are short and local (memory, an SQLite file); a store that talks to a network belongs
// behind a local queue of its own.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "otpp/result.hpp"

namespace otpp::resilience {

// A run's state. Stored as these numbers: pinned, never renumbered.
enum class saga_status : std::uint8_t {
  running = 1,              // actions going forward
  compensating = 2,         // undoing completed steps, last first
  completed = 3,            // every action succeeded
  compensated = 4,          // a step failed and every compensation succeeded
  compensation_failed = 5,  // a step failed and at least one compensation gave up
};
const char* to_string(saga_status s) noexcept;
inline bool finished(saga_status s) noexcept {
  return s == saga_status::completed || s == saga_status::compensated ||
         s == saga_status::compensation_failed;
}

// One event of a step. Stored as these numbers: pinned, never renumbered.
enum class step_event : std::uint8_t {
  started = 1,               // written before the action runs: it may have run after this
  done = 2,                  // the action succeeded (detail: its output)
  failed = 3,                // the action failed (detail: the error)
  compensation_started = 4,  // written before each compensation attempt
  compensated = 5,           // the compensation succeeded
  compensation_error = 6,    // one compensation attempt failed (detail: the error); retried
  compensation_failed = 7,   // the compensation gave up (detail: the last error)
  // The action failed with an error its step compensates (saga_step::compensate_on_failure):
  // it may have taken effect (detail: the error).
  failed_compensate = 8,
};
const char* to_string(step_event e) noexcept;

struct step_record {
  std::string step{};
  step_event event = step_event::started;
  int attempt = 1;       // compensation attempts count from 1
  std::string detail{};  // output (done) or error text (failed, compensation_*)
  bool operator==(const step_record&) const = default;
};

struct saga_record {
  std::string run_id{};
  std::string saga{};
  std::string input{};
  saga_status status = saga_status::running;
  std::vector<step_record> log{};  // in the order appended
};

class saga_store {
 public:
  virtual ~saga_store() = default;
  // A new run (status running, empty log); already_registered if the id exists.
  virtual result<void> create(const saga_record& run) = 0;
  // Appends to the run's log (not_found: no such run). Durable when it returns.
  virtual result<void> append(const std::string& run_id, const step_record& r) = 0;
  virtual result<void> set_status(const std::string& run_id, saga_status s) = 0;
  // not_found: no such run.
  virtual result<saga_record> load(const std::string& run_id) = 0;
  // Every run not finished (running or compensating), oldest first.
  virtual result<std::vector<saga_record>> unfinished() = 0;
};

// In memory: a run outlives neither the process nor the store object. Tests and sagas that
// need no recovery.
class memory_saga_store final : public saga_store {
 public:
  static std::shared_ptr<memory_saga_store> make() { return std::make_shared<memory_saga_store>(); }
  result<void> create(const saga_record& run) override;
  result<void> append(const std::string& run_id, const step_record& r) override;
  result<void> set_status(const std::string& run_id, saga_status s) override;
  result<saga_record> load(const std::string& run_id) override;
  result<std::vector<saga_record>> unfinished() override;
  std::vector<saga_record> all() const;  // every run, oldest first

 private:
  mutable std::mutex mutex_;
  std::vector<saga_record> runs_;             // creation order
  std::map<std::string, std::size_t> index_;  // run id -> position in runs_
};

}  // namespace otpp::resilience
