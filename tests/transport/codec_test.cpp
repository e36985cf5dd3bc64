// Frame codec, handshake messages, key schedule, cookie file: no sockets.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "test_support.hpp"

namespace otpp::transport {
namespace {

session_key key_of(std::uint8_t b) {
  session_key k{};
  k.fill(b);
  return k;
}

std::vector<std::uint8_t> bytes(std::size_t n, std::uint8_t seed = 1) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(seed + i * 31);
  return v;
}

TEST(Hmac, ReinitialisedContextMatchesOneShot) {
  const auto key = bytes(32, 9);
  hmac_sha256 h(key);
  for (int round = 0; round < 3; ++round) {
    const auto msg = bytes(100 + round, static_cast<std::uint8_t>(round));
    h.begin();
    h.update(msg);
    EXPECT_EQ(h.finish(), hmac_sha256::compute(key, {msg}));
  }
  // The hot-path implementation agrees, for short and long keys and messages.
  for (std::size_t klen : {0u, 1u, 32u, 64u, 65u, 200u}) {
    const auto k = bytes(klen, 3);
    frame_mac fm(k);
    for (std::size_t mlen : {0u, 1u, 55u, 56u, 64u, 1000u}) {
      const auto msg = bytes(mlen, 4);
      fm.begin();
      fm.update(bytes_view(msg).first(mlen / 2));
      fm.update(bytes_view(msg).subspan(mlen / 2));
      EXPECT_EQ(fm.finish(), hmac_sha256::compute(k, {msg})) << klen << " " << mlen;
    }
  }
  // RFC 4231 test case 2.
  const auto d = hmac_sha256::compute(as_bytes("Jefe"), {as_bytes("what do ya want for nothing?")});
  const std::uint8_t expect[4] = {0x5b, 0xdc, 0xc1, 0x46};
  EXPECT_TRUE(std::equal(expect, expect + 4, d.begin()));
}

TEST(Frame, SealOpenRoundTripSizes) {
  frame_sealer s(key_of(1), direction::initiator_to_acceptor);
  frame_opener o(key_of(1), direction::initiator_to_acceptor, 70000);
  for (std::size_t n : {0u, 1u, 2u, 64u, 65536u, 70000u}) {
    std::vector<std::uint8_t> wire;
    const auto p = bytes(n);
    s.seal(0x20, p, wire);
    ASSERT_EQ(wire.size(), frame_sealer::sealed_size(n));
    auto step = o.open(wire);
    ASSERT_FALSE(step.error) << n;
    ASSERT_EQ(step.consumed, wire.size());
    EXPECT_EQ(step.frame.kind, 0x20);
    EXPECT_TRUE(
        std::equal(p.begin(), p.end(), step.frame.payload.begin(), step.frame.payload.end()));
  }
}

TEST(Frame, EveryByteBoundaryNeedsMoreThenDecodes) {
  frame_sealer s(key_of(2), direction::acceptor_to_initiator);
  std::vector<std::uint8_t> wire;
  s.seal(0x11, bytes(0), wire);
  s.seal(0x12, bytes(1), wire);
  s.seal(0x13, bytes(300), wire);
  // Feed every prefix of the stream: frames appear exactly when complete.
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    frame_opener o(key_of(2), direction::acceptor_to_initiator, 1000);
    std::size_t off = 0;
    int got = 0;
    for (;;) {
      auto step = o.open(bytes_view(wire.data() + off, cut - off));
      ASSERT_FALSE(step.error) << "cut " << cut;
      if (!step.consumed) {
        EXPECT_GT(step.needed, cut - off);
        break;
      }
      off += step.consumed;
      ++got;
    }
    const int complete = cut >= wire.size() ? 3 : cut >= 21 + 22 ? 2 : cut >= 21 ? 1 : 0;
    EXPECT_EQ(got, complete) << "cut " << cut;
  }
}

TEST(Frame, OversizeAndZeroLengthRejectedFromHeader) {
  frame_opener o(key_of(3), direction::initiator_to_acceptor, 100);
  std::uint8_t hdr[5] = {0, 0, 0, 102, 0x20};  // 101 bytes of payload
  EXPECT_EQ(o.open(hdr).error, make_error_code(errc::frame_too_large));
  std::uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(o.open(huge).error, make_error_code(errc::frame_too_large));
  std::uint8_t zero[5] = {0, 0, 0, 0, 0};
  EXPECT_EQ(o.open(zero).error, make_error_code(errc::malformed_frame));
  std::uint8_t exact[5] = {0, 0, 0, 101, 0x20};  // 100 bytes: allowed, needs more
  auto step = o.open(exact);
  EXPECT_FALSE(step.error);
  EXPECT_EQ(step.needed, 4u + 101u + mac_size);
}

TEST(Frame, ReplayReorderBitFlipReflectionWrongKeyRejected) {
  frame_sealer s(key_of(4), direction::initiator_to_acceptor);
  std::vector<std::uint8_t> f0, f1;
  s.seal(0x20, bytes(10, 1), f0);
  s.seal(0x20, bytes(10, 2), f1);
  {  // replay
    frame_opener o(key_of(4), direction::initiator_to_acceptor, 100);
    ASSERT_FALSE(o.open(f0).error);
    EXPECT_EQ(o.open(f0).error, make_error_code(errc::bad_mac));
  }
  {  // reorder
    frame_opener o(key_of(4), direction::initiator_to_acceptor, 100);
    EXPECT_EQ(o.open(f1).error, make_error_code(errc::bad_mac));
  }
  {  // every single bit flipped, in header, payload and tag
    for (std::size_t bit = 0; bit < f0.size() * 8; ++bit) {
      auto bad = f0;
      bad[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      frame_opener o(key_of(4), direction::initiator_to_acceptor, 100);
      auto step = o.open(bad);
      // A flipped length bit may also make the frame too large, or merely incomplete.
      EXPECT_TRUE(step.error || step.consumed == 0) << "bit " << bit;
    }
  }
  {  // reflection: same key, other direction
    frame_opener o(key_of(4), direction::acceptor_to_initiator, 100);
    EXPECT_EQ(o.open(f0).error, make_error_code(errc::bad_mac));
  }
  {  // wrong key
    frame_opener o(key_of(5), direction::initiator_to_acceptor, 100);
    EXPECT_EQ(o.open(f0).error, make_error_code(errc::bad_mac));
  }
}

TEST(Handshake, MessagesRoundTrip) {
  hello_message h;
  h.node_id = "alpha@127.0.0.1:4370";
  h.creation = 42;
  random_bytes(h.challenge);
  auto p = parse_hello(encode_hello(h));
  ASSERT_TRUE(p) << p.fail().message();
  EXPECT_EQ(p->node_id, h.node_id);
  EXPECT_EQ(p->creation, 42u);
  EXPECT_EQ(p->challenge, h.challenge);

  digest d{};
  d[3] = 7;
  auto pr = parse_proof(encode_proof(d));
  ASSERT_TRUE(pr);
  EXPECT_EQ(*pr, d);

  accept_message a;
  a.proof = d;
  auto pa = parse_accept(encode_accept(a));
  ASSERT_TRUE(pa);
  EXPECT_EQ(pa->status, 0u);
  EXPECT_EQ(pa->proof, d);
  a.status = static_cast<std::uint32_t>(errc::not_authorised);
  pa = parse_accept(encode_accept(a));
  ASSERT_TRUE(pa);
  EXPECT_EQ(pa->status, a.status);
}

TEST(Handshake, VersionCheckedFirstAndGarbageRefused) {
  hello_message h;
  h.version = 2;
  h.node_id = "x";
  EXPECT_EQ(parse_hello(encode_hello(h)).error(), make_error_code(errc::version_mismatch));
  const std::uint8_t future[] = {0x91, 0x05};  // [5]: a future layout with only a version
  EXPECT_EQ(parse_hello(future).error(), make_error_code(errc::version_mismatch));
  const std::uint8_t garbage[] = {0xc1, 0xff, 0x00};
  EXPECT_EQ(parse_hello(garbage).error(), make_error_code(errc::handshake_failed));
  EXPECT_EQ(parse_hello({}).error(), make_error_code(errc::handshake_failed));
  h.version = protocol_version;
  auto enc = encode_hello(h);
  enc.push_back(0);  // trailing byte
  EXPECT_EQ(parse_hello(enc).error(), make_error_code(errc::handshake_failed));
  h.node_id = "bad id";
  EXPECT_EQ(parse_hello(encode_hello(h)).error(), make_error_code(errc::handshake_failed));
}

TEST(Handshake, KeysAndProofsDependOnEverything) {
  const auto t1 = transcript_hash(as_bytes("a"), as_bytes("b"));
  const auto t2 = transcript_hash(as_bytes("b"), as_bytes("a"));
  const auto t3 = transcript_hash(as_bytes("ab"), as_bytes(""));
  EXPECT_NE(t1, t2);
  EXPECT_NE(t1, t3);
  EXPECT_NE(initiator_proof(as_bytes("s"), t1), acceptor_proof(as_bytes("s"), t1));
  EXPECT_NE(initiator_proof(as_bytes("s"), t1), initiator_proof(as_bytes("S"), t1));
  const auto k = derive_session_keys(as_bytes("s"), t1);
  EXPECT_NE(k.initiator_to_acceptor, k.acceptor_to_initiator);
  EXPECT_NE(k.initiator_to_acceptor, derive_session_keys(as_bytes("s"), t2).initiator_to_acceptor);
}

TEST(Cookie, CreatedWithMode0400AndReused) {
  test::temp_dir dir;
  const std::string path = (dir.path / "cookie").string();
  auto c1 = load_or_create_cookie(path);
  ASSERT_TRUE(c1) << c1.fail().message();
  EXPECT_EQ(c1->size(), 64u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  auto c2 = load_or_create_cookie(path);
  ASSERT_TRUE(c2);
  EXPECT_EQ(*c1, *c2);
}

TEST(Cookie, GroupOrWorldReadableRefused) {
  test::temp_dir dir;
  const std::string path = (dir.path / "cookie").string();
  { std::ofstream(path) << "secret\n"; }
  ::chmod(path.c_str(), 0644);
  EXPECT_EQ(load_or_create_cookie(path).error(), make_error_code(errc::cookie_error));
  ::chmod(path.c_str(), 0440);
  EXPECT_EQ(load_or_create_cookie(path).error(), make_error_code(errc::cookie_error));
  ::chmod(path.c_str(), 0600);
  auto ok = load_or_create_cookie(path);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, "secret");

  // The endpoint refuses to start on a world-readable cookie.
  ::chmod(path.c_str(), 0604);
  asio::io_context io;
  config cfg;
  cfg.node_id = "a";
  cfg.cookie_path = path;
  auto ep = endpoint::create(io, cfg, {});
  EXPECT_EQ(ep.error(), make_error_code(errc::cookie_error));
}

TEST(Cookie, EndpointCreatesMissingCookie) {
  test::temp_dir dir;
  asio::io_context io;
  config cfg;
  cfg.node_id = "a";
  cfg.cookie_path = (dir.path / "fresh.cookie").string();
  auto ep = endpoint::create(io, cfg, {});
  ASSERT_TRUE(ep) << ep.fail().message();
  struct stat st {};
  ASSERT_EQ(::stat(cfg.cookie_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
}

TEST(Config, InvalidRefused) {
  asio::io_context io;
  config cfg;
  cfg.insecure = true;
  EXPECT_EQ(endpoint::create(io, cfg, {}).error(), make_error_code(errc::invalid_argument));
  cfg.node_id = "n";
  cfg.heartbeat_interval = std::chrono::seconds(5);
  cfg.silence_timeout = std::chrono::seconds(1);
  EXPECT_EQ(endpoint::create(io, cfg, {}).error(), make_error_code(errc::invalid_argument));
}

}  // namespace
}  // namespace otpp::transport
