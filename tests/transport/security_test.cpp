// Hostile and broken peers, played by a raw socket speaking the protocol by hand.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.hpp"

namespace otpp::transport {
namespace {

using namespace test;

// Every test here runs once per record protection: both ends accept only that one.
record_protection current_mode = record_protection::hmac_sha256;

config with_mode(config cfg) {
  cfg.record_protections = {current_mode};
  return cfg;
}

raw_peer::hs_options mode_options() {
  raw_peer::hs_options o;
  o.protections = {current_mode};
  return o;
}

class Security : public ::testing::TestWithParam<record_protection> {
 protected:
  void SetUp() override { current_mode = GetParam(); }
};

struct server_fixture {
  io_runner run;
  recorder ev;
  std::unique_ptr<endpoint> ep;
  std::uint16_t port = 0;
  explicit server_fixture(config cfg = test_config("server")) {
    auto e = endpoint::create(run.io, with_mode(cfg), ev.events());
    EXPECT_TRUE(e);
    ep = std::move(*e);
    auto b = ep->listen(loopback());
    EXPECT_TRUE(b);
    port = b->port();
  }
  ~server_fixture() {
    ep->close();
    run.stop();
  }
  raw_peer authenticated_raw() {
    auto raw = raw_peer::connect_to(port);
    EXPECT_TRUE(raw.valid());
    auto hs = raw.handshake_as_initiator(mode_options());
    EXPECT_TRUE(hs && *hs == 0);
    EXPECT_EQ(raw.protection, current_mode);
    EXPECT_TRUE(ev.wait([](recorder& r) { return r.ups.size() == 1; }));
    return raw;
  }
  failure wait_down() {
    EXPECT_TRUE(ev.wait([](recorder& r) { return !r.downs.empty(); }));
    std::lock_guard l(ev.mu);
    return ev.downs.empty() ? failure() : ev.downs[0];
  }
  std::size_t frames() {
    std::lock_guard l(ev.mu);
    return ev.frames.size();
  }
};

const std::uint8_t payload[] = {0x93, 0x01, 0x02, 0x03};  // msgpack [1,2,3]

TEST_P(Security, WrongSecretFailsOnBothEndsWithNothingDelivered) {
  for (int side = 0; side < 2; ++side) {
    io_runner run;
    recorder es, ec;
    auto s = endpoint::create(run.io,
                              with_mode(test_config("server", side ? "alpha-secret-0123456789"
                                                                   : "beta-secret-0123456789")),
                              es.events());
    auto c = endpoint::create(run.io,
                              with_mode(test_config("client", side ? "beta-secret-0123456789"
                                                                   : "alpha-secret-0123456789")),
                              ec.events());
    ASSERT_TRUE(s && c);
    auto b = (*s)->listen(loopback());
    ASSERT_TRUE(b);
    auto r = connect_sync(**c, *b, "server");
    EXPECT_EQ(r.error(), make_error_code(errc::not_authorised));
    ASSERT_TRUE(es.wait([](recorder& x) { return !x.rejected.empty(); }));
    EXPECT_EQ(es.locked_rejected()[0].code, make_error_code(errc::not_authorised));
    EXPECT_TRUE(es.locked_ups().empty());
    EXPECT_TRUE(ec.locked_ups().empty());
    EXPECT_TRUE(es.locked_frames().empty());
    EXPECT_FALSE((*s)->find("client"));
    (*s)->close();
    (*c)->close();
    run.stop();
  }
}

TEST_P(Security, RawPeerWithWrongSecretIsRefusedAndToldSo) {
  server_fixture f;
  auto raw = raw_peer::connect_to(f.port);
  auto o = mode_options();
  o.secret = "guess";
  auto hs = raw.handshake_as_initiator(o);
  ASSERT_TRUE(hs);
  EXPECT_EQ(*hs, static_cast<std::uint32_t>(errc::not_authorised));
  EXPECT_TRUE(raw.wait_closed());
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return !r.rejected.empty(); }));
  EXPECT_EQ(f.ev.locked_rejected()[0].code, make_error_code(errc::not_authorised));
}

TEST_P(Security, VersionMismatchOnBothEnds) {
  {  // endpoint accepts, raw peer speaks version 2
    server_fixture f;
    auto raw = raw_peer::connect_to(f.port);
    auto o = mode_options();
    o.version = 2;
    auto hs = raw.handshake_as_initiator(o);  // the server's hello is version 1: fine to parse
    (void)hs;
    ASSERT_TRUE(f.ev.wait([](recorder& r) { return !r.rejected.empty(); }));
    EXPECT_EQ(f.ev.locked_rejected()[0].code, make_error_code(errc::version_mismatch));
  }
  {  // endpoint connects, raw listener answers with version 2
    io_runner run;
    recorder ec;
    auto c = endpoint::create(run.io, with_mode(test_config("client")), ec.events());
    ASSERT_TRUE(c);
    raw_listener l;
    waiter<result<connection_ptr>> w;
    (*c)->connect(loopback(l.port()), [&](result<connection_ptr> r) { w.set(std::move(r)); });
    auto raw = l.accept_one();
    ASSERT_TRUE(raw.valid());
    auto o = mode_options();
    o.version = 2;
    auto hs = raw.handshake_as_acceptor(o);
    // The endpoint stops after the hello exchange: no proof ever reaches the raw peer.
    EXPECT_FALSE(hs);
    auto r = w.get();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->error(), make_error_code(errc::version_mismatch));
    (*c)->close();
    run.stop();
  }
}

TEST_P(Security, ReplayedFrameRejected) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  const auto fr = raw.seal(0x20, payload);
  ASSERT_TRUE(raw.write_all(fr));
  ASSERT_TRUE(raw.write_all(fr));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac));
  EXPECT_EQ(f.frames(), 1u);
}

TEST_P(Security, ReorderedFramesRejected) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  const auto f0 = raw.seal(0x20, payload);
  const auto f1 = raw.seal(0x20, payload);
  ASSERT_TRUE(raw.write_all(f1));
  ASSERT_TRUE(raw.write_all(f0));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac));
  EXPECT_EQ(f.frames(), 0u);
}

TEST_P(Security, BitFlippedFrameRejected) {
  // Record length (a shorter record), frame length, kind, payload, payload end, MAC.
  for (std::size_t pos : {std::size_t{3}, std::size_t{7}, std::size_t{8}, std::size_t{10},
                          std::size_t{12}, std::size_t{16}}) {
    server_fixture f;
    auto raw = f.authenticated_raw();
    auto fr = raw.seal(0x20, payload);
    fr[pos] ^= 0x01;
    ASSERT_TRUE(raw.write_all(fr));
    EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac)) << pos;
    EXPECT_EQ(f.frames(), 0u);
  }
}

TEST_P(Security, ReflectedFrameRejected) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  auto conn = f.ep->find("raw");
  ASSERT_TRUE(conn);
  ASSERT_TRUE(conn->send(0x20, payload));
  auto got = raw.read_sealed();
  ASSERT_TRUE(got);
  // Send the server's own record (sequence 0) back to it.
  ASSERT_TRUE(raw.write_all(raw.last_raw_record()));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac));
  EXPECT_EQ(f.frames(), 0u);
}

TEST_P(Security, InjectedUnauthenticatedFrameRejected) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  std::vector<std::uint8_t> fr(record_header_size);
  append_plain_frame(0x20, payload, fr);
  put_u32(fr.data(), static_cast<std::uint32_t>(fr.size() - record_header_size));
  fr.resize(fr.size() + mac_size, 0);  // a record with a made-up tag
  ASSERT_TRUE(raw.write_all(fr));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac));
  EXPECT_EQ(f.frames(), 0u);
}

TEST_P(Security, RecordOfSeveralFramesDeliveredInOrderAndReplayRejected) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  const std::uint8_t p1[] = {0x01}, p2[] = {0x02};
  const frame_view frames[] = {{0x20, payload}, {0x21, {}}, {0x22, p1}, {0x23, p2}};
  const auto rec = raw.seal_record(frames);
  ASSERT_TRUE(raw.write_all(rec));
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return r.frames.size() == 4; }));
  const auto got = f.ev.locked_frames();
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(got[i].kind, frames[i].kind);
    EXPECT_TRUE(std::equal(got[i].payload.begin(), got[i].payload.end(), frames[i].payload.begin(),
                           frames[i].payload.end()));
  }
  ASSERT_TRUE(raw.write_all(rec));  // the same record again
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::bad_mac));
  EXPECT_EQ(f.frames(), 4u);
}

TEST_P(Security, MalformedFrameInsideAuthenticRecordDeliversNothing) {
  // Bodies that carry a valid MAC but do not parse as frames: a frame running past the end
  // of the record, a zero frame length, a truncated frame header, trailing bytes.
  std::vector<std::vector<std::uint8_t>> bodies;
  {
    std::vector<std::uint8_t> b;
    append_plain_frame(0x20, payload, b);
    b.push_back(0);
    b.push_back(0);
    b.push_back(0);
    b.push_back(9);  // next frame claims 9 bytes
    b.push_back(0x20);
    bodies.push_back(b);
  }
  {
    std::vector<std::uint8_t> b;
    append_plain_frame(0x20, payload, b);
    b.insert(b.end(), {0, 0, 0, 0});
    bodies.push_back(b);
  }
  bodies.push_back({0, 0, 0});
  {
    std::vector<std::uint8_t> b;
    append_plain_frame(0x20, payload, b);
    b.push_back(0x20);
    bodies.push_back(b);
  }
  for (const auto& body : bodies) {
    server_fixture f;
    auto raw = f.authenticated_raw();
    ASSERT_TRUE(raw.write_all(raw.seal_raw_body(body)));
    EXPECT_EQ(f.wait_down().code, make_error_code(errc::malformed_frame));
    EXPECT_EQ(f.frames(), 0u);
  }
}

TEST_P(Security, OversizeFrameInsideRecordRejected) {
  auto cfg = test_config("server");
  cfg.max_frame_size = 16;
  server_fixture f(cfg);
  auto raw = f.authenticated_raw();
  const std::vector<std::uint8_t> big(17, 0x90);
  const frame_view frames[] = {{0x20, payload}, {0x20, big}};
  ASSERT_TRUE(raw.write_all(raw.seal_record(frames)));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::frame_too_large));
  EXPECT_EQ(f.frames(), 0u);
}

TEST_P(Security, OversizeFrameClosesBeforeReadingIt) {
  server_fixture f;  // max 1 MiB
  auto raw = f.authenticated_raw();
  std::uint8_t hdr[4];
  // A record one byte longer than the largest one frame can need.
  put_u32(hdr, static_cast<std::uint32_t>(max_record_body(1u << 20) + 1));
  ASSERT_TRUE(raw.write_all(hdr));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::frame_too_large));
  EXPECT_TRUE(raw.wait_closed());
}

TEST_P(Security, TruncatedFramePeerClosesMidFrame) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  const auto good = raw.seal(0x20, payload);
  const auto fr = raw.seal(0x20, std::vector<std::uint8_t>(1000, 0x55));
  ASSERT_TRUE(raw.write_all(good));
  ASSERT_TRUE(raw.write_all(bytes_view(fr).first(fr.size() / 2)));
  raw.close();
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::malformed_frame));
  EXPECT_EQ(f.frames(), 1u);
}

TEST_P(Security, ZeroLengthFrameIsMalformed) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  const std::uint8_t zero[4] = {0, 0, 0, 0};
  ASSERT_TRUE(raw.write_all(zero));
  EXPECT_EQ(f.wait_down().code, make_error_code(errc::malformed_frame));
}

TEST_P(Security, UnknownFrameKindRefused) {
  auto cfg = test_config("server");
  cfg.accepted_kinds.reset(0x42);
  for (std::uint8_t k : {std::uint8_t{0x07}, std::uint8_t{0x42}}) {
    server_fixture f(cfg);
    auto raw = f.authenticated_raw();
    ASSERT_TRUE(raw.write_all(raw.seal(k, payload)));
    EXPECT_EQ(f.wait_down().code, make_error_code(errc::unknown_frame_kind));
    EXPECT_EQ(f.frames(), 0u);
  }
}

TEST_P(Security, GarbageHandshakeRejected) {
  server_fixture f;
  auto raw = raw_peer::connect_to(f.port);
  std::vector<std::uint8_t> fr;
  const std::uint8_t junk[] = {0xde, 0xad, 0xbe, 0xef};
  append_plain_frame(kind::hello, junk, fr);
  ASSERT_TRUE(raw.write_all(fr));
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return !r.rejected.empty(); }));
  EXPECT_EQ(f.ev.locked_rejected()[0].code, make_error_code(errc::handshake_failed));
  // An oversize handshake frame is refused from its header.
  auto raw2 = raw_peer::connect_to(f.port);
  std::uint8_t hdr[5];
  put_u32(hdr, 1u << 24);
  hdr[4] = kind::hello;
  ASSERT_TRUE(raw2.write_all(hdr));
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return r.rejected.size() == 2; }));
  EXPECT_EQ(f.ev.locked_rejected()[1].code, make_error_code(errc::handshake_failed));
}

TEST_P(Security, HandshakeTimeout) {
  auto cfg = test_config("server");
  cfg.handshake_timeout = std::chrono::milliseconds(100);
  server_fixture f(cfg);
  auto raw = raw_peer::connect_to(f.port);  // connects, says nothing
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return !r.rejected.empty(); }));
  EXPECT_EQ(f.ev.locked_rejected()[0].code, make_error_code(errc::handshake_failed));
  EXPECT_TRUE(raw.wait_closed());
}

TEST_P(Security, FramesSplitAtEveryByteBoundary) {
  server_fixture f;
  auto raw = f.authenticated_raw();
  // Frame i is written in two parts cut at byte i, so every cut point of the frame layout
  // reaches the decoder (TCP_NODELAY on both sides; the kernel may still merge some).
  std::vector<std::uint8_t> body(40);
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<std::uint8_t>(i);
  const std::size_t total = record_sealer::sealed_size(body.size());
  for (std::size_t cut = 0; cut <= total; ++cut) {
    body[0] = static_cast<std::uint8_t>(cut);
    const auto fr = raw.seal(0x20, body);
    ASSERT_TRUE(raw.write_all(bytes_view(fr).first(cut)));
    ASSERT_TRUE(raw.write_all(bytes_view(fr).subspan(cut)));
  }
  // Then a whole stream dribbled one byte per write.
  std::vector<std::uint8_t> stream;
  for (int i = 0; i < 5; ++i) {
    const auto fr = raw.seal(0x21, bytes_view(body).first(static_cast<std::size_t>(i)));
    stream.insert(stream.end(), fr.begin(), fr.end());
  }
  for (auto b : stream) ASSERT_TRUE(raw.write_all(bytes_view(&b, 1)));
  const std::size_t expected = total + 1 + 5;
  ASSERT_TRUE(f.ev.wait([&](recorder& r) { return r.frames.size() == expected; }));
  for (std::size_t cut = 0; cut <= total; ++cut) {
    EXPECT_EQ(f.ev.locked_frames()[cut].payload.size(), body.size());
    EXPECT_EQ(f.ev.locked_frames()[cut].payload[0], static_cast<std::uint8_t>(cut));
  }
  for (std::size_t i = 0; i < 5; ++i)
    EXPECT_EQ(f.ev.locked_frames()[total + 1 + i].payload.size(), i);
  EXPECT_TRUE(f.ev.locked_downs().empty());
}

TEST_P(Security, FrameBeforeHandshakeCompletesIsRefused) {
  server_fixture f;
  auto raw = raw_peer::connect_to(f.port);
  std::vector<std::uint8_t> fr;
  append_plain_frame(0x20, payload, fr);  // data instead of hello
  ASSERT_TRUE(raw.write_all(fr));
  ASSERT_TRUE(f.ev.wait([](recorder& r) { return !r.rejected.empty(); }));
  EXPECT_EQ(f.ev.locked_rejected()[0].code, make_error_code(errc::handshake_failed));
  EXPECT_EQ(f.frames(), 0u);
}

TEST_P(Security, InsecureModeStillAuthenticatesFrames) {
  auto cfg = test_config("server");
  cfg.insecure = true;
  cfg.secret.clear();
  server_fixture f(cfg);
  auto raw = raw_peer::connect_to(f.port);
  auto o = mode_options();  // secret "test-secret" is not the insecure-mode secret
  auto hs = raw.handshake_as_initiator(o);
  ASSERT_TRUE(hs);
  EXPECT_EQ(*hs, static_cast<std::uint32_t>(errc::not_authorised));
}

INSTANTIATE_TEST_SUITE_P(Modes, Security,
                         ::testing::Values(record_protection::hmac_sha256,
                                           record_protection::aes_256_gcm,
                                           record_protection::chacha20_poly1305),
                         [](const ::testing::TestParamInfo<record_protection>& info) {
                           std::string n(to_string(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace otpp::transport
