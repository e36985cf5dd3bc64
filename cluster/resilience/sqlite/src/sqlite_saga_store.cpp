#include "otpp/resilience/sqlite_saga_store.hpp"

#include <sqlite3.h>

#include <functional>
#include <utility>

namespace otpp::resilience {
namespace {

class sqlite_category_t final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sqlite"; }
  std::string message(int code) const override { return sqlite3_errstr(code); }
};
const sqlite_category_t sqlite_category_instance{};

failure sqlite_failure(sqlite3* db, int rc, const char* what) {
  std::string text = what;
  if (db) text += std::string(": ") + sqlite3_errmsg(db);
  return failure(std::error_code(rc, sqlite_category_instance), std::move(text));
}

// A prepared statement, finalized on every path.
class statement {
 public:
  statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~statement() { sqlite3_finalize(stmt_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  int prepared() const { return rc_; }
  void bind(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void bind_text(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void bind(int i, long long v) { sqlite3_bind_int64(stmt_, i, v); }
  int step() { return sqlite3_step(stmt_); }
  std::string text(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string{};
  }
  long long integer(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// Runs one statement that returns no rows.
result<void> exec(sqlite3* db, const char* sql, const char* what,
                  const std::function<void(statement&)>& bind = {}) {
  statement s(db, sql);
  if (s.prepared() != SQLITE_OK) return sqlite_failure(db, s.prepared(), what);
  if (bind) bind(s);
  int rc = s.step();
  if (rc != SQLITE_DONE) return sqlite_failure(db, rc, what);
  return {};
}

}  // namespace

const std::error_category& sqlite_category() noexcept {
  return sqlite_category_instance;
}

result<std::shared_ptr<sqlite_saga_store>> sqlite_saga_store::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    auto f = sqlite_failure(db, rc, ("open " + path).c_str());
    sqlite3_close(db);
    return f;
  }
  auto store = std::shared_ptr<sqlite_saga_store>(new sqlite_saga_store(db));
  sqlite3_busy_timeout(db, 5000);
  // Statement by statement: a failure names the one that failed.
  const char* setup[] = {
      "PRAGMA journal_mode=WAL",
      "PRAGMA synchronous=FULL",
      "CREATE TABLE IF NOT EXISTS saga_runs(run_id TEXT PRIMARY KEY, saga TEXT NOT NULL, "
      "input BLOB NOT NULL, status INTEGER NOT NULL, created INTEGER NOT NULL)",
      "CREATE TABLE IF NOT EXISTS saga_log(run_id TEXT NOT NULL, seq INTEGER NOT NULL, "
      "step TEXT NOT NULL, event INTEGER NOT NULL, attempt INTEGER NOT NULL, detail BLOB NOT "
      "NULL, PRIMARY KEY(run_id, seq))",
      "CREATE INDEX IF NOT EXISTS saga_runs_status ON saga_runs(status)",
  };
  for (const char* sql : setup) {
    char* message = nullptr;
    rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
      std::string text = std::string(sql) + ": " + (message ? message : sqlite3_errstr(rc));
      sqlite3_free(message);
      return failure(std::error_code(rc, sqlite_category_instance), text);
    }
  }
  return store;
}

sqlite_saga_store::~sqlite_saga_store() {
  sqlite3_close(db_);
}

result<void> sqlite_saga_store::create(const saga_record& run) {
  std::lock_guard lock(mutex_);
  {
    statement s(db_, "SELECT 1 FROM saga_runs WHERE run_id = ?1");
    if (s.prepared() != SQLITE_OK) return sqlite_failure(db_, s.prepared(), "create");
    s.bind_text(1, run.run_id);
    if (s.step() == SQLITE_ROW) return failure(errc::already_registered, "run " + run.run_id);
  }
  return exec(db_,
              "INSERT INTO saga_runs(run_id, saga, input, status, created) VALUES(?1, ?2, ?3, ?4, "
              "(SELECT COALESCE(MAX(created), 0) + 1 FROM saga_runs))",
              "create", [&](statement& s) {
                s.bind_text(1, run.run_id);
                s.bind_text(2, run.saga);
                s.bind(3, run.input);
                s.bind(4, static_cast<long long>(run.status));
              });
}

result<void> sqlite_saga_store::append(const std::string& run_id, const step_record& r) {
  std::lock_guard lock(mutex_);
  {
    statement s(db_, "SELECT 1 FROM saga_runs WHERE run_id = ?1");
    if (s.prepared() != SQLITE_OK) return sqlite_failure(db_, s.prepared(), "append");
    s.bind_text(1, run_id);
    if (s.step() != SQLITE_ROW) return failure(errc::not_found, "run " + run_id);
  }
  return exec(db_,
              "INSERT INTO saga_log(run_id, seq, step, event, attempt, detail) VALUES(?1, "
              "(SELECT COALESCE(MAX(seq), 0) + 1 FROM saga_log WHERE run_id = ?1), ?2, ?3, ?4, ?5)",
              "append", [&](statement& s) {
                s.bind_text(1, run_id);
                s.bind_text(2, r.step);
                s.bind(3, static_cast<long long>(r.event));
                s.bind(4, static_cast<long long>(r.attempt));
                s.bind(5, r.detail);
              });
}

result<void> sqlite_saga_store::set_status(const std::string& run_id, saga_status st) {
  std::lock_guard lock(mutex_);
  auto r = exec(db_, "UPDATE saga_runs SET status = ?2 WHERE run_id = ?1", "set_status",
                [&](statement& s) {
                  s.bind_text(1, run_id);
                  s.bind(2, static_cast<long long>(st));
                });
  if (!r) return r;
  if (sqlite3_changes(db_) == 0) return failure(errc::not_found, "run " + run_id);
  return {};
}

result<saga_record> sqlite_saga_store::load_locked(const std::string& run_id) {
  saga_record rec;
  {
    statement s(db_, "SELECT saga, input, status FROM saga_runs WHERE run_id = ?1");
    if (s.prepared() != SQLITE_OK) return sqlite_failure(db_, s.prepared(), "load");
    s.bind_text(1, run_id);
    int rc = s.step();
    if (rc == SQLITE_DONE) return failure(errc::not_found, "run " + run_id);
    if (rc != SQLITE_ROW) return sqlite_failure(db_, rc, "load");
    rec.run_id = run_id;
    rec.saga = s.text(0);
    rec.input = s.text(1);
    rec.status = static_cast<saga_status>(s.integer(2));
  }
  statement s(db_,
              "SELECT step, event, attempt, detail FROM saga_log WHERE run_id = ?1 ORDER BY seq");
  if (s.prepared() != SQLITE_OK) return sqlite_failure(db_, s.prepared(), "load");
  s.bind_text(1, run_id);
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    rec.log.push_back({s.text(0), static_cast<step_event>(s.integer(1)),
                       static_cast<int>(s.integer(2)), s.text(3)});
  }
  if (rc != SQLITE_DONE) return sqlite_failure(db_, rc, "load");
  return rec;
}

result<saga_record> sqlite_saga_store::load(const std::string& run_id) {
  std::lock_guard lock(mutex_);
  return load_locked(run_id);
}

result<std::vector<saga_record>> sqlite_saga_store::unfinished() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> ids;
  {
    statement s(db_, "SELECT run_id FROM saga_runs WHERE status IN (?1, ?2) ORDER BY created");
    if (s.prepared() != SQLITE_OK) return sqlite_failure(db_, s.prepared(), "unfinished");
    s.bind(1, static_cast<long long>(saga_status::running));
    s.bind(2, static_cast<long long>(saga_status::compensating));
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) ids.push_back(s.text(0));
    if (rc != SQLITE_DONE) return sqlite_failure(db_, rc, "unfinished");
  }
  std::vector<saga_record> out;
  for (const auto& id : ids) {
    auto r = load_locked(id);
    if (!r) return r.fail();
    out.push_back(std::move(*r));
  }
  return out;
}

}  // namespace otpp::resilience
