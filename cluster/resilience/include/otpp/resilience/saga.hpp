// Sagas: multi-step workflows across processes and nodes. Each step has an action and,
// usually, a compensation that undoes it; when an action fails, the steps done so far are
// compensated last first. Compensations are retried with backoff (node timers, node clock)
// and a compensation that gives up is reported in the outcome and logged, never dropped.
// Every run has an id and a log of step events in a saga_store, written ahead: "started"
// before an action runs, "done"/"failed" after, "compensation_started" before each
// compensation attempt, "compensated"/"compensation_failed" after. recover() picks up the
// runs a restarted node finds unfinished in its store (see recovery_mode).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/saga_store.hpp"

namespace otpp::resilience {

// What a step's action or compensation gets. It stays valid until the operation completes.
struct saga_context {
  std::string run_id{};
  std::string saga{};
  std::string step{};
  // run_id + "/" + step: the same on every run of this step of this run, also after a
  // restart, so the receiving side can drop a repeated request.
  std::string idempotency_key{};
  std::string input{};
  std::vector<std::pair<std::string, std::string>> outputs{};  // earlier steps done, in order
  int attempt = 1;                                             // compensations: the attempt, from 1
  bool recovered = false;  // run by recover(): this action or compensation may have run before

  // An earlier step's output: its raw bytes (std::string and void steps store them as they
  // are, others as msgpack); null if that step has not completed.
  const std::string* output(std::string_view step_name) const;
  // Decoded as T (not_found: no output; bad_message: does not decode as T).
  template <class T>
  result<T> output_as(std::string_view step_name) const;
};

namespace detail {
using saga_action_fn =
    std::function<void(const saga_context&, std::function<void(result<std::string>)>)>;
using saga_compensation_fn =
    std::function<void(const saga_context&, std::function<void(result<void>)>)>;

template <class Op>
using step_value_t =
    typename value_of_signature<typename decltype(std::declval<std::decay_t<Op>&>()(
        std::declval<const saga_context&>(), probe_token{}))::signature>::type;

template <class T>
std::string to_output(T& value) {
  if constexpr (std::is_convertible_v<T, std::string>) {
    return std::string(std::move(value));
  } else {
    msgpack::sbuffer buf;
    msgpack::pack(buf, value);
    return std::string(buf.data(), buf.size());
  }
}
}  // namespace detail

// One step. action(ctx, token) and compensation(ctx, token) are asynchronous operations
// (as in async.hpp, given the context first) completing with void(result<T>) for any T: void,
// std::string, or a msgpack-serialisable value (the step's output, kept in the store).
class saga_step {
 public:
  template <class Action, class Compensation>
  static saga_step make(std::string name, Action action, Compensation compensation) {
    saga_step s = make(std::move(name), std::move(action));
    using U = detail::step_value_t<Compensation>;
    s.compensation_ = [c = std::move(compensation)](const saga_context& ctx,
                                                    std::function<void(result<void>)> done) {
      c(ctx, [done = std::move(done)](result<U> r) {
        if (!r) return done(r.fail());
        done(result<void>{});
      });
    };
    return s;
  }
  // A step with nothing to undo (a read, a last irreversible step).
  template <class Action>
  static saga_step make(std::string name, Action action) {
    using T = detail::step_value_t<Action>;
    saga_step s;
    s.name_ = std::move(name);
    s.action_ = [a = std::move(action)](const saga_context& ctx,
                                        std::function<void(result<std::string>)> done) {
      a(ctx, [done = std::move(done)](result<T> r) {
        if (!r) return done(r.fail());
        if constexpr (std::is_void_v<T>) {
          done(std::string{});
        } else {
          done(detail::to_output(*r));
        }
      });
    };
    return s;
  }

  // Also compensate this step when its own action fails with an error `when` accepts (empty:
  // any error): for an action whose failure may still have taken effect, such as a timeout
  // of a remote call that went through. Its compensation runs first, then the earlier ones.
  saga_step compensate_on_failure(std::function<bool(const failure&)> when = {}) && {
    if (when) {
      compensate_on_failure_ = std::move(when);
    } else {
      compensate_on_failure_ = [](const failure&) { return true; };
    }
    return std::move(*this);
  }
  bool compensates_failure(const failure& f) const {
    return compensate_on_failure_ && compensation_ && compensate_on_failure_(f);
  }

  const std::string& name() const noexcept { return name_; }
  bool has_compensation() const noexcept { return static_cast<bool>(compensation_); }
  const detail::saga_action_fn& action() const noexcept { return action_; }
  const detail::saga_compensation_fn& compensation() const noexcept { return compensation_; }

 private:
  std::string name_;
  detail::saga_action_fn action_;
  detail::saga_compensation_fn compensation_;
  std::function<bool(const failure&)> compensate_on_failure_;
};

// Backoff between compensation attempts: attempt n+1 starts
// min(max_delay, initial_delay * multiplier^(n-1)) after attempt n failed.
struct saga_backoff {
  int max_attempts = 5;  // counting the first
  clock_type::duration initial_delay = std::chrono::milliseconds(100);
  double multiplier = 2.0;
  clock_type::duration max_delay = std::chrono::seconds(10);
};

// What recover() does with a run that was going forward when its node stopped. Its step in
// flight ("started" in the log, no "done"/"failed") may or may not have taken effect.
enum class recovery_mode {
  // Default: the run is abandoned and compensated; the step in flight counts as possibly done
  // and is compensated too (its compensation must accept "nothing to undo", keyed by the
  // step's idempotency key).
  compensate,
  // The step in flight is run again with the same idempotency key (the action must be
  // idempotent), then the run goes on.
  resume,
};

struct saga_definition {
  std::string name{};              // unique in a runner
  std::vector<saga_step> steps{};  // unique, non-empty names without '/'
  saga_backoff compensation_retry{};
  recovery_mode on_recovery = recovery_mode::compensate;
};

struct saga_step_failure {
  std::string step{};
  failure error{};
};

struct saga_outcome {
  std::string run_id{};
  saga_status status = saga_status::completed;  // completed, compensated, compensation_failed
  // The action that failed (compensated / compensation_failed); for a run abandoned by a
  // restart, the step in flight (or the last one done) with errc::node_stopped.
  std::optional<saga_step_failure> failed_step{};
  // Every compensation that gave up, with its last error.
  std::vector<saga_step_failure> compensation_failures{};
  std::vector<std::pair<std::string, std::string>> outputs{};  // steps done, in order
  std::vector<step_record> log{};  // the run's whole log, also from before a restart
  bool recovered = false;          // finished by recover()
};

struct saga_recovery {
  std::vector<saga_outcome> runs{};  // every unfinished run found, now finished
  // Runs of a saga not defined in this runner: left in the store as they were.
  std::vector<std::string> undefined{};
  // Runs that could not be finished because the store failed: still unfinished there.
  std::vector<std::pair<std::string, failure>> errors{};
};

namespace detail {
class saga_engine;
}

// The node's saga runner (a node service): saga_runner::of(node).
class saga_runner final : public node_service {
 public:
  explicit saga_runner(node& n);
  ~saga_runner() override;
  static saga_runner& of(node& n) { return n.use_service<saga_runner>(); }

  // The store for runs started from now on (default: a memory_saga_store). Set it before
  // starting or recovering runs.
  void use_store(std::shared_ptr<saga_store> store);
  std::shared_ptr<saga_store> store() const;

  // invalid_argument: no name, no step, a step name empty, repeated or with '/', a step with
  // no action, max_attempts < 1; already_registered: a saga of that name exists.
  result<void> define(saga_definition d);

  // Starts a run of saga `name`: completes with void(result<saga_outcome>) when it has
  // finished (completed, compensated or compensation_failed: a failed step is an outcome, not
  // an error). Errors: not_found (no such saga), the store's error (the run stays in the
  // store, unfinished, for recover()). Never completes inside this call.
  template <class Token>
  auto start(std::string name, std::string input, Token&& token) {
    return asio::async_initiate<Token, void(result<saga_outcome>)>(
        [this](auto handler, std::string name, std::string input) {
          using T = saga_outcome;
          if (detail::refuse_blocking_wait<Token, T>(handler)) return;
          start_erased(std::move(name), std::move(input), erase<T>(std::move(handler)));
        },
        token, std::move(name), std::move(input));
  }

  // Finishes every unfinished run in the store (after a restart): a compensating run goes on
  // compensating the steps not yet compensated; a running one is compensated or resumed
  // (its saga's on_recovery). Runs started by this runner and still going are left alone.
  // Completes with void(result<saga_recovery>) once all have finished; the error is the
  // store's, if it cannot list them.
  template <class Token>
  auto recover(Token&& token) {
    return asio::async_initiate<Token, void(result<saga_recovery>)>(
        [this](auto handler) {
          using T = saga_recovery;
          if (detail::refuse_blocking_wait<Token, T>(handler)) return;
          recover_erased(erase<T>(std::move(handler)));
        },
        token);
  }

 private:
  template <class T, class Handler>
  static std::function<void(result<T>)> erase(Handler h) {
    auto shared = std::make_shared<Handler>(std::move(h));
    return [shared](result<T> r) { detail::complete(*shared, std::move(r)); };
  }
  void start_erased(std::string name, std::string input,
                    std::function<void(result<saga_outcome>)> done);
  void recover_erased(std::function<void(result<saga_recovery>)> done);

  std::shared_ptr<detail::saga_engine> engine_;
};

template <class T>
result<T> saga_context::output_as(std::string_view step_name) const {
  const std::string* raw = output(step_name);
  if (!raw) return failure(errc::not_found, "no output of step " + std::string(step_name));
  if constexpr (std::is_convertible_v<std::string, T>) {
    return T(*raw);
  } else {
    try {
      auto handle = msgpack::unpack(raw->data(), raw->size());
      return handle.get().as<T>();
    } catch (const std::exception& e) {
      return failure(errc::bad_message, e.what());
    }
  }
}

}  // namespace otpp::resilience
