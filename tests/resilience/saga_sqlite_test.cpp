// The SQLite saga store: what is written is read back, also by a store opened again on the
// same file; errors are values; and a saga runner's run survives in it.
#include <unistd.h>

#include <filesystem>
#include <optional>

#include <gtest/gtest.h>

#include "otpp/resilience/saga.hpp"
#include "otpp/resilience/sqlite_saga_store.hpp"
#include "otpp/runtime.hpp"
#include "resilience/saga_support.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace res = otpp::resilience;
namespace fs = std::filesystem;
using res::saga_status;
using res::step_event;

struct saga_sqlite : ::testing::Test {
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("otpp_saga_sqlite_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string db() const { return (dir / "sagas.db").string(); }
};

TEST_F(saga_sqlite, WritesReadBackAndSurviveReopening) {
  const std::string binary("in\0put\xff", 7);  // inputs and outputs are bytes
  {
    auto store = res::sqlite_saga_store::open(db());
    ASSERT_TRUE(store) << store.fail().message();
    auto& s = **store;
    ASSERT_TRUE(s.create({.run_id = "r1", .saga = "order", .input = binary}));
    ASSERT_TRUE(s.create({.run_id = "r2", .saga = "order", .input = "x"}));
    ASSERT_TRUE(s.create({.run_id = "r3", .saga = "other", .input = "y"}));
    EXPECT_EQ(s.create({.run_id = "r1", .saga = "order"}).error(), errc::already_registered);
    ASSERT_TRUE(s.append("r1", {"reserve", step_event::started}));
    ASSERT_TRUE(s.append("r1", {"reserve", step_event::done, 1, binary}));
    ASSERT_TRUE(s.append("r1", {"reserve", step_event::compensation_error, 2, "timeout"}));
    ASSERT_TRUE(s.append("r2", {"reserve", step_event::started}));
    ASSERT_TRUE(s.set_status("r1", saga_status::compensating));
    ASSERT_TRUE(s.set_status("r2", saga_status::completed));
    EXPECT_EQ(s.append("nope", {"reserve", step_event::started}).error(), errc::not_found);
    EXPECT_EQ(s.set_status("nope", saga_status::completed).error(), errc::not_found);
    EXPECT_EQ(s.load("nope").error(), errc::not_found);
  }
  auto store = res::sqlite_saga_store::open(db());
  ASSERT_TRUE(store) << store.fail().message();
  auto r1 = (*store)->load("r1");
  ASSERT_TRUE(r1) << r1.fail().message();
  EXPECT_EQ(r1->saga, "order");
  EXPECT_EQ(r1->input, binary);
  EXPECT_EQ(r1->status, saga_status::compensating);
  EXPECT_EQ(r1->log, (std::vector<res::step_record>{
                         {"reserve", step_event::started, 1, ""},
                         {"reserve", step_event::done, 1, binary},
                         {"reserve", step_event::compensation_error, 2, "timeout"}}));
  auto open = (*store)->unfinished();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 2u);  // r1 (compensating) and r3 (running), oldest first
  EXPECT_EQ((*open)[0].run_id, "r1");
  EXPECT_EQ((*open)[0].log.size(), 3u);
  EXPECT_EQ((*open)[1].run_id, "r3");
}

TEST_F(saga_sqlite, AFileThatCannotBeOpenedIsAnSqliteError) {
  auto store = res::sqlite_saga_store::open((dir / "missing" / "sagas.db").string());
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().category(), res::sqlite_category());
  EXPECT_EQ(store.error().value(), 14);  // SQLITE_CANTOPEN
  // Not a database at all.
  {
    std::FILE* f = std::fopen(db().c_str(), "wb");
    ASSERT_TRUE(f);
    std::fputs("this is not an sqlite database, not at all, it is just text of some length", f);
    std::fclose(f);
  }
  auto garbage = res::sqlite_saga_store::open(db());
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error().category(), res::sqlite_category());
  EXPECT_EQ(garbage.error().value(), 26);  // SQLITE_NOTADB
}

TEST_F(saga_sqlite, ARunnersRunIsInTheFileAfterItsNodeIsGone) {
  std::string id;
  {
    auto clock = std::make_shared<otpp::manual_clock>();
    otpp::node node({.name = "saga_sqlite", .clock = clock, .manual = true});
    node.start();
    saga_script s{.node = &node};
    auto store = res::sqlite_saga_store::open(db());
    ASSERT_TRUE(store);
    auto& runner = res::saga_runner::of(node);
    runner.use_store(*store);
    ASSERT_TRUE(runner.define({.name = "order", .steps = {s.step("reserve"), s.step("charge")}}));
    s.actions["charge"].push_back(failure(errc::invalid_argument, "declined"));
    std::optional<result<res::saga_outcome>> got;
    runner.start("order", "in", [&](result<res::saga_outcome> r) { got = std::move(r); });
    node.poll();
    ASSERT_TRUE(got && *got);
    EXPECT_EQ((*got)->status, saga_status::compensated);
    id = (*got)->run_id;
  }
  auto store = res::sqlite_saga_store::open(db());
  ASSERT_TRUE(store);
  auto rec = (*store)->load(id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, saga_status::compensated);
  std::vector<std::string> events;
  for (const auto& e : rec->log) events.push_back(e.step + ":" + res::to_string(e.event));
  EXPECT_EQ(events, (std::vector<std::string>{"reserve:started", "reserve:done", "charge:started",
                                              "charge:failed", "reserve:compensation_started",
                                              "reserve:compensated"}));
  EXPECT_EQ(rec->log[3].detail, "invalid_argument: declined");
}

}  // namespace
}  // namespace otpp_test
