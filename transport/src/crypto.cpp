// The low-level SHA-256 functions are deprecated in OpenSSL 3 but remain the fastest way to
// reuse a keyed HMAC state by value (see frame_mac in crypto.hpp).
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "otpp/transport/crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace otpp::transport {

namespace {
EVP_MAC* hmac_algorithm() {
  // Fetched once; lives for the process (a fetched algorithm is reference counted by OpenSSL).
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) throw std::runtime_error("otpp transport: EVP_MAC_fetch(HMAC) failed");
  return mac;
}
}  // namespace

hmac_sha256::~hmac_sha256() {
  EVP_MAC_CTX_free(ctx_);
}

hmac_sha256& hmac_sha256::operator=(hmac_sha256&& other) noexcept {
  if (this != &other) {
    EVP_MAC_CTX_free(ctx_);
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

void hmac_sha256::set_key(bytes_view key) {
  if (ctx_ == nullptr) {
    ctx_ = EVP_MAC_CTX_new(hmac_algorithm());
    if (ctx_ == nullptr) throw std::runtime_error("otpp transport: EVP_MAC_CTX_new failed");
  }
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  static const unsigned char empty_key = 0;
  const unsigned char* k = key.empty() ? &empty_key : key.data();
  if (EVP_MAC_init(ctx_, k, key.size(), params) != 1)
    throw std::runtime_error("otpp transport: EVP_MAC_init failed");
}

void hmac_sha256::begin() {
  if (EVP_MAC_init(ctx_, nullptr, 0, nullptr) != 1)
    throw std::runtime_error("otpp transport: EVP_MAC_init (rekey-free) failed");
}

void hmac_sha256::update(bytes_view data) {
  if (!data.empty()) EVP_MAC_update(ctx_, data.data(), data.size());
}

digest hmac_sha256::finish() {
  digest out{};
  std::size_t len = 0;
  if (EVP_MAC_final(ctx_, out.data(), &len, out.size()) != 1 || len != out.size())
    throw std::runtime_error("otpp transport: EVP_MAC_final failed");
  return out;
}

digest hmac_sha256::compute(bytes_view key, std::initializer_list<bytes_view> parts) {
  hmac_sha256 h(key);
  for (auto p : parts) h.update(p);
  return h.finish();
}

static_assert(sizeof(SHA256_CTX) <= sizeof(std::array<std::uint64_t, 16>));

namespace {
SHA256_CTX* ctx_of(std::array<std::uint64_t, 16>& s) {
  return reinterpret_cast<SHA256_CTX*>(s.data());
}
}  // namespace

frame_mac::frame_mac(bytes_view key) {
  std::uint8_t k[64] = {};
  if (key.size() > 64) {
    const digest d = sha256({key});
    std::memcpy(k, d.data(), d.size());
  } else if (!key.empty()) {
    std::memcpy(k, key.data(), key.size());
  }
  std::uint8_t ipad[64], opad[64];
  for (int i = 0; i < 64; ++i) {
    ipad[i] = static_cast<std::uint8_t>(k[i] ^ 0x36);
    opad[i] = static_cast<std::uint8_t>(k[i] ^ 0x5c);
  }
  SHA256_Init(ctx_of(inner_));
  SHA256_Update(ctx_of(inner_), ipad, sizeof ipad);
  SHA256_Init(ctx_of(outer_));
  SHA256_Update(ctx_of(outer_), opad, sizeof opad);
  OPENSSL_cleanse(k, sizeof k);
  OPENSSL_cleanse(ipad, sizeof ipad);
  OPENSSL_cleanse(opad, sizeof opad);
}

void frame_mac::begin() noexcept {
  work_ = inner_;
}

void frame_mac::update(bytes_view data) noexcept {
  if (!data.empty()) SHA256_Update(ctx_of(work_), data.data(), data.size());
}

digest frame_mac::finish() noexcept {
  digest inner{};
  SHA256_Final(inner.data(), ctx_of(work_));
  work_ = outer_;
  SHA256_Update(ctx_of(work_), inner.data(), inner.size());
  digest out{};
  SHA256_Final(out.data(), ctx_of(work_));
  return out;
}

namespace {
EVP_CIPHER* cipher_of(aead::algorithm alg) noexcept {
  // Fetched once (explicit fetches avoid a provider lookup per initialisation); they live
  // for the process.
  static EVP_CIPHER* const gcm = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  static EVP_CIPHER* const chacha = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  return alg == aead::algorithm::aes_256_gcm ? gcm : chacha;
}

// EVP lengths are int: long messages go through in chunks.
constexpr std::size_t aead_chunk = std::size_t{1} << 30;
}  // namespace

bool aead::available(algorithm alg) noexcept {
  return cipher_of(alg) != nullptr;
}

aead::aead(algorithm alg, const session_key& key, bool sealing) {
  EVP_CIPHER* cipher = cipher_of(alg);
  if (cipher == nullptr)
    throw std::runtime_error(
        "otpp transport: this OpenSSL offers no " +
        std::string(alg == algorithm::aes_256_gcm ? "AES-256-GCM" : "ChaCha20-Poly1305"));
  ctx_ = EVP_CIPHER_CTX_new();
  if (ctx_ == nullptr) throw std::runtime_error("otpp transport: EVP_CIPHER_CTX_new failed");
  if (EVP_CipherInit_ex2(ctx_, cipher, key.data(), nullptr, sealing ? 1 : 0, nullptr) != 1) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = nullptr;
    throw std::runtime_error("otpp transport: AEAD key setup failed");
  }
}

aead::~aead() {
  EVP_CIPHER_CTX_free(ctx_);  // clears the key schedule
}

aead& aead::operator=(aead&& other) noexcept {
  if (this != &other) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

void aead::seal(const nonce_type& n, bytes_view aad, std::span<std::uint8_t> data,
                std::uint8_t* tag) noexcept {
  if (ctx_ == nullptr) {  // no key (a failed key update): a tag no peer accepts
    std::memset(tag, 0, tag_size);
    return;
  }
  int len = 0;
  // A failure here cannot be reported per record; it leaves a wrong tag, which the peer
  // rejects (bad_mac) and closes on. OpenSSL does not fail these calls on a valid context.
  EVP_CipherInit_ex2(ctx_, nullptr, nullptr, n.data(), -1, nullptr);
  if (!aad.empty()) EVP_CipherUpdate(ctx_, nullptr, &len, aad.data(), static_cast<int>(aad.size()));
  for (std::size_t off = 0; off < data.size(); off += aead_chunk) {
    const int chunk = static_cast<int>(std::min(aead_chunk, data.size() - off));
    EVP_CipherUpdate(ctx_, data.data() + off, &len, data.data() + off, chunk);
  }
  std::uint8_t none[16];
  EVP_CipherFinal_ex(ctx_, none, &len);
  EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_size), tag);
}

bool aead::open(const nonce_type& n, bytes_view aad, std::span<std::uint8_t> data,
                const std::uint8_t* tag) noexcept {
  if (ctx_ == nullptr) return false;
  int len = 0;
  if (EVP_CipherInit_ex2(ctx_, nullptr, nullptr, n.data(), -1, nullptr) != 1) return false;
  if (!aad.empty() &&
      EVP_CipherUpdate(ctx_, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
    return false;
  for (std::size_t off = 0; off < data.size(); off += aead_chunk) {
    const int chunk = static_cast<int>(std::min(aead_chunk, data.size() - off));
    if (EVP_CipherUpdate(ctx_, data.data() + off, &len, data.data() + off, chunk) != 1)
      return false;
  }
  std::uint8_t expected[tag_size];
  std::memcpy(expected, tag, tag_size);
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag_size), expected) != 1)
    return false;
  std::uint8_t none[16];
  return EVP_CipherFinal_ex(ctx_, none, &len) == 1;  // compares the tag in constant time
}

digest sha256(std::initializer_list<bytes_view> parts) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw std::runtime_error("otpp transport: SHA-256 init failed");
  }
  for (auto p : parts)
    if (!p.empty()) EVP_DigestUpdate(ctx, p.data(), p.size());
  digest out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, out.data(), &len);
  EVP_MD_CTX_free(ctx);
  return out;
}

void random_bytes(std::span<std::uint8_t> out) {
  if (out.empty()) return;
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1)
    throw std::runtime_error("otpp transport: RAND_bytes failed");
}

bool constant_time_equal(bytes_view a, bytes_view b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace otpp::transport
