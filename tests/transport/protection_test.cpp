// Record protection negotiation over real sockets: the agreed mode, refusals, what an
// observer of the wire sees, nodes without negotiation, and tampered offers.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.hpp"

namespace otpp::transport {
namespace {

using namespace test;
using rp = record_protection;

const std::vector<rp> all_modes = {rp::hmac_sha256, rp::aes_256_gcm, rp::chacha20_poly1305};

config with(config cfg, std::vector<rp> modes) {
  cfg.record_protections = std::move(modes);
  return cfg;
}

// Client and server accepting the given record protections.
endpoint_pair pair_of(std::vector<rp> client_modes, std::vector<rp> server_modes) {
  return endpoint_pair(with(test_config("server"), std::move(server_modes)),
                       with(test_config("client"), std::move(client_modes)));
}

TEST(Protection, BothEndsAgreeOnOneModeAndFramesFlowBothWays) {
  struct row {
    std::vector<rp> client, server;
    rp agreed;
  };
  const std::vector<row> rows = {
      {all_modes, all_modes, rp::hmac_sha256},  // the defaults: today's records
      {all_modes, {rp::aes_256_gcm}, rp::aes_256_gcm},
      {{rp::aes_256_gcm}, all_modes, rp::aes_256_gcm},
      {{rp::chacha20_poly1305}, all_modes, rp::chacha20_poly1305},
      {{rp::aes_256_gcm, rp::hmac_sha256}, all_modes, rp::aes_256_gcm},
      // hmac-sha256 is first and second (sum 1), chacha20-poly1305 third and first (2).
      {all_modes, {rp::chacha20_poly1305, rp::hmac_sha256}, rp::hmac_sha256},
      {{rp::chacha20_poly1305, rp::hmac_sha256}, {rp::chacha20_poly1305}, rp::chacha20_poly1305},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(protection_list(r.client) + " -> " + protection_list(r.server));
    auto f = pair_of(r.client, r.server);
    auto c = connect_sync(*f.client, f.addr, "server");
    ASSERT_TRUE(c);
    EXPECT_EQ((*c)->protection(), r.agreed);
    ASSERT_TRUE(f.es.wait([](recorder& x) { return !x.ups.empty(); }));
    EXPECT_EQ(f.es.locked_ups()[0]->protection(), r.agreed);
    // Enough frames to fill several records in each direction.
    const std::vector<std::uint8_t> payload(3000, 0x42);
    for (int i = 0; i < 200; ++i) ASSERT_TRUE((*c)->send(0x20, payload));
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(f.es.locked_ups()[0]->send(0x21, payload));
    ASSERT_TRUE(f.es.wait([](recorder& x) { return x.frames.size() == 200; }));
    ASSERT_TRUE(f.ec.wait([](recorder& x) { return x.frames.size() == 200; }));
    for (const auto& fr : f.es.locked_frames()) ASSERT_EQ(fr.payload, payload);
    for (const auto& fr : f.ec.locked_frames()) ASSERT_EQ(fr.payload, payload);
    EXPECT_TRUE(f.es.locked_downs().empty());
    EXPECT_TRUE(f.ec.locked_downs().empty());
  }
}

TEST(Protection, NoModeInCommonIsRefusedOnBothEndsWithAClearError) {
  for (bool swap : {false, true}) {
    const std::vector<rp> a = {rp::hmac_sha256}, b = {rp::aes_256_gcm, rp::chacha20_poly1305};
    auto f = pair_of(swap ? b : a, swap ? a : b);
    auto c = connect_sync(*f.client, f.addr, "server");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error(), make_error_code(errc::protection_mismatch));
    // The message names what each side accepts.
    EXPECT_NE(c.fail().message().find("hmac-sha256"), std::string::npos) << c.fail().message();
    EXPECT_NE(c.fail().message().find("aes-256-gcm"), std::string::npos) << c.fail().message();
    ASSERT_TRUE(f.es.wait([](recorder& x) { return !x.rejected.empty(); }));
    const auto rejected = f.es.locked_rejected()[0];
    EXPECT_EQ(rejected.code, make_error_code(errc::protection_mismatch));
    EXPECT_NE(rejected.message().find("chacha20-poly1305"), std::string::npos)
        << rejected.message();
    EXPECT_TRUE(f.es.locked_ups().empty());
    EXPECT_TRUE(f.ec.locked_ups().empty());
    EXPECT_FALSE(f.server->find("client"));
  }
}

TEST(Protection, AnObserverReadsPayloadsOnlyUnderHmac) {
  const std::string secret = "the launch code is 0000-1111-2222";
  for (rp mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    io_runner run;
    recorder ec;
    auto c = endpoint::create(run.io, with(test_config("client"), {mode}), ec.events());
    ASSERT_TRUE(c);
    raw_listener l;
    waiter<result<connection_ptr>> w;
    (*c)->connect(loopback(l.port()), [&](result<connection_ptr> r) { w.set(std::move(r)); });
    auto raw = l.accept_one();
    ASSERT_TRUE(raw.valid());
    raw_peer::hs_options o;
    o.protections = all_modes;
    ASSERT_TRUE(raw.handshake_as_acceptor(o));
    EXPECT_EQ(raw.protection, mode);
    auto conn = w.get();
    ASSERT_TRUE(conn && *conn);
    ASSERT_TRUE((**conn)->send(0x20, as_bytes(secret)));
    auto got = raw.read_sealed();
    ASSERT_TRUE(got);
    EXPECT_TRUE(std::equal(got->payload.begin(), got->payload.end(), secret.begin(), secret.end()));
    const auto& wire = raw.last_raw_record();
    const auto marker = as_bytes(secret);
    const bool readable =
        std::search(wire.begin(), wire.end(), marker.begin(), marker.end()) != wire.end();
    EXPECT_EQ(readable, mode == rp::hmac_sha256);
    (*c)->close();
    run.stop();
  }
}

TEST(Protection, APeerWithoutNegotiationGetsHmacOrAClearRefusal) {
  {  // default server: the four-field HELLO means hmac-sha256, and frames flow
    auto f = pair_of(all_modes, all_modes);
    auto raw = raw_peer::connect_to(f.addr.port());
    raw_peer::hs_options o;
    o.protections.clear();
    auto hs = raw.handshake_as_initiator(o);
    ASSERT_TRUE(hs);
    EXPECT_EQ(*hs, 0u);
    EXPECT_EQ(raw.protection, rp::hmac_sha256);
    const std::uint8_t payload[] = {0x91, 0x01};
    ASSERT_TRUE(raw.write_all(raw.seal(0x20, payload)));
    ASSERT_TRUE(f.es.wait([](recorder& x) { return x.frames.size() == 1; }));
  }
  {  // a server that requires encryption refuses it
    auto f = pair_of(all_modes, {rp::aes_256_gcm});
    auto raw = raw_peer::connect_to(f.addr.port());
    raw_peer::hs_options o;
    o.protections.clear();
    auto hs = raw.handshake_as_initiator(o);
    EXPECT_FALSE(hs);  // the raw side sees no agreement either
    ASSERT_TRUE(f.es.wait([](recorder& x) { return !x.rejected.empty(); }));
    EXPECT_EQ(f.es.locked_rejected()[0].code, make_error_code(errc::protection_mismatch));
    EXPECT_TRUE(raw.wait_closed());
  }
}

TEST(Protection, AnOfferChangedOnTheWayFailsTheProof) {
  // A man in the middle strips AEAD from the initiator's offer so that the link falls back
  // to hmac-sha256 (readable). The acceptor agrees on hmac-sha256 from what it received, but
  // the initiator's proof covers the HELLO it really sent: the downgrade is caught.
  auto f = pair_of(all_modes, all_modes);
  auto raw = raw_peer::connect_to(f.addr.port());
  raw_peer::hs_options sent;
  sent.protections = {rp::hmac_sha256};  // what reaches the acceptor
  auto hx = raw.exchange_hello(sent);
  ASSERT_TRUE(hx);
  hello_message original;  // what the initiator meant: AEAD only
  original.node_id = sent.id;
  original.creation = sent.creation;
  original.protections = {rp::aes_256_gcm};
  auto mine = parse_hello(hx->mine);
  ASSERT_TRUE(mine);
  original.challenge = mine->challenge;
  const digest t = transcript_hash(encode_hello(original), hx->theirs);
  std::vector<std::uint8_t> out;
  append_plain_frame(kind::proof, encode_proof(initiator_proof(as_bytes(sent.secret), t)), out);
  ASSERT_TRUE(raw.write_all(out));
  ASSERT_TRUE(f.es.wait([](recorder& x) { return !x.rejected.empty(); }));
  EXPECT_EQ(f.es.locked_rejected()[0].code, make_error_code(errc::not_authorised));
  EXPECT_TRUE(f.es.locked_ups().empty());
}

TEST(Protection, BadConfigurationIsRefused) {
  io_runner run;
  recorder ev;
  const std::vector<std::vector<rp>> bad = {
      {},
      {rp::aes_256_gcm, rp::aes_256_gcm},
      {static_cast<rp>(9)},
      {rp::hmac_sha256, rp::aes_256_gcm, rp::chacha20_poly1305, rp::hmac_sha256},
  };
  for (const auto& modes : bad) {
    auto e = endpoint::create(run.io, with(test_config("n"), modes), ev.events());
    ASSERT_FALSE(e) << protection_list(modes);
    EXPECT_EQ(e.error(), make_error_code(errc::invalid_argument));
  }
}

}  // namespace
}  // namespace otpp::transport
