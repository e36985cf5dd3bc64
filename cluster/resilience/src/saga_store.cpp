#include "otpp/resilience/saga_store.hpp"

namespace otpp::resilience {

const char* to_string(saga_status s) noexcept {
  switch (s) {
    case saga_status::running:
      return "running";
    case saga_status::compensating:
      return "compensating";
    case saga_status::completed:
      return "completed";
    case saga_status::compensated:
      return "compensated";
    case saga_status::compensation_failed:
      return "compensation_failed";
  }
  return "?";
}

const char* to_string(step_event e) noexcept {
  switch (e) {
    case step_event::started:
      return "started";
    case step_event::done:
      return "done";
    case step_event::failed:
      return "failed";
    case step_event::compensation_started:
      return "compensation_started";
    case step_event::compensated:
      return "compensated";
    case step_event::compensation_error:
      return "compensation_error";
    case step_event::compensation_failed:
      return "compensation_failed";
    case step_event::failed_compensate:
      return "failed_compensate";
  }
  return "?";
}

result<void> memory_saga_store::create(const saga_record& run) {
  std::lock_guard lock(mutex_);
  if (index_.count(run.run_id)) return failure(errc::already_registered, "run " + run.run_id);
  index_.emplace(run.run_id, runs_.size());
  runs_.push_back(run);
  return {};
}

result<void> memory_saga_store::append(const std::string& run_id, const step_record& r) {
  std::lock_guard lock(mutex_);
  auto it = index_.find(run_id);
  if (it == index_.end()) return failure(errc::not_found, "run " + run_id);
  runs_[it->second].log.push_back(r);
  return {};
}

result<void> memory_saga_store::set_status(const std::string& run_id, saga_status s) {
  std::lock_guard lock(mutex_);
  auto it = index_.find(run_id);
  if (it == index_.end()) return failure(errc::not_found, "run " + run_id);
  runs_[it->second].status = s;
  return {};
}

result<saga_record> memory_saga_store::load(const std::string& run_id) {
  std::lock_guard lock(mutex_);
  auto it = index_.find(run_id);
  if (it == index_.end()) return failure(errc::not_found, "run " + run_id);
  return runs_[it->second];
}

result<std::vector<saga_record>> memory_saga_store::unfinished() {
  std::lock_guard lock(mutex_);
  std::vector<saga_record> out;
  for (const auto& r : runs_) {
    if (!finished(r.status)) out.push_back(r);
  }
  return out;
}

std::vector<saga_record> memory_saga_store::all() const {
  std::lock_guard lock(mutex_);
  return runs_;
}

}  // namespace otpp::resilience
