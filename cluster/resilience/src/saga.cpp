#include "otpp/resilience/saga.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "otpp/log.hpp"

namespace otpp::resilience {

const std::string* saga_context::output(std::string_view step_name) const {
  for (const auto& [name, value] : outputs) {
    if (name == step_name) return &value;
  }
  return nullptr;
}

namespace detail {

// The runner's shared state: definitions, the store, and the ids of the runs going on here.
class saga_engine : public std::enable_shared_from_this<saga_engine> {
 public:
  explicit saga_engine(node& n)
      : owner(n), nonce(std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32)) {}

  node& owner;
  mutable std::mutex mutex;
  std::shared_ptr<saga_store> store = memory_saga_store::make();
  std::map<std::string, std::shared_ptr<const saga_definition>> definitions;
  std::set<std::string> active;
  const std::uint64_t nonce;  // run ids of two runner lifetimes never collide
  std::atomic<std::uint64_t> counter{0};

  std::shared_ptr<saga_store> current_store() const {
    std::lock_guard lock(mutex);
    return store;
  }
  std::shared_ptr<const saga_definition> find(const std::string& name) const {
    std::lock_guard lock(mutex);
    auto it = definitions.find(name);
    return it == definitions.end() ? nullptr : it->second;
  }
  std::string new_run_id(const std::string& saga) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "-%016llx-%llu", static_cast<unsigned long long>(nonce),
                  static_cast<unsigned long long>(++counter));
    return saga + buf;
  }
  // False if the run is going on here already.
  bool activate(const std::string& run_id) {
    std::lock_guard lock(mutex);
    return active.insert(run_id).second;
  }
  void deactivate(const std::string& run_id) {
    std::lock_guard lock(mutex);
    active.erase(run_id);
  }
};

// One run: a chain of asynchronous steps, one at a time, so its members are touched by one
// completion after another (each completion happens after the operation it ends started).
class saga_run : public std::enable_shared_from_this<saga_run> {
 public:
  saga_run(std::shared_ptr<saga_engine> e, std::shared_ptr<saga_store> s,
           std::shared_ptr<const saga_definition> d, std::function<void(result<saga_outcome>)> f)
      : engine_(std::move(e)), store_(std::move(s)), def_(std::move(d)), done_(std::move(f)) {}

  // A new run: records it, then goes forward from the first step.
  void begin(std::string input) {
    record_.run_id = engine_->new_run_id(def_->name);
    record_.saga = def_->name;
    record_.input = std::move(input);
    record_.status = saga_status::running;
    engine_->activate(record_.run_id);
    if (auto r = store_->create(record_); !r) return abort(r.fail());
    forward();
  }

  // A run found unfinished in the store (see recovery_mode in saga.hpp).
  void resume_from(saga_record rec) {
    record_ = std::move(rec);
    recovered_ = true;
    log_ = record_.log;
    const auto& steps = def_->steps;
    auto index_of = [&](const std::string& name) -> std::optional<std::size_t> {
      for (std::size_t i = 0; i < steps.size(); ++i) {
        if (steps[i].name() == name) return i;
      }
      return std::nullopt;
    };
    // Per step: last forward event, whether its compensation is settled.
    std::vector<std::optional<step_event>> forward_state(steps.size());
    std::vector<bool> settled(steps.size(), false);
    std::vector<std::string> output(steps.size());
    for (const auto& e : log_) {
      auto i = index_of(e.step);
      if (!i) continue;  // a step the definition no longer has: nothing we can run
      switch (e.event) {
        case step_event::started:
        case step_event::done:
        case step_event::failed:
        case step_event::failed_compensate:
          forward_state[*i] = e.event;
          if (e.event == step_event::done) output[*i] = e.detail;
          break;
        case step_event::compensated:
          settled[*i] = true;
          break;
        case step_event::compensation_failed:
          settled[*i] = true;
          failures_.push_back({e.step, failure(errc::exit, e.detail)});
          break;
        default:
          break;
      }
    }
    std::optional<std::size_t> in_flight, failed;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (forward_state[i] == step_event::done) {
        outputs_.emplace_back(steps[i].name(), output[i]);
        next_ = i + 1;
      } else if (forward_state[i] == step_event::started) {
        in_flight = i;
      } else if (forward_state[i] == step_event::failed ||
                 forward_state[i] == step_event::failed_compensate) {
        failed = i;
      }
    }
    auto possibly_done = [&](std::size_t i) {
      return forward_state[i] == step_event::done || forward_state[i] == step_event::started ||
             forward_state[i] == step_event::failed_compensate;
    };
    if (record_.status == saga_status::running && !failed &&
        def_->on_recovery == recovery_mode::resume) {
      for (std::size_t i = 0; i < steps.size(); ++i) {
        if (forward_state[i] == step_event::done && steps[i].has_compensation()) undo_.push_back(i);
      }
      if (in_flight) next_ = *in_flight;
      return forward();
    }
    // Compensate: every step done or possibly done whose compensation is not settled.
    if (failed) {
      failed_step_ = saga_step_failure{steps[*failed].name(), failure(errc::exit, "failed")};
      for (const auto& e : log_) {
        if (e.step == steps[*failed].name() &&
            (e.event == step_event::failed || e.event == step_event::failed_compensate))
          failed_step_->error = failure(errc::exit, e.detail);
      }
    } else {
      std::size_t at = in_flight ? *in_flight : (next_ > 0 ? next_ - 1 : 0);
      failed_step_ = saga_step_failure{steps.empty() ? std::string{} : steps[at].name(),
                                       failure(errc::node_stopped, "run interrupted by a restart")};
    }
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (possibly_done(i) && !settled[i] && steps[i].has_compensation()) undo_.push_back(i);
    }
    start_compensating();
  }

 private:
  saga_context context_for(std::size_t i, int attempt) const {
    saga_context c;
    c.run_id = record_.run_id;
    c.saga = record_.saga;
    c.step = def_->steps[i].name();
    c.idempotency_key = record_.run_id + "/" + c.step;
    c.input = record_.input;
    c.outputs = outputs_;
    c.attempt = attempt;
    c.recovered = recovered_;
    return c;
  }

  result<void> write(const std::string& step, step_event e, int attempt = 1,
                     std::string detail = {}) {
    step_record r{step, e, attempt, std::move(detail)};
    auto w = store_->append(record_.run_id, r);
    if (w) log_.push_back(std::move(r));
    return w;
  }

  // Runs the action of step next_, or finishes when there is none.
  void forward() {
    if (next_ >= def_->steps.size()) {
      if (auto r = store_->set_status(record_.run_id, saga_status::completed); !r)
        return abort(r.fail());
      return finish(saga_status::completed);
    }
    const std::size_t i = next_;
    const auto& step = def_->steps[i];
    if (auto r = write(step.name(), step_event::started); !r) return abort(r.fail());
    auto ctx = std::make_shared<saga_context>(context_for(i, 1));
    auto once = std::make_shared<std::atomic<bool>>(false);
    auto self = shared_from_this();
    auto on_done = [self, ctx, once, i](result<std::string> r) {
      if (once->exchange(true)) {
        log(log_level::error, "saga", "run ", ctx->run_id, ": action of step ", ctx->step,
            " completed twice; the second completion is ignored");
        return;
      }
      self->action_done(i, std::move(r));
    };
    try {
      step.action()(*ctx, on_done);
    } catch (const std::exception& e) {
      on_done(failure(errc::exit, std::string("action threw: ") + e.what()));
    }
  }

  void action_done(std::size_t i, result<std::string> r) {
    const auto& step = def_->steps[i];
    if (r) {
      if (auto w = write(step.name(), step_event::done, 1, *r); !w) return abort(w.fail());
      outputs_.emplace_back(step.name(), std::move(*r));
      if (step.has_compensation()) undo_.push_back(i);
      next_ = i + 1;
      return forward();
    }
    log(log_level::info, "saga", "run ", record_.run_id, ": step ", step.name(), " failed (",
        r.fail().message(), "); compensating ", undo_.size(), " step(s)");
    const bool undo_it = step.compensates_failure(r.fail());
    if (auto w = write(step.name(), undo_it ? step_event::failed_compensate : step_event::failed, 1,
                       r.fail().message());
        !w)
      return abort(w.fail());
    failed_step_ = saga_step_failure{step.name(), r.fail()};
    if (undo_it) undo_.push_back(i);
    start_compensating();
  }

  void start_compensating() {
    if (auto r = store_->set_status(record_.run_id, saga_status::compensating); !r)
      return abort(r.fail());
    compensate_next();
  }

  // Compensates the last step still to undo, or finishes.
  void compensate_next() {
    if (undo_.empty()) {
      auto s = failures_.empty() ? saga_status::compensated : saga_status::compensation_failed;
      if (auto r = store_->set_status(record_.run_id, s); !r) return abort(r.fail());
      return finish(s);
    }
    compensate(undo_.back(), 1);
  }

  void compensate(std::size_t i, int attempt) {
    const auto& step = def_->steps[i];
    if (auto r = write(step.name(), step_event::compensation_started, attempt); !r)
      return abort(r.fail());
    auto ctx = std::make_shared<saga_context>(context_for(i, attempt));
    auto once = std::make_shared<std::atomic<bool>>(false);
    auto self = shared_from_this();
    auto on_done = [self, ctx, once, i, attempt](result<void> r) {
      if (once->exchange(true)) {
        log(log_level::error, "saga", "run ", ctx->run_id, ": compensation of step ", ctx->step,
            " completed twice; the second completion is ignored");
        return;
      }
      self->compensation_done(i, attempt, std::move(r));
    };
    try {
      step.compensation()(*ctx, on_done);
    } catch (const std::exception& e) {
      on_done(failure(errc::exit, std::string("compensation threw: ") + e.what()));
    }
  }

  void compensation_done(std::size_t i, int attempt, result<void> r) {
    const auto& step = def_->steps[i];
    const auto& backoff = def_->compensation_retry;
    if (r) {
      if (auto w = write(step.name(), step_event::compensated, attempt); !w) return abort(w.fail());
      undo_.pop_back();
      return compensate_next();
    }
    if (attempt < backoff.max_attempts) {
      if (auto w = write(step.name(), step_event::compensation_error, attempt, r.fail().message());
          !w)
        return abort(w.fail());
      auto delay = delay_after(attempt);
      log(log_level::warning, "saga", "run ", record_.run_id, ": compensation of step ",
          step.name(), " failed (attempt ", attempt, "): ", r.fail().message(), "; retrying in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(delay).count(), " ms");
      engine_->owner.run_after(
          delay, [self = shared_from_this(), i, attempt] { self->compensate(i, attempt + 1); });
      return;
    }
    log(log_level::error, "saga", "run ", record_.run_id, ": compensation of step ", step.name(),
        " gave up after ", attempt, " attempt(s): ", r.fail().message());
    if (auto w = write(step.name(), step_event::compensation_failed, attempt, r.fail().message());
        !w)
      return abort(w.fail());
    failures_.push_back({step.name(), r.fail()});
    undo_.pop_back();
    compensate_next();
  }

  clock_type::duration delay_after(int attempt) const {
    const auto& b = def_->compensation_retry;
    using rep = clock_type::duration::rep;
    double grown = static_cast<double>(b.initial_delay.count()) *
                   std::pow(std::max(1.0, b.multiplier), attempt - 1);
    const rep cap = std::max(b.max_delay, b.initial_delay).count();
    return clock_type::duration(grown >= static_cast<double>(cap) ? cap : static_cast<rep>(grown));
  }

  void finish(saga_status s) {
    saga_outcome o;
    o.run_id = record_.run_id;
    o.status = s;
    o.failed_step = std::move(failed_step_);
    o.compensation_failures = std::move(failures_);
    o.outputs = std::move(outputs_);
    o.log = std::move(log_);
    o.recovered = recovered_;
    engine_->deactivate(record_.run_id);
    auto f = std::move(done_);
    f(std::move(o));
  }

  // The store failed: the run cannot go on safely (its log would lie). It stays unfinished
  // in the store, for recover().
  void abort(failure f) {
    log(log_level::error, "saga", "run ", record_.run_id, ": store failed (", f.message(),
        "); the run is left for recover()");
    engine_->deactivate(record_.run_id);
    auto d = std::move(done_);
    d(std::move(f));
  }

  std::shared_ptr<saga_engine> engine_;
  std::shared_ptr<saga_store> store_;
  std::shared_ptr<const saga_definition> def_;
  std::function<void(result<saga_outcome>)> done_;
  saga_record record_;
  std::vector<step_record> log_;
  std::vector<std::pair<std::string, std::string>> outputs_;
  std::vector<std::size_t> undo_;  // steps to compensate, the last one first
  std::size_t next_ = 0;
  bool recovered_ = false;
  std::optional<saga_step_failure> failed_step_;
  std::vector<saga_step_failure> failures_;
};

}  // namespace detail

saga_runner::saga_runner(node& n) : engine_(std::make_shared<detail::saga_engine>(n)) {}
saga_runner::~saga_runner() = default;

void saga_runner::use_store(std::shared_ptr<saga_store> store) {
  std::lock_guard lock(engine_->mutex);
  engine_->store = std::move(store);
}

std::shared_ptr<saga_store> saga_runner::store() const {
  return engine_->current_store();
}

result<void> saga_runner::define(saga_definition d) {
  if (d.name.empty()) return failure(errc::invalid_argument, "a saga needs a name");
  if (d.steps.empty()) return failure(errc::invalid_argument, "saga " + d.name + " has no step");
  if (d.compensation_retry.max_attempts < 1)
    return failure(errc::invalid_argument, "saga " + d.name + ": max_attempts < 1");
  std::set<std::string> names;
  for (const auto& s : d.steps) {
    if (s.name().empty() || s.name().find('/') != std::string::npos)
      return failure(errc::invalid_argument,
                     "saga " + d.name + ": a step name is empty or has a '/': " + s.name());
    if (!s.action())
      return failure(errc::invalid_argument,
                     "saga " + d.name + ": step " + s.name() + " has no action");
    if (!names.insert(s.name()).second)
      return failure(errc::invalid_argument,
                     "saga " + d.name + ": step " + s.name() + " appears twice");
  }
  std::lock_guard lock(engine_->mutex);
  auto name = d.name;
  auto [it, inserted] =
      engine_->definitions.emplace(name, std::make_shared<const saga_definition>(std::move(d)));
  if (!inserted) return failure(errc::already_registered, "saga " + name);
  return {};
}

void saga_runner::start_erased(std::string name, std::string input,
                               std::function<void(result<saga_outcome>)> done) {
  // Always from the pool: the caller's call returns before any step runs or completes.
  asio::post(
      engine_->owner.context(), [e = engine_, name = std::move(name), input = std::move(input),
                                 done = std::move(done)]() mutable {
        auto def = e->find(name);
        if (!def) return done(failure(errc::not_found, "no saga " + name));
        auto store = e->current_store();
        std::make_shared<detail::saga_run>(e, store, def, std::move(done))->begin(std::move(input));
      });
}

void saga_runner::recover_erased(std::function<void(result<saga_recovery>)> done) {
  asio::post(engine_->owner.context(), [e = engine_, done = std::move(done)]() mutable {
    auto store = e->current_store();
    auto runs = store->unfinished();
    if (!runs) return done(runs.fail());
    struct gather {
      std::mutex mutex;
      saga_recovery report;
      std::size_t left = 0;
      std::function<void(result<saga_recovery>)> done;
    };
    auto g = std::make_shared<gather>();
    g->done = std::move(done);
    std::vector<std::pair<std::shared_ptr<detail::saga_run>, saga_record>> todo;
    for (auto& rec : *runs) {
      auto def = e->find(rec.saga);
      if (!def) {
        log(log_level::warning, "saga", "run ", rec.run_id, " of undefined saga ", rec.saga,
            " left in the store");
        g->report.undefined.push_back(rec.run_id);
        continue;
      }
      if (!e->activate(rec.run_id)) continue;  // going on here already
      auto id = rec.run_id;
      auto run = std::make_shared<detail::saga_run>(e, store, def, [g, id](result<saga_outcome> r) {
        std::unique_lock lock(g->mutex);
        if (r) {
          g->report.runs.push_back(std::move(*r));
        } else {
          g->report.errors.emplace_back(id, r.fail());
        }
        if (--g->left > 0) return;
        auto report = std::move(g->report);
        lock.unlock();
        g->done(std::move(report));
      });
      todo.emplace_back(std::move(run), std::move(rec));
    }
    g->left = todo.size();
    if (todo.empty()) return g->done(std::move(g->report));
    for (auto& [run, rec] : todo) run->resume_from(std::move(rec));
  });
}

}  // namespace otpp::resilience
