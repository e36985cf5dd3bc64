// A saga_store in an SQLite file (Debian's libsqlite3), so a node that restarts on the same
// file finds its unfinished runs (saga_runner::recover). Target otpp::resilience_sqlite.
// Every write is its own transaction, synchronous=FULL in WAL mode: durable when it returns,
// also across a crash of the process or the machine. One connection per store, serialised by
// a mutex; two stores (or processes) on one file are not supported.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include "otpp/resilience/saga_store.hpp"

struct sqlite3;

namespace otpp::resilience {

// SQLite's result codes (SQLITE_BUSY, SQLITE_IOERR, ...) as error codes of category "sqlite".
const std::error_category& sqlite_category() noexcept;

class sqlite_saga_store final : public saga_store {
 public:
  // Opens (creating if needed) the database at `path` and its tables. Errors: sqlite_category.
  static result<std::shared_ptr<sqlite_saga_store>> open(const std::string& path);
  ~sqlite_saga_store() override;
  sqlite_saga_store(const sqlite_saga_store&) = delete;
  sqlite_saga_store& operator=(const sqlite_saga_store&) = delete;

  result<void> create(const saga_record& run) override;
  result<void> append(const std::string& run_id, const step_record& r) override;
  result<void> set_status(const std::string& run_id, saga_status s) override;
  result<saga_record> load(const std::string& run_id) override;
  result<std::vector<saga_record>> unfinished() override;

 private:
  explicit sqlite_saga_store(sqlite3* db) : db_(db) {}
  result<saga_record> load_locked(const std::string& run_id);
  std::mutex mutex_;
  sqlite3* db_;
};

}  // namespace otpp::resilience
