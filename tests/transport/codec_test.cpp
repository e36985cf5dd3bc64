// Frame codec, handshake messages, key schedule, cookie file: no sockets.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <msgpack.hpp>
#include <optional>

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

std::vector<frame_view> frames_of(bytes_view body) {
  std::vector<frame_view> out;
  frame_view f;
  for (frame_reader r(body); r.next(f);) out.push_back(f);
  return out;
}

class Record : public ::testing::TestWithParam<record_protection> {
 protected:
  record_protection mode() const { return GetParam(); }
};

std::string mode_name(const ::testing::TestParamInfo<record_protection>& info) {
  std::string n(to_string(info.param));
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
}

TEST_P(Record, SealOpenRoundTripSizes) {
  record_sealer s(key_of(1), direction::initiator_to_acceptor, mode());
  record_opener o(key_of(1), direction::initiator_to_acceptor, 70000, mode());
  for (std::size_t n : {0u, 1u, 2u, 64u, 65536u, 70000u}) {
    std::vector<std::uint8_t> wire;
    const auto p = bytes(n);
    s.seal(0x20, p, wire);
    ASSERT_EQ(wire.size(), record_sealer::sealed_size(n));
    auto step = o.open(wire);
    ASSERT_FALSE(step.error) << n;
    ASSERT_EQ(step.consumed, wire.size());
    const auto fs = frames_of(step.body);
    ASSERT_EQ(fs.size(), 1u);
    EXPECT_EQ(fs[0].kind, 0x20);
    EXPECT_TRUE(std::equal(p.begin(), p.end(), fs[0].payload.begin(), fs[0].payload.end()));
  }
  EXPECT_EQ(s.next_sequence(), 6u);
  EXPECT_EQ(o.next_sequence(), 6u);
}

TEST_P(Record, SeveralFramesInOneRecord) {
  record_sealer s(key_of(1), direction::acceptor_to_initiator, mode());
  record_opener o(key_of(1), direction::acceptor_to_initiator, 1000, mode());
  const auto a = bytes(0), b = bytes(1), c = bytes(1000);
  const frame_view in[] = {{0x11, a}, {0x12, b}, {0x13, c}, {0x14, a}};
  std::vector<std::uint8_t> wire;
  s.seal(in, wire);
  EXPECT_EQ(wire.size(), record_overhead + 4 * header_size + 1001);
  auto step = o.open(wire);
  ASSERT_FALSE(step.error);
  ASSERT_EQ(step.consumed, wire.size());
  const auto fs = frames_of(step.body);
  ASSERT_EQ(fs.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(fs[i].kind, in[i].kind);
    EXPECT_TRUE(std::equal(in[i].payload.begin(), in[i].payload.end(), fs[i].payload.begin(),
                           fs[i].payload.end()));
  }
}

TEST_P(Record, EveryByteBoundaryNeedsMoreThenDecodes) {
  record_sealer s(key_of(2), direction::acceptor_to_initiator, mode());
  std::vector<std::uint8_t> wire;
  const auto p1 = bytes(1), p300 = bytes(300);
  s.seal(0x11, bytes(0), wire);
  const frame_view two[] = {{0x12, p1}, {0x13, p300}};
  s.seal(two, wire);
  s.seal(0x14, p1, wire);
  const std::size_t r0 = record_sealer::sealed_size(0);
  const std::size_t r1 = r0 + record_overhead + 2 * header_size + 301;
  // Feed every prefix of the stream: records appear exactly when complete.
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    record_opener o(key_of(2), direction::acceptor_to_initiator, 1000, mode());
    std::size_t off = 0;
    int got = 0;
    for (;;) {
      auto in = wire;  // each cut opens its own copy (AEAD records decrypt in place)
      auto step = o.open(std::span(in.data() + off, cut - off));
      ASSERT_FALSE(step.error) << "cut " << cut;
      if (!step.consumed) {
        EXPECT_GT(step.needed, cut - off);
        break;
      }
      off += step.consumed;
      ++got;
    }
    const int complete = cut >= wire.size() ? 3 : cut >= r1 ? 2 : cut >= r0 ? 1 : 0;
    EXPECT_EQ(got, complete) << "cut " << cut;
  }
}

TEST_P(Record, OversizeAndZeroLengthRejectedFromHeader) {
  record_opener o(key_of(3), direction::initiator_to_acceptor, 100, mode());
  // The bound is the larger of the batching target and one maximal frame.
  EXPECT_EQ(max_record_body(100), record_body_target);
  EXPECT_EQ(max_record_body(1u << 20), header_size + (1u << 20));
  std::uint8_t hdr[4];
  put_u32(hdr, static_cast<std::uint32_t>(record_body_target + 1));
  EXPECT_EQ(o.open(hdr).error, make_error_code(errc::frame_too_large));
  std::uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(o.open(huge).error, make_error_code(errc::frame_too_large));
  std::uint8_t zero[4] = {0, 0, 0, 0};
  EXPECT_EQ(o.open(zero).error, make_error_code(errc::malformed_frame));
  put_u32(hdr, static_cast<std::uint32_t>(record_body_target));  // allowed, needs more
  auto step = o.open(hdr);
  EXPECT_FALSE(step.error);
  EXPECT_EQ(step.needed, record_body_target + record_overhead);
}

TEST_P(Record, MalformedOrOversizeFramesInsideAuthenticRecord) {
  struct bad_case {
    std::vector<std::uint8_t> body;
    errc expect;
  };
  const std::vector<bad_case> cases = {
      {{0, 0, 0, 2, 0x20}, errc::malformed_frame},              // frame runs past the end
      {{0, 0, 0, 1, 0x20, 0, 0, 0, 0}, errc::malformed_frame},  // zero frame length
      {{0, 0, 0, 1, 0x20, 0}, errc::malformed_frame},           // trailing byte
      {{0, 0, 0}, errc::malformed_frame},                       // truncated frame header
      {{0, 0, 0, 102, 0x20}, errc::frame_too_large},            // 101 bytes of payload
  };
  for (const auto& c : cases) {
    record_sealer s(key_of(3), direction::initiator_to_acceptor, mode());
    record_opener o(key_of(3), direction::initiator_to_acceptor, 100, mode());
    std::vector<std::uint8_t> rec(record_overhead + c.body.size());
    std::copy(c.body.begin(), c.body.end(), rec.begin() + record_header_size);
    s.seal_in_place(rec.data(), c.body.size());
    auto step = o.open(rec);
    EXPECT_EQ(step.error, make_error_code(c.expect));
    EXPECT_EQ(step.consumed, 0u);
    EXPECT_EQ(o.next_sequence(), 1u);  // the MAC was checked (and passed) first
  }
}

TEST_P(Record, ReplayReorderBitFlipReflectionWrongKeyRejected) {
  record_sealer s(key_of(4), direction::initiator_to_acceptor, mode());
  std::vector<std::uint8_t> f0, f1;
  const auto p1 = bytes(10, 1), p2 = bytes(10, 2);
  const frame_view two[] = {{0x20, p1}, {0x21, p2}};
  s.seal(two, f0);
  s.seal(0x20, p2, f1);
  {  // replay
    record_opener o(key_of(4), direction::initiator_to_acceptor, 100, mode());
    auto first = f0, again = f0;
    ASSERT_FALSE(o.open(first).error);
    EXPECT_EQ(o.open(again).error, make_error_code(errc::bad_mac));
  }
  {  // reorder
    record_opener o(key_of(4), direction::initiator_to_acceptor, 100, mode());
    EXPECT_EQ(o.open(f1).error, make_error_code(errc::bad_mac));
  }
  {  // every single bit flipped, in the record header, frame headers, payloads and tag
    for (std::size_t bit = 0; bit < f0.size() * 8; ++bit) {
      auto bad = f0;
      bad[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      record_opener o(key_of(4), direction::initiator_to_acceptor, 100, mode());
      auto step = o.open(bad);
      // A flipped record length bit may also make the record too large, or incomplete.
      EXPECT_TRUE(step.error || step.consumed == 0) << "bit " << bit;
      if (bit >= 32) {
        EXPECT_EQ(step.error, make_error_code(errc::bad_mac)) << "bit " << bit;
      }
    }
  }
  {  // reflection: same key, other direction
    record_opener o(key_of(4), direction::acceptor_to_initiator, 100, mode());
    auto in = f0;
    EXPECT_EQ(o.open(in).error, make_error_code(errc::bad_mac));
  }
  {  // wrong key
    record_opener o(key_of(5), direction::initiator_to_acceptor, 100, mode());
    auto in = f0;
    EXPECT_EQ(o.open(in).error, make_error_code(errc::bad_mac));
  }
  {  // a record cut short and re-labelled with a smaller length
    auto cut = f0;
    put_u32(cut.data(), static_cast<std::uint32_t>(header_size + p1.size()));
    record_opener o(key_of(4), direction::initiator_to_acceptor, 100, mode());
    EXPECT_EQ(o.open(cut).error, make_error_code(errc::bad_mac));
  }
}

TEST_P(Record, BatchGroupsFramesIntoRecordsAndSealsInPlace) {
  record_batch batch;
  std::vector<std::vector<std::uint8_t>> sent;
  std::vector<std::uint8_t> kinds;
  // Plain frame first (as the acceptor's ACCEPT), then many small frames, one frame larger
  // than the batching target, then small ones again.
  batch.add_plain_frame(kind::accept, bytes(7));
  for (int i = 0; i < 3000; ++i) {
    sent.push_back(bytes(100 + static_cast<std::size_t>(i % 50), static_cast<std::uint8_t>(i)));
    kinds.push_back(static_cast<std::uint8_t>(0x20 + i % 7));
  }
  sent.push_back(bytes(record_body_target + 10, 9));
  kinds.push_back(0x30);
  for (int i = 0; i < 10; ++i) {
    sent.push_back(bytes(static_cast<std::size_t>(i)));
    kinds.push_back(0x31);
  }
  for (std::size_t i = 0; i < sent.size(); ++i) batch.add_frame(kinds[i], sent[i]);
  record_sealer s(key_of(6), direction::initiator_to_acceptor, mode());
  batch.seal(s);
  EXPECT_EQ(s.next_sequence(), batch.records());
  EXPECT_GE(batch.records(), 3u);
  // ~390 KB of small frames (two chunks), one frame larger than a chunk (a chunk of its own),
  // then small ones again (a fourth): written as pieces in order; no record straddles two.
  EXPECT_EQ(batch.pieces(), 4u);
  EXPECT_GT(batch.piece(2).size(), record_batch::chunk_size);
  std::size_t in_pieces = 0;
  for (std::size_t p = 0; p < batch.pieces(); ++p) in_pieces += batch.piece(p).size();
  EXPECT_EQ(in_pieces, batch.size());

  std::vector<std::uint8_t> stream = batch.bytes();
  std::span<std::uint8_t> wire(stream);
  auto plain = decode_plain_frame(wire);
  ASSERT_TRUE(plain.consumed);
  EXPECT_EQ(plain.frame.kind, kind::accept);
  wire = wire.subspan(plain.consumed);
  record_opener o(key_of(6), direction::initiator_to_acceptor, record_body_target + 10, mode());
  std::size_t i = 0, records = 0;
  while (!wire.empty()) {
    auto step = o.open(wire);
    ASSERT_FALSE(step.error);
    ASSERT_TRUE(step.consumed);
    EXPECT_LE(step.body.size(), max_record_body(record_body_target + 10));
    // Only a record holding one big frame exceeds the target.
    const auto fs = frames_of(step.body);
    if (step.body.size() > record_body_target) {
      EXPECT_EQ(fs.size(), 1u);
    }
    for (const auto& f : fs) {
      ASSERT_LT(i, sent.size());
      EXPECT_EQ(f.kind, kinds[i]);
      EXPECT_TRUE(std::equal(sent[i].begin(), sent[i].end(), f.payload.begin(), f.payload.end()));
      ++i;
    }
    wire = wire.subspan(step.consumed);
    ++records;
  }
  EXPECT_EQ(i, sent.size());
  EXPECT_EQ(records, batch.records());

  // Cleared and reused: a fresh batch, sequence numbers continue. Only a few standard
  // chunks are kept (the outsized one is freed).
  batch.clear();
  EXPECT_TRUE(batch.empty());
  EXPECT_LE(batch.capacity(), record_batch::max_spare_chunks * record_batch::chunk_size);
  EXPECT_GT(batch.capacity(), 0u);
  batch.add_frame(0x20, bytes(3));
  batch.seal(s);
  std::vector<std::uint8_t> more = batch.bytes();
  auto step = o.open(more);
  ASSERT_FALSE(step.error);
  EXPECT_EQ(step.consumed, batch.size());
}

TEST_P(Record, PayloadReadableOnTheWireOnlyWithHmac) {
  // The threat model difference: an observer of an hmac-sha256 stream reads every payload;
  // of an AEAD stream, nothing but record lengths.
  record_sealer s(key_of(7), direction::initiator_to_acceptor, mode());
  const std::string secret = "card 4111-1111-1111-1111 expires 12/29";
  std::vector<std::uint8_t> wire;
  s.seal(0x20, as_bytes(secret), wire);
  const auto marker = as_bytes(secret);
  const bool visible =
      std::search(wire.begin(), wire.end(), marker.begin(), marker.end()) != wire.end();
  EXPECT_EQ(visible, !encrypts(mode()));
  record_opener o(key_of(7), direction::initiator_to_acceptor, 100, mode());
  auto step = o.open(wire);
  ASSERT_FALSE(step.error);
  const auto fs = frames_of(step.body);
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_TRUE(std::equal(marker.begin(), marker.end(), fs[0].payload.begin(), fs[0].payload.end()));
}

TEST_P(Record, KeyRatchetStepsAtTheSameRecordOnBothEnds) {
  // A tiny update limit: the key changes every few records; both ends count the same
  // bodies, so every record opens. An opener that does not ratchet fails at the first
  // record under the new key (AEAD modes; HMAC records keep their key).
  constexpr std::uint64_t limit = 200;
  record_sealer s(key_of(8), direction::initiator_to_acceptor, mode(), limit);
  record_opener ratcheting(key_of(8), direction::initiator_to_acceptor, 1000, mode(), limit);
  record_opener fixed(key_of(8), direction::initiator_to_acceptor, 1000, mode());
  bool fixed_failed = false;
  std::size_t body_bytes = 0, first_failure = 0;
  for (std::size_t i = 0; i < 20; ++i) {
    std::vector<std::uint8_t> wire;
    const auto p = bytes(60 + i, static_cast<std::uint8_t>(i));
    s.seal(0x20, p, wire);
    auto copy = wire;
    auto step = ratcheting.open(wire);
    ASSERT_FALSE(step.error) << "record " << i;
    const auto fs = frames_of(step.body);
    ASSERT_EQ(fs.size(), 1u);
    EXPECT_TRUE(std::equal(p.begin(), p.end(), fs[0].payload.begin(), fs[0].payload.end()));
    if (!fixed_failed && fixed.open(copy).error) {
      fixed_failed = true;
      first_failure = i;
      EXPECT_GE(body_bytes, limit);  // only once the old key had protected `limit` bytes
    }
    body_bytes += header_size + p.size();
  }
  EXPECT_EQ(fixed_failed, encrypts(mode()));
  if (encrypts(mode())) {
    // 65 + 66 + 67 = 198 bytes < 200; record 3 brings 266, so the key changes after it.
    EXPECT_EQ(first_failure, 4u);
  }
}

TEST_P(Record, SequenceIsNeverReused) {
  // The last sequence number can be sealed once; then the sealer says none is left (the
  // connection closes) and the opener refuses anything further.
  record_sealer s(key_of(9), direction::acceptor_to_initiator, mode(),
                  detail::record_state::default_key_update_bytes,
                  detail::record_state::last_sequence);
  record_opener o(key_of(9), direction::acceptor_to_initiator, 100, mode(),
                  detail::record_state::default_key_update_bytes,
                  detail::record_state::last_sequence);
  EXPECT_EQ(s.records_left(), 1u);
  std::vector<std::uint8_t> wire;
  s.seal(0x20, bytes(8), wire);
  EXPECT_EQ(s.records_left(), 0u);
  ASSERT_FALSE(o.open(wire).error);
  std::vector<std::uint8_t> next;
  s.seal(0x20, bytes(8), next);  // what a buggy writer would send: refused
  EXPECT_EQ(o.open(next).error, make_error_code(errc::bad_mac));
  EXPECT_EQ(record_sealer(key_of(9), direction::acceptor_to_initiator, mode()).records_left(),
            detail::record_state::last_sequence + 1);
}

TEST_P(Record, RecordHoldingARefusedKindIsRefusedWhole) {
  record_sealer s(key_of(11), direction::initiator_to_acceptor, mode());
  record_opener o(key_of(11), direction::initiator_to_acceptor, 100, mode());
  std::bitset<256> kinds;
  kinds.set(0x20);
  o.accept_kinds(kinds);
  const auto p = bytes(4);
  const frame_view ok[] = {{0x20, p}, {0x20, p}};
  const frame_view bad[] = {{0x20, p}, {0x21, p}, {0x20, p}};
  std::vector<std::uint8_t> w1, w2;
  s.seal(ok, w1);
  s.seal(bad, w2);
  auto step = o.open(w1);
  ASSERT_FALSE(step.error);
  EXPECT_EQ(frames_of(step.body).size(), 2u);
  step = o.open(w2);
  EXPECT_EQ(step.error, make_error_code(errc::unknown_frame_kind));
  EXPECT_EQ(step.kind, 0x21);
  EXPECT_EQ(step.consumed, 0u);      // nothing of it is handed out
  EXPECT_EQ(o.next_sequence(), 2u);  // the tag was checked (and passed) first
}

TEST_P(Record, OtherProtectionWithTheSameKeyRejected) {
  for (auto other : {record_protection::hmac_sha256, record_protection::aes_256_gcm,
                     record_protection::chacha20_poly1305}) {
    if (other == mode()) continue;
    record_sealer s(key_of(10), direction::initiator_to_acceptor, mode());
    record_opener o(key_of(10), direction::initiator_to_acceptor, 100, other);
    std::vector<std::uint8_t> wire;
    s.seal(0x20, bytes(20), wire);
    EXPECT_EQ(o.open(wire).error, make_error_code(errc::bad_mac)) << to_string(other);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, Record,
                         ::testing::Values(record_protection::hmac_sha256,
                                           record_protection::aes_256_gcm,
                                           record_protection::chacha20_poly1305),
                         mode_name);

std::vector<std::uint8_t> hex(std::string_view h) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return out;
}

TEST(Aead, AesGcmKnownAnswer) {
  // McGrew and Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, 96-bit
  // IV, associated data): checks the nonce, AAD and in-place plumbing of the wrapper.
  const auto k = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  const auto iv = hex("cafebabefacedbaddecaf888");
  const auto pt =
      hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
          "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
  const auto aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  const auto ct =
      hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662");
  const auto tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
  session_key key{};
  std::copy(k.begin(), k.end(), key.begin());
  aead::nonce_type n{};
  std::copy(iv.begin(), iv.end(), n.begin());
  aead sealer(aead::algorithm::aes_256_gcm, key, true);
  auto data = pt;
  std::uint8_t t[aead::tag_size];
  sealer.seal(n, aad, data, t);
  EXPECT_EQ(data, ct);
  EXPECT_TRUE(std::equal(tag.begin(), tag.end(), t));
  aead opener(aead::algorithm::aes_256_gcm, key, false);
  EXPECT_TRUE(opener.open(n, aad, data, t));
  EXPECT_EQ(data, pt);
  // Wrong associated data: refused.
  auto again = ct;
  auto other_aad = aad;
  other_aad[0] ^= 1;
  EXPECT_FALSE(opener.open(n, other_aad, again, t));
  EXPECT_TRUE(aead::available(aead::algorithm::aes_256_gcm));
  EXPECT_TRUE(aead::available(aead::algorithm::chacha20_poly1305));
}

TEST(Negotiation, AgreesTheSameWayFromBothEnds) {
  using rp = record_protection;
  const std::vector<rp> defaults = {rp::hmac_sha256, rp::aes_256_gcm, rp::chacha20_poly1305};
  struct row {
    std::vector<rp> a, b;
    std::optional<rp> agreed;
  };
  const std::vector<row> rows = {
      {defaults, defaults, rp::hmac_sha256},
      {defaults, {rp::aes_256_gcm}, rp::aes_256_gcm},
      {defaults, {rp::aes_256_gcm, rp::hmac_sha256}, rp::aes_256_gcm},  // tie: stronger
      {defaults, {rp::chacha20_poly1305, rp::aes_256_gcm}, rp::aes_256_gcm},
      {{rp::chacha20_poly1305}, defaults, rp::chacha20_poly1305},
      {{rp::hmac_sha256}, {rp::aes_256_gcm}, std::nullopt},
      {{rp::hmac_sha256}, {}, std::nullopt},
      {{rp::aes_256_gcm, rp::chacha20_poly1305},
       {rp::chacha20_poly1305, rp::aes_256_gcm},
       rp::aes_256_gcm},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(negotiate_protection(r.a, r.b), r.agreed)
        << protection_list(r.a) << " / " << protection_list(r.b);
    EXPECT_EQ(negotiate_protection(r.b, r.a), r.agreed)
        << protection_list(r.b) << " / " << protection_list(r.a);
  }
  for (auto m : defaults) EXPECT_EQ(parse_record_protection(to_string(m)), m);
  EXPECT_EQ(parse_record_protection("aes-128-gcm"), std::nullopt);
}

TEST(Negotiation, HelloCarriesTheOfferAndOldHellosOfferHmac) {
  hello_message h;
  h.node_id = "n1";
  h.protections = {record_protection::chacha20_poly1305, record_protection::aes_256_gcm};
  auto p = parse_hello(encode_hello(h));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->protections, h.protections);
  h.protections.clear();  // a node from before negotiation: four fields
  p = parse_hello(encode_hello(h));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->protections, std::vector{record_protection::hmac_sha256});

  const auto with_offer = [&](auto pack_offer) {
    msgpack::sbuffer out;
    msgpack::packer<msgpack::sbuffer> pk(out);
    pk.pack_array(5);
    pk.pack_uint32(protocol_version);
    pk.pack(std::string("n2"));
    pk.pack_uint32(1);
    pk.pack_bin(nonce_size);
    nonce n{};
    pk.pack_bin_body(reinterpret_cast<const char*>(n.data()), nonce_size);
    pack_offer(pk);
    return std::vector<std::uint8_t>(
        reinterpret_cast<const std::uint8_t*>(out.data()),
        reinterpret_cast<const std::uint8_t*>(out.data()) + out.size());
  };
  // Unknown (newer) names and repeats are skipped.
  p = parse_hello(with_offer([](auto& pk) {
    pk.pack_array(4);
    pk.pack(std::string("post-quantum-9000"));
    pk.pack(std::string("aes-256-gcm"));
    pk.pack(std::string("aes-256-gcm"));
    pk.pack(std::string("hmac-sha256"));
  }));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->protections,
            (std::vector{record_protection::aes_256_gcm, record_protection::hmac_sha256}));
  // Not an array, a non-string name, too many names: malformed.
  EXPECT_EQ(parse_hello(with_offer([](auto& pk) { pk.pack(std::string("aes-256-gcm")); })).error(),
            make_error_code(errc::handshake_failed));
  EXPECT_EQ(parse_hello(with_offer([](auto& pk) {
              pk.pack_array(1);
              pk.pack_uint32(2);
            })).error(),
            make_error_code(errc::handshake_failed));
  EXPECT_EQ(parse_hello(with_offer([](auto& pk) {
              pk.pack_array(9);
              for (int i = 0; i < 9; ++i) pk.pack(std::string("hmac-sha256"));
            })).error(),
            make_error_code(errc::handshake_failed));
}

TEST(Negotiation, EachProtectionHasItsOwnKeys) {
  const auto secret = bytes(32, 5);
  digest t{};
  t.fill(3);
  const auto h = derive_session_keys(secret, t, record_protection::hmac_sha256);
  const auto g = derive_session_keys(secret, t, record_protection::aes_256_gcm);
  const auto c = derive_session_keys(secret, t, record_protection::chacha20_poly1305);
  EXPECT_EQ(h.initiator_to_acceptor, derive_session_keys(secret, t).initiator_to_acceptor);
  EXPECT_NE(h.initiator_to_acceptor, g.initiator_to_acceptor);
  EXPECT_NE(g.initiator_to_acceptor, c.initiator_to_acceptor);
  EXPECT_NE(g.initiator_to_acceptor, g.acceptor_to_initiator);
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
