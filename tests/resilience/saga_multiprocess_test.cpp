// A node process runs the order saga with an SQLite store and is killed (SIGKILL) while its
// `charge` action is in flight; a new process on the same database file recovers the run
// (tests/resilience/saga_node_main.cpp). The effects file counts what every action and
// compensation did across the process lifetimes: each compensation ran exactly once.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "cluster/process_support.hpp"
#include "otpp/resilience/sqlite_saga_store.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
namespace res = otpp::resilience;
namespace fs = std::filesystem;

class saga_processes : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("otpp_saga_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    for (auto& p : procs_) {
      (void)p->wait_exit(10s);  // the recovering ones end by themselves; reports come at exit
      EXPECT_FALSE(has_sanitizer_report(p->stderr_text())) << p->label() << ":\n"
                                                           << p->stderr_text();
    }
    if (HasFailure()) {
      for (auto& p : procs_) std::cerr << p->transcript();
      std::cerr << "---- effects\n";
      for (const auto& l : effects()) std::cerr << l << "\n";
    }
    procs_.clear();
    fs::remove_all(dir_);
  }
  std::string db() const { return (dir_ / "sagas.db").string(); }
  std::string effects_path() const { return (dir_ / "effects").string(); }
  std::vector<std::string> effects() const {
    std::vector<std::string> out;
    std::ifstream in(effects_path());
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  child_process* spawn(std::vector<std::string> args, const std::string& label) {
    args.insert(args.begin(), {"--db", db(), "--effects", effects_path()});
    std::string error;
    auto p = child_process::spawn(OTPP_SAGA_NODE_PATH, args, label, &error);
    if (!p) {
      ADD_FAILURE() << error;
      return nullptr;
    }
    procs_.push_back(std::move(p));
    return procs_.back().get();
  }
  // Runs a saga until its charge step blocks, then kills the process: the run id.
  std::string run_and_kill(const std::vector<std::string>& extra = {}) {
    auto args = extra;
    args.push_back("--run");
    auto* p = spawn(args, "run");
    if (!p) return {};
    auto blocked = p->wait_prefix("blocked ", 60s);
    if (!blocked) {
      ADD_FAILURE() << "no blocked line";
      return {};
    }
    EXPECT_TRUE(p->kill(SIGKILL));
    EXPECT_EQ(p->wait_exit(30s), 128 + SIGKILL);
    return child_process::fields(*blocked).at(1);
  }
  // Runs a recovering process to its end: its output lines.
  std::vector<std::string> recover(const std::vector<std::string>& extra = {}) {
    auto args = extra;
    args.push_back("--recover");
    auto* p = spawn(args, "recover");
    if (!p) return {};
    EXPECT_EQ(p->wait_exit(60s), 0);
    EXPECT_TRUE(p->wait_prefix("recovered ", 10s));
    (void)p->wait_line([](const std::string&) { return false; }, 10s);  // until its stdout ends
    return p->lines();
  }
  std::size_t count(const std::string& line) const {
    auto all = effects();
    return static_cast<std::size_t>(std::count(all.begin(), all.end(), line));
  }

  fs::path dir_;
  std::vector<std::unique_ptr<child_process>> procs_;
};

TEST_F(saga_processes, AKilledRunIsCompensatedOnceAfterARestart) {
  auto id = run_and_kill();
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(effects(), (std::vector<std::string>{"do reserve " + id + "/reserve",
                                                 "do charge " + id + "/charge"}));

  auto lines = recover();
  EXPECT_NE(std::find(lines.begin(), lines.end(), "recovered 1 0 0"), lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "outcome " + id + " compensated charge"),
            lines.end());
  // The charge that may have happened is compensated too, then the reserve: once each.
  EXPECT_EQ(effects(), (std::vector<std::string>{
                           "do reserve " + id + "/reserve", "do charge " + id + "/charge",
                           "undo charge " + id + "/charge", "undo reserve " + id + "/reserve"}));

  // A third process finds nothing left to do: no compensation runs twice.
  lines = recover();
  EXPECT_NE(std::find(lines.begin(), lines.end(), "recovered 0 0 0"), lines.end());
  EXPECT_EQ(effects().size(), 4u);

  // The database tells the same story.
  auto store = res::sqlite_saga_store::open(db());
  ASSERT_TRUE(store) << store.fail().message();
  auto rec = (*store)->load(id);
  ASSERT_TRUE(rec) << rec.fail().message();
  EXPECT_EQ(rec->status, res::saga_status::compensated);
  std::size_t compensated = 0;
  for (const auto& e : rec->log) compensated += e.event == res::step_event::compensated;
  EXPECT_EQ(compensated, 2u);
}

TEST_F(saga_processes, AKilledRunIsResumedWithTheSameIdempotencyKey) {
  auto id = run_and_kill({"--resume"});
  ASSERT_FALSE(id.empty());
  auto lines = recover({"--resume"});
  EXPECT_NE(std::find(lines.begin(), lines.end(), "outcome " + id + " completed -"), lines.end());
  EXPECT_EQ(count("do charge " + id + "/charge"), 2u);  // again, with the same key
  EXPECT_EQ(count("do confirm " + id + "/confirm"), 1u);
  EXPECT_EQ(count("do reserve " + id + "/reserve"), 1u);
  for (const auto& l : effects()) EXPECT_NE(l.rfind("undo ", 0), 0u) << l;
}

}  // namespace
}  // namespace otpp_test
