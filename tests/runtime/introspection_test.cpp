// node::processes / node::info: what a tool sees of a node's processes (type, label, mailbox,
// messages handled, memory), read from outside without stopping anyone.
#include <memory>
#include <semaphore>

#include "test_support.hpp"

namespace otpp_test {
namespace {

using otpp::errc;

struct hold {
  static constexpr std::string_view tag = "hold";
  OTPP_NO_FIELDS()
};

// Each `hold` cast blocks its handler until the test releases one permit.
class holder : public otpp::gen_server<holder> {
 public:
  explicit holder(std::shared_ptr<std::counting_semaphore<16>> gate) : gate_(std::move(gate)) {}
  static void define_handlers(otpp::handlers<holder>& h) {
    h.cast<hold>([](holder& self, hold) {
      // Bounded: a test that fails elsewhere must not hang the node.
      (void)self.gate_->try_acquire_for(std::chrono::seconds(30));
    });
  }

 private:
  std::shared_ptr<std::counting_semaphore<16>> gate_;
};

TEST(introspection, ListsEveryProcessWithItsTypeAndLabel) {
  otpp::node n({.name = "introspect@local", .threads = 2});
  n.start();
  auto a = n.spawn<counter>(1);
  ASSERT_TRUE(a);
  auto b = n.spawn_opt<counter>(otpp::spawn_options{.label = "worker"}, 2);
  ASSERT_TRUE(b);

  auto all = n.processes();
  ASSERT_EQ(all.size(), n.process_count());
  auto find = [&](const otpp::pid& p) {
    return std::find_if(all.begin(), all.end(), [&](const auto& i) { return i.self == p; });
  };
  auto ia = find(*a);
  auto ib = find(*b);
  ASSERT_NE(ia, all.end());
  ASSERT_NE(ib, all.end());
  EXPECT_NE(ia->type.find("counter"), std::string::npos) << ia->type;
  EXPECT_TRUE(ia->label.empty());
  EXPECT_EQ(ib->label, "worker");
  EXPECT_GE(ia->memory, sizeof(counter));
  EXPECT_LE(ia->started, n.now());
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                             [](const auto& x, const auto& y) { return x.self < y.self; }));

  // Messages handled are counted (a call's reply proves the cast before it ran).
  ASSERT_TRUE(otpp::cast(n, *a, increment{2}));
  auto got = otpp::call(n, *a, get_count{}, asio::use_future).get();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 3);
  auto info = n.info(*a);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->handled, 2u);

  // An ended process is gone from the list, and info answers noproc.
  n.stop_process(*a, otpp::exit_reason::shutdown());
  ASSERT_TRUE(eventually([&] { return !n.alive(*a); }));
  EXPECT_EQ(n.info(*a).fail().code, errc::noproc);
  all = n.processes();
  EXPECT_EQ(find(*a), all.end());
  n.stop();
  n.join();
}

TEST(introspection, MailboxShowsWhatWaitsBehindABusyHandler) {
  otpp::node n({.name = "introspect@local", .threads = 2});
  n.start();
  auto gate = std::make_shared<std::counting_semaphore<16>>(0);
  auto p = n.spawn<holder>(gate);
  ASSERT_TRUE(p);
  // The first hold blocks; four more wait behind it.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(otpp::cast(n, *p, hold{}));
  // Once the first is released the process takes the other four from its inbox and blocks
  // in the second: three wait, two were handled.
  gate->release();
  ASSERT_TRUE(eventually([&] {
    auto i = n.info(*p);
    return i && i->handled == 2 && i->mailbox == 3;
  })) << "mailbox "
      << n.info(*p)->mailbox << ", handled " << n.info(*p)->handled;
  EXPECT_GE(n.info(*p)->memory, sizeof(holder) + 3 * sizeof(otpp::detail::message_envelope));
  gate->release(4);
  ASSERT_TRUE(eventually([&] {
    auto i = n.info(*p);
    return i && i->handled == 5 && i->mailbox == 0;
  }));
  n.stop();
  n.join();
}

TEST(introspection, InfoOfAPidOfAnotherNodeIsNoproc) {
  otpp::node n({.name = "introspect@local", .threads = 1});
  n.start();
  const otpp::pid far(otpp::node_atom::intern("far@10.0.0.9:4370"), 7, 1);
  auto r = n.info(far);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.fail().code, errc::noproc);
  EXPECT_EQ(n.info(otpp::pid{}).fail().code, errc::noproc);
  n.stop();
  n.join();
}

}  // namespace
}  // namespace otpp_test
