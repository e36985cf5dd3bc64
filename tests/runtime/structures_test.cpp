// Unit tests of the runtime's tricky structures: the inbox, the timer service (call deadline
// lists), and the intrusive reference count.
#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "otpp/detail/intrusive.hpp"
#include "otpp/detail/mailbox.hpp"
#include "timers.hpp"

namespace {

using namespace std::chrono_literals;
using otpp::detail::envelope;
using otpp::detail::envelope_kind;
using otpp::detail::inbox;

struct numbered final : envelope {
  int n;
  explicit numbered(int i) : envelope(envelope_kind::cast), n(i) {}
};

std::vector<int> drain(envelope* e) {
  std::vector<int> out;
  while (e) {
    auto* next = e->next;
    out.push_back(static_cast<numbered*>(e)->n);
    delete e;
    e = next;
  }
  return out;
}

TEST(inbox, TakesInArrivalOrder) {
  inbox box;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(box.push(new numbered(i)), inbox::push_result::queued);
  EXPECT_EQ(drain(box.take_all()), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(box.take_all(), nullptr);
}

TEST(inbox, OnlyTheFirstPushAfterBlockWakesTheReader) {
  inbox box;
  EXPECT_TRUE(box.try_block());
  EXPECT_EQ(box.push(new numbered(1)), inbox::push_result::woke_reader);
  EXPECT_EQ(box.push(new numbered(2)), inbox::push_result::queued);
  EXPECT_FALSE(box.try_block());  // work is waiting: the reader cannot go idle
  EXPECT_EQ(drain(box.take_all()), (std::vector<int>{1, 2}));
  EXPECT_TRUE(box.try_block());
}

TEST(inbox, CloseReturnsWhatWasQueuedAndRefusesLaterPushes) {
  inbox box;
  box.push(new numbered(1));
  box.push(new numbered(2));
  EXPECT_EQ(drain(box.close()), (std::vector<int>{1, 2}));
  auto* late = new numbered(3);
  EXPECT_EQ(box.push(late), inbox::push_result::closed);
  delete late;
  EXPECT_EQ(box.take_all(), nullptr);
}

TEST(inbox, ManyProducersOneReaderLoseNothingAndKeepPerProducerOrder) {
  inbox box;
  constexpr int producers = 4;
  constexpr int per_producer = 20000;
  std::atomic<int> wakes{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) {
        if (box.push(new numbered(p * per_producer + i)) == inbox::push_result::woke_reader) {
          wakes.fetch_add(1);
        }
      }
    });
  }
  std::vector<int> last(producers, -1);
  int received = 0;
  while (received < producers * per_producer) {
    auto got = drain(box.take_all());
    for (int v : got) {
      int p = v / per_producer;
      ASSERT_GT(v, last[p]);
      last[p] = v;
    }
    received += static_cast<int>(got.size());
    if (got.empty()) box.try_block();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(received, producers * per_producer);
}

// ---- timer service

struct probe final : otpp::detail::timer_entry {
  std::vector<int>* fired;
  int id;
  int* discarded;
  probe(std::vector<int>* f, int i, int* d) : fired(f), id(i), discarded(d) {}
  void expire() override { fired->push_back(id); }
  void discard() override { ++*discarded; }
};

struct timers_fixture : ::testing::Test {
  asio::io_context ctx;
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  std::vector<int> fired;
  int discarded = 0;
};

TEST_F(timers_fixture, EqualDurationsExpireInArmOrderAndCancelUnlinks) {
  otpp::detail::timer_service timers(ctx, clock);
  std::vector<std::unique_ptr<probe>> probes;
  for (int i = 0; i < 5; ++i) {
    probes.push_back(std::make_unique<probe>(&fired, i, &discarded));
    timers.arm(probes.back().get(), 100ms);
    clock->advance(1ms);
  }
  EXPECT_TRUE(timers.cancel(probes[0].get()));  // the head
  EXPECT_TRUE(timers.cancel(probes[2].get()));  // the middle
  EXPECT_FALSE(timers.cancel(probes[2].get()));
  clock->advance(96ms);  // t = 101: entries 0 and 1 due (0 cancelled)
  EXPECT_EQ(fired, std::vector<int>{1});
  clock->advance(10ms);
  EXPECT_EQ(fired, (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(timers.bucket_count(), 0u);
}

TEST_F(timers_fixture, EarliestDeadlineAcrossDurationsFiresFirst) {
  otpp::detail::timer_service timers(ctx, clock);
  probe slow(&fired, 1, &discarded), fast(&fired, 2, &discarded), mid(&fired, 3, &discarded);
  timers.arm(&slow, 300ms);
  timers.arm(&fast, 100ms);
  timers.arm(&mid, 200ms);
  clock->advance(1s);
  EXPECT_EQ(fired, (std::vector<int>{2, 3, 1}));
}

TEST_F(timers_fixture, DistinctDurationsLeaveNoBucketsBehind) {
  // Issue: every distinct call timeout created a list that was never freed and scanned on
  // every call. Lists now go when they empty and come due.
  otpp::detail::timer_service timers(ctx, clock);
  std::vector<std::unique_ptr<probe>> probes;
  for (int i = 1; i <= 20000; ++i) {
    probes.push_back(std::make_unique<probe>(&fired, i, &discarded));
    timers.arm(probes.back().get(), std::chrono::milliseconds(i));
  }
  EXPECT_EQ(timers.bucket_count(), 20000u);
  for (auto& p : probes) EXPECT_TRUE(timers.cancel(p.get()));  // all answered at once
  clock->advance(20001ms);
  EXPECT_TRUE(fired.empty());
  EXPECT_EQ(timers.bucket_count(), 0u);
}

TEST_F(timers_fixture, CancelByIdAndDiscardOnTeardown) {
  probe a(&fired, 1, &discarded), b(&fired, 2, &discarded);
  {
    otpp::detail::timer_service timers(ctx, clock);
    a.timer_id = 77;
    timers.arm(&a, 50ms);
    timers.arm(&b, 60ms);
    EXPECT_EQ(timers.cancel_id(77), &a);
    EXPECT_EQ(timers.cancel_id(77), nullptr);
  }
  EXPECT_EQ(discarded, 1);  // b was still listed
  EXPECT_TRUE(fired.empty());
}

TEST_F(timers_fixture, RealClockFiresThroughTheIoContext) {
  otpp::detail::timer_service timers(ctx, nullptr);
  probe a(&fired, 1, &discarded);
  timers.arm(&a, 5ms);
  for (int i = 0; i < 2000 && fired.empty(); ++i) ctx.run_one_for(10ms);
  EXPECT_EQ(fired, std::vector<int>{1});
}

// ---- ref_ptr

struct tracked final : otpp::detail::ref_counted {
  explicit tracked(int* d) : destroyed(d) {}
  ~tracked() override { ++*destroyed; }
  int* destroyed;
};

TEST(ref_ptr, CountsCopiesAndMovesAndDeletesOnce) {
  int destroyed = 0;
  {
    otpp::detail::ref_ptr<tracked> a(new tracked(&destroyed));
    auto b = a;
    auto c = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_EQ(b.get(), c.get());
    b.reset();
    EXPECT_EQ(destroyed, 0);
    auto* raw = c.detach();
    EXPECT_FALSE(c);
    otpp::detail::ref_ptr<tracked> d(raw);  // adds a reference
    raw->release();                         // the detached one
    EXPECT_EQ(destroyed, 0);
  }
  EXPECT_EQ(destroyed, 1);
}

TEST(ref_ptr, SharedAcrossThreadsIsReleasedOnce) {
  int destroyed = 0;
  {
    otpp::detail::ref_ptr<tracked> root(new tracked(&destroyed));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([root] {
        for (int i = 0; i < 10000; ++i) {
          auto copy = root;
          copy.reset();
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(destroyed, 1);
}

}  // namespace
