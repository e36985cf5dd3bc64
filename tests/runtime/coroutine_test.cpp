// Coroutine handlers awaiting calls whose messages own memory (strings, vectors, maps), and
// replies of std::variant / std::optional, locally and through the msgpack form. Run under
// ASan in CI: g++ 12 destroys a braced temporary inside co_await twice, so these tests (and
// the README) name every message before awaiting.
#include <map>
#include <optional>
#include <variant>

#include <asio/use_awaitable.hpp>

#include "test_support.hpp"

namespace otpp_test {
namespace {

struct lookup {
  static constexpr std::string_view tag = "lookup";
  using reply = std::optional<std::string>;
  std::string key;
  std::vector<std::string> path;
  std::map<std::string, int> hints;
  MSGPACK_DEFINE_MAP(key, path, hints)
};
struct classify {
  static constexpr std::string_view tag = "classify";
  using reply = std::variant<int, std::string, std::vector<int>>;
  int n = 0;
  MSGPACK_DEFINE_MAP(n)
};

class store : public otpp::gen_server<store> {
 public:
  static void define_handlers(otpp::handlers<store>& h) {
    h.call<lookup>([](store& self, lookup m) -> std::optional<std::string> {
      auto it = self.data_.find(m.key);
      if (it == self.data_.end()) return std::nullopt;
      return it->second + "/" + std::to_string(m.path.size()) + "/" +
             std::to_string(m.hints.size());
    });
    h.call<classify>([](store&, classify m) -> classify::reply {
      if (m.n < 0) return std::string("negative");
      if (m.n > 100) return std::vector<int>{m.n, m.n * 2};
      return m.n;
    });
  }

 private:
  std::map<std::string, std::string> data_{
      {"a key long enough to live on the heap, not in the string", "a value just as long as it"}};
};

struct run_lookups {
  static constexpr std::string_view tag = "run_lookups";
  using reply = std::vector<std::string>;
  otpp::pid store;
  MSGPACK_DEFINE_MAP(store)
};
class client : public otpp::gen_server<client> {
 public:
  static void define_handlers(otpp::handlers<client>& h) {
    h.call<run_lookups>(
        [](client& self, run_lookups m) -> asio::awaitable<std::vector<std::string>> {
          std::vector<std::string> out;
          for (int i = 0; i < 50; ++i) {
            // Named first, then moved: never `co_await call(..., lookup{...}, ...)` on g++ 12.
            lookup hit{"a key long enough to live on the heap, not in the string",
                       {"some/long/path/segment/number/one", "and/another/long/one/here"},
                       {{"a hint with a long enough name", i}}};
            auto r = co_await otpp::call(self.this_node(), m.store, std::move(hit), 20s,
                                         asio::use_awaitable);
            out.push_back(r && *r ? **r : std::string("error"));
            lookup miss{"no such key, long enough to be on the heap too", {}, {}};
            auto none = co_await otpp::call(self.this_node(), m.store, std::move(miss), 20s,
                                            asio::use_awaitable);
            if (!none || none->has_value()) out.push_back("miss failed");
          }
          co_return out;
        });
  }
};

TEST(coroutine, AwaitedMessagesOwningMemorySurvive) {
  otpp::node n({.name = "coro_a", .threads = 2});
  n.start();
  auto s = n.spawn<store>();
  auto c = n.spawn<client>();
  ASSERT_TRUE(s && c);
  auto r = call_sync(n, *c, run_lookups{*s}, 30s);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->size(), 50u);
  for (const auto& v : *r) EXPECT_EQ(v, "a value just as long as it/2/1");
}

TEST(coroutine, VariantAndOptionalRepliesLocallyAndEncoded) {
  otpp::node n({.name = "coro_b", .threads = 2});
  n.start();
  auto s = n.spawn<store>();
  ASSERT_TRUE(s);
  auto a = call_sync(n, *s, classify{7});
  ASSERT_TRUE(a);
  EXPECT_EQ(std::get<int>(*a), 7);
  auto b = call_sync(n, *s, classify{-1});
  ASSERT_TRUE(b);
  EXPECT_EQ(std::get<std::string>(*b), "negative");

  // The msgpack form (what crosses the wire) round-trips every alternative.
  for (const classify::reply& v : {classify::reply{5}, classify::reply{std::string("x")},
                                   classify::reply{std::vector<int>{1, 2}}}) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, v);
    EXPECT_EQ(msgpack::unpack(buf.data(), buf.size())->as<classify::reply>(), v);
  }
  // A dynamic caller gets the variant encoded.
  msgpack::sbuffer req;
  msgpack::packer<msgpack::sbuffer> pk(req);
  pk.pack_map(2);
  pk.pack("type");
  pk.pack("classify");
  pk.pack("n");
  pk.pack(500);
  std::promise<otpp::result<msgpack::object_handle>> done;
  auto f = done.get_future();
  otpp::call_dynamic(
      n, *s, msgpack::unpack(req.data(), req.size()), 20s,
      [&done](otpp::result<msgpack::object_handle> r) { done.set_value(std::move(r)); });
  auto encoded = get(f);
  ASSERT_TRUE(encoded);
  EXPECT_EQ((*encoded)->as<classify::reply>(), (classify::reply{std::vector<int>{500, 1000}}));
  // A variant with an index out of range does not decode.
  msgpack::sbuffer bad;
  msgpack::packer<msgpack::sbuffer> bp(bad);
  bp.pack_array(2);
  bp.pack(9);
  bp.pack(1);
  EXPECT_THROW(msgpack::unpack(bad.data(), bad.size())->as<classify::reply>(), msgpack::type_error);
}

TEST(coroutine, ResultValueOnErrorExplainsItself) {
  otpp::result<int> timed_out(otpp::errc::timeout);
  try {
    (void)timed_out.value();
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(std::string(e.what()), "timeout");
  }
  otpp::result<int> exited(otpp::errc::exit, "boom");
  try {
    (void)exited.value();
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(std::string(e.what()), "boom: exit: callee exited during the call");
  }
}

}  // namespace
}  // namespace otpp_test
