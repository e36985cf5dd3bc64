// Node id parsing: every valid form round-trips; each rule broken gives invalid_argument with a
// reason that names the problem.
#include "otpp/cluster/node_id.hpp"

#include <gtest/gtest.h>

#include <string>

#include "otpp/pid.hpp"

namespace {

using otpp::errc;
using otpp::cluster::node_id;

node_id parsed(std::string_view text) {
  auto id = node_id::parse(text);
  EXPECT_TRUE(id.has_value()) << text << ": " << id.reason();
  return id.has_value() ? *id : node_id{};
}

// The text parses, stays the same in canonical form, and fits a node_atom.
void expect_round_trip(std::string_view text) {
  node_id id = parsed(text);
  EXPECT_EQ(id.to_string(), text);
  auto again = node_id::parse(id.to_string());
  ASSERT_TRUE(again.has_value()) << again.reason();
  EXPECT_EQ(*again, id);
  EXPECT_TRUE(otpp::node_atom::valid_name(id.to_string())) << text;
}

// Parsing fails with invalid_argument and the reason mentions every fragment.
void expect_invalid(std::string_view text, std::initializer_list<std::string_view> fragments) {
  auto id = node_id::parse(text);
  ASSERT_FALSE(id.has_value()) << text << " parsed as " << id->to_string();
  EXPECT_EQ(id.error(), otpp::make_error_code(errc::invalid_argument)) << text;
  for (auto fragment : fragments) {
    EXPECT_NE(id.reason().find(fragment), std::string::npos)
        << "reason for '" << text << "' lacks '" << fragment << "': " << id.reason();
  }
}

TEST(node_id_test, Ipv4RoundTrips) {
  expect_round_trip("alpha@127.0.0.1:4370");
  node_id id = parsed("alpha@10.1.2.3:1");
  EXPECT_EQ(id.name, "alpha");
  EXPECT_EQ(id.host, "10.1.2.3");
  EXPECT_EQ(id.port, 1);
  expect_round_trip("a@255.255.255.255:65535");
  expect_round_trip("a@0.0.0.0:80");
}

TEST(node_id_test, Ipv6InBracketsRoundTrips) {
  expect_round_trip("n1@[::1]:4370");
  expect_round_trip("n1@[fe80::1:2]:4370");
  expect_round_trip("n1@[::ffff:10.0.0.1]:9");
  node_id id = parsed("n1@[::1]:4370");
  EXPECT_EQ(id.host, "::1");  // stored without brackets
  EXPECT_EQ(id.port, 4370);
}

TEST(node_id_test, Ipv6IsCanonicalised) {
  node_id id = parsed("n@[0:0:0:0:0:0:0:1]:4370");
  EXPECT_EQ(id.host, "::1");
  EXPECT_EQ(id.to_string(), "n@[::1]:4370");
  EXPECT_EQ(parsed("n@[FE80::A]:1").to_string(), "n@[fe80::a]:1");
}

TEST(node_id_test, HostnameRoundTripsInLowerCase) {
  expect_round_trip("web_1@localhost:4370");
  expect_round_trip("web-1@node-1.svc.cluster.local:4370");
  expect_round_trip("x@a1.b2-c.d:2");
  expect_round_trip("x@123abc:2");  // a label may start with a digit (RFC 1123)
  node_id id = parsed("Web@Node-1.Example.COM:4370");
  EXPECT_EQ(id.name, "Web");  // the name keeps its case
  EXPECT_EQ(id.host, "node-1.example.com");
  EXPECT_EQ(id.to_string(), "Web@node-1.example.com:4370");
}

TEST(node_id_test, MaximumLengthsRoundTrip) {
  std::string name = "n" + std::string(node_id::max_name_length - 1, '0');
  ASSERT_EQ(name.size(), 64U);
  expect_round_trip(name + "@h:65535");
  std::string label(node_id::max_label_length, 'a');
  expect_round_trip("n@" + label + ".example:1");
  // The 255-character text limit binds before the 253-character host limit: 247 fit here.
  std::string host = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                     std::string(63, 'c') + "." + std::string(55, 'd');
  ASSERT_EQ(host.size(), 247U);
  std::string text = "n@" + host + ":65535";
  ASSERT_EQ(text.size(), node_id::max_text_length);
  expect_round_trip(text);
}

TEST(node_id_test, MakeFromParts) {
  auto a = node_id::make("n", "::1", 4370);
  ASSERT_TRUE(a.has_value()) << a.reason();
  EXPECT_EQ(a->to_string(), "n@[::1]:4370");
  auto b = node_id::make("n", "[::1]", 4370);
  ASSERT_TRUE(b.has_value()) << b.reason();
  EXPECT_EQ(*a, *b);
  auto c = node_id::make("n", "Host", 1);
  ASSERT_TRUE(c.has_value()) << c.reason();
  EXPECT_EQ(c->to_string(), "n@host:1");
  auto d = node_id::make("n", "host", 0);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error(), otpp::make_error_code(errc::invalid_argument));
  EXPECT_EQ(otpp::cluster::format_node_id("a", "fe80::1", 9), "a@[fe80::1]:9");
}

TEST(node_id_test, OrderingAndHash) {
  node_id a = parsed("a@h:1");
  node_id b = parsed("b@h:1");
  EXPECT_LT(a, b);
  EXPECT_NE(a, parsed("a@h:2"));
  EXPECT_EQ(std::hash<node_id>{}(a), std::hash<node_id>{}(parsed("a@h:1")));
}

TEST(node_id_test, MissingAt) {
  expect_invalid("alpha-localhost:4370", {"missing '@'"});
}

TEST(node_id_test, EmptyName) {
  expect_invalid("@localhost:4370", {"empty name"});
}

TEST(node_id_test, NameTooLong) {
  std::string name = "n" + std::string(64, 'x');
  expect_invalid(name + "@h:1", {"name is 65 characters", "at most 64"});
}

TEST(node_id_test, NameMustStartWithLetter) {
  expect_invalid("1node@h:1", {"start with a letter", "'1'"});
  expect_invalid("_node@h:1", {"start with a letter", "'_'"});
  expect_invalid("-node@h:1", {"start with a letter", "'-'"});
}

TEST(node_id_test, BadCharacterInName) {
  expect_invalid("no.de@h:1", {"name contains '.'", "position 2"});
  expect_invalid("no de@h:1", {"name contains a space"});
  expect_invalid(std::string("no\x01"
                             "de@h:1"),
                 {"name contains byte \\x01"});
  expect_invalid("n:x@h:1", {"name contains ':'"});
}

TEST(node_id_test, MissingPort) {
  expect_invalid("n@localhost", {"missing port"});
  expect_invalid("n@localhost:", {"missing port"});
  expect_invalid("n@[::1]", {"missing port"});
  expect_invalid("n@[::1]:", {"missing port"});
}

TEST(node_id_test, PortNotANumber) {
  expect_invalid("n@h:http", {"port 'http' is not a number"});
  expect_invalid("n@h:+4370", {"'+4370'", "without sign or spaces"});
  expect_invalid("n@h:-1", {"'-1'", "without sign or spaces"});
  expect_invalid("n@h: 4370", {"' 4370'", "without sign or spaces"});
}

TEST(node_id_test, PortOutOfRange) {
  expect_invalid("n@h:0", {"port 0 is out of range 1-65535"});
  expect_invalid("n@h:65536", {"port 65536 is out of range"});
  expect_invalid("n@h:99999999999999999999", {"out of range"});
  expect_invalid("n@h:04370", {"leading zero"});
}

TEST(node_id_test, EmptyHost) {
  expect_invalid("n@:4370", {"empty host"});
  expect_invalid("n@", {"empty host"});
  expect_invalid("n@[]:4370", {"empty host"});
}

TEST(node_id_test, BadIpv6) {
  expect_invalid("n@[::g]:1", {"'::g' is not a valid IPv6 address"});
  expect_invalid("n@[1.2.3.4]:1", {"not a valid IPv6 address"});
  expect_invalid("n@[fe80::1%eth0]:1", {"not a valid IPv6 address"});
  expect_invalid("n@[::1:1", {"missing ']'"});
}

TEST(node_id_test, UnbracketedIpv6) {
  expect_invalid("n@::1:4370", {"must be written in brackets"});
  expect_invalid("n@fe80::1:4370", {"must be written in brackets", "[fe80::1]"});
}

TEST(node_id_test, BadIpv4) {
  expect_invalid("n@256.0.0.1:1", {"not a valid IPv4 address"});
  expect_invalid("n@1.2.3:1", {"not a valid IPv4 address"});
  expect_invalid("n@01.2.3.4:1", {"not a valid IPv4 address"});
}

TEST(node_id_test, BadHostnameLabel) {
  expect_invalid("n@-host:1", {"'-host'", "start or end with '-'"});
  expect_invalid("n@host-.example:1", {"'host-'", "start or end with '-'"});
  expect_invalid("n@ho_st:1", {"'ho_st' contains '_'"});
  expect_invalid("n@a..b:1", {"empty label"});
  expect_invalid("n@.a:1", {"empty label"});
  expect_invalid("n@a.:1", {"empty label"});
  expect_invalid("n@" + std::string(64, 'a') + ":1", {"is 64 characters, at most 63"});
  expect_invalid("n@ho st:1", {"contains a space"});
}

TEST(node_id_test, HostnameTooLong) {
  std::string host;
  while (host.size() < 254) host += "abcdefg.";
  host.resize(254);
  ASSERT_NE(host.back(), '.');
  expect_invalid("n@" + host + ":1", {"host is 254 characters, at most 253"});
}

TEST(node_id_test, TrailingGarbage) {
  expect_invalid("n@h:4370x", {"trailing characters 'x' after the port"});
  expect_invalid("n@h:4370 ", {"trailing characters ' ' after the port"});
  expect_invalid("n@[::1]x:4370", {"unexpected characters 'x:4370' after ']'"});
  expect_invalid("n@[::1]:4370]", {"trailing characters ']'"});
}

TEST(node_id_test, WholeTextTooLong) {
  // Every part valid, the whole over node_atom's 255 characters.
  std::string text = "n" + std::string(63, 'x') + "@" + std::string(60, 'a') + "." +
                     std::string(60, 'b') + "." + std::string(60, 'c') + ":4370";
  ASSERT_EQ(text.size(), 252U);
  expect_round_trip(text);
  text = "n" + std::string(63, 'x') + "@" + std::string(62, 'a') + "." + std::string(62, 'b') +
         "." + std::string(60, 'c') + ":4370";
  expect_invalid(text, {"node id is 256 characters, at most 255"});
  // Far too long: refused up front, and the input is cut in the message.
  std::string huge = "n@" + std::string(100000, 'a') + ":1";
  expect_invalid(huge, {"node id is 100004 characters, at most 255"});
  EXPECT_LT(node_id::parse(huge).reason().size(), 200U);
}

}  // namespace
