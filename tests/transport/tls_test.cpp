// TLS (and mutual TLS) with certificates generated at test time through the OpenSSL C API.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <cstdio>

#include "test_support.hpp"

namespace otpp::transport {
namespace {

using namespace test;

struct key_cert {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  key_cert() = default;
  key_cert(const key_cert&) = delete;
  key_cert& operator=(const key_cert&) = delete;
  ~key_cert() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(ext, nullptr);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// Self-signed CA when issuer is null, else a leaf for localhost/127.0.0.1 signed by issuer.
void make_cert(key_cert& out, const char* cn, const key_cert* issuer) {
  out.key = EVP_EC_gen("P-256");
  ASSERT_NE(out.key, nullptr);
  out.cert = X509_new();
  X509_set_version(out.cert, 2);
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(out.cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(out.cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(out.cert), 3600L * 24);
  X509_set_pubkey(out.cert, out.key);
  X509_NAME* name = X509_get_subject_name(out.cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->cert : out.cert;
  X509_set_issuer_name(out.cert, X509_get_subject_name(issuer_cert));
  if (!issuer) {
    add_ext(out.cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(out.cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(out.cert, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(out.cert, issuer_cert, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  }
  ASSERT_GT(X509_sign(out.cert, issuer ? issuer->key : out.key, EVP_sha256()), 0);
}

void write_pem(const std::filesystem::path& p, const key_cert& kc, bool key) {
  FILE* f = std::fopen(p.c_str(), "w");
  ASSERT_NE(f, nullptr);
  if (key)
    PEM_write_PrivateKey(f, kc.key, nullptr, nullptr, 0, nullptr, nullptr);
  else
    PEM_write_X509(f, kc.cert);
  std::fclose(f);
}

// Two independent CAs, each with one leaf.
struct pki {
  temp_dir dir;
  key_cert ca1, ca2, leaf1, leaf2;
  pki() {
    make_cert(ca1, "otpp test CA 1", nullptr);
    make_cert(ca2, "otpp test CA 2", nullptr);
    make_cert(leaf1, "node signed by CA 1", &ca1);
    make_cert(leaf2, "node signed by CA 2", &ca2);
    write_pem(path("ca1.pem"), ca1, false);
    write_pem(path("ca2.pem"), ca2, false);
    write_pem(path("leaf1.pem"), leaf1, false);
    write_pem(path("leaf1.key"), leaf1, true);
    write_pem(path("leaf2.pem"), leaf2, false);
    write_pem(path("leaf2.key"), leaf2, true);
  }
  std::string path(const char* f) const { return (dir.path / f).string(); }
  // A config presenting leaf N and trusting CA M.
  config node(std::string id, int leaf, int ca, bool mutual) const {
    config c = test_config(std::move(id));
    c.tls.enabled = true;
    c.tls.certificate_file = path(leaf == 1 ? "leaf1.pem" : "leaf2.pem");
    c.tls.private_key_file = path(leaf == 1 ? "leaf1.key" : "leaf2.key");
    c.tls.ca_file = path(ca == 1 ? "ca1.pem" : "ca2.pem");
    c.tls.mutual = mutual;
    return c;
  }
};

TEST(Tls, RoundTripWithVerifiedCertificates) {
  pki p;
  auto s = p.node("server", 1, 1, false);
  auto c = p.node("client", 1, 1, false);
  c.tls.server_name = "localhost";
  endpoint_pair t(s, c);
  auto r = connect_sync(*t.client, t.addr, "server");
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_TRUE((*r)->uses_tls());
  std::vector<std::uint8_t> big(100000, 0x5a);
  ASSERT_TRUE((*r)->send(0x20, big));
  ASSERT_TRUE((*r)->send(0x20, {}));
  ASSERT_TRUE(t.es.wait([](recorder& x) { return x.frames.size() == 2; }));
  EXPECT_EQ(t.es.locked_frames()[0].payload, big);
  auto back = t.server->find("client");
  ASSERT_TRUE(back);
  const std::uint8_t one = 1;
  ASSERT_TRUE(back->send(0x21, bytes_view(&one, 1)));
  ASSERT_TRUE(t.ec.wait([](recorder& x) { return x.frames.size() == 1; }));
}

TEST(Tls, ServerCertificateFromUntrustedCaRefused) {
  pki p;
  auto s = p.node("server", 2, 2, false);  // leaf of CA 2
  auto c = p.node("client", 1, 1, false);  // trusts CA 1 only
  endpoint_pair t(s, c);
  auto r = connect_sync(*t.client, t.addr, "server");
  EXPECT_EQ(r.error(), make_error_code(errc::tls_error)) << r.fail().message();
  EXPECT_TRUE(t.es.locked_ups().empty());
}

TEST(Tls, WrongHostNameRefused) {
  pki p;
  auto s = p.node("server", 1, 1, false);
  auto c = p.node("client", 1, 1, false);
  c.tls.server_name = "not-this-host.example";
  endpoint_pair t(s, c);
  auto r = connect_sync(*t.client, t.addr, "server");
  EXPECT_EQ(r.error(), make_error_code(errc::tls_error)) << r.fail().message();
}

TEST(Tls, MutualTlsRefusesClientFromUntrustedCa) {
  pki p;
  auto s = p.node("server", 1, 1, true);  // requires a client certificate from CA 1
  auto good = p.node("client", 1, 1, false);
  {
    endpoint_pair t(s, good);
    auto r = connect_sync(*t.client, t.addr, "server");
    ASSERT_TRUE(r) << r.fail().message();
  }
  auto bad = p.node("client", 2, 1, false);  // trusts the server, presents a CA 2 leaf
  endpoint_pair t(s, bad);
  auto r = connect_sync(*t.client, t.addr, "server");
  EXPECT_FALSE(r);
  ASSERT_TRUE(t.es.wait([](recorder& x) { return !x.rejected.empty(); }));
  EXPECT_EQ(t.es.locked_rejected()[0].code, make_error_code(errc::tls_error));
  EXPECT_TRUE(t.es.locked_ups().empty());
}

TEST(Tls, PlainClientCannotTalkToTlsServer) {
  pki p;
  auto s = p.node("server", 1, 1, false);
  auto c = test_config("client");
  c.handshake_timeout = std::chrono::milliseconds(2000);
  endpoint_pair t(s, c);
  auto r = connect_sync(*t.client, t.addr, "server");
  EXPECT_FALSE(r);
  EXPECT_TRUE(t.es.wait([](recorder& x) { return !x.rejected.empty(); }));
  EXPECT_EQ(t.es.locked_rejected()[0].code, make_error_code(errc::tls_error));
}

TEST(Tls, MissingFilesAreAnError) {
  asio::io_context io;
  auto c = test_config("x");
  c.tls.enabled = true;
  c.tls.certificate_file = "/nonexistent/cert.pem";
  c.tls.private_key_file = "/nonexistent/key.pem";
  c.tls.server_name = "localhost";
  EXPECT_EQ(endpoint::create(io, c, {}).error(), make_error_code(errc::tls_error));
}

TEST(Tls, VerifyingWithoutServerNameOrPinnedCaRefused) {
  pki p;
  asio::io_context io;
  auto c = p.node("client", 1, 1, false);
  c.tls.ca_file.clear();  // system trust store only, and no name to check
  auto r = endpoint::create(io, c, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(errc::tls_error));
  EXPECT_NE(r.fail().reason.find("server_name"), std::string::npos) << r.fail().message();
  c.tls.server_name = "localhost";  // a name to check against the system store: accepted
  EXPECT_TRUE(endpoint::create(io, c, {}));
  c.tls.server_name.clear();
  c.tls.verify_peer = false;  // explicitly off: accepted, with a warning
  EXPECT_TRUE(endpoint::create(io, c, {}));
  c.tls.mutual = true;  // client certificates checked against the system store only
  EXPECT_EQ(endpoint::create(io, c, {}).error(), make_error_code(errc::tls_error));
}

// A relay that terminates TLS towards the client (presenting its own certificate) and opens
// its own TLS session to the server, copying the plaintext both ways: what a man in the
// middle does when the client does not authenticate the server. Blocking OpenSSL in one
// thread; every wait is bounded.
class tls_relay {
 public:
  tls_relay(std::uint16_t server_port, const std::string& cert, const std::string& key)
      : server_port_(server_port) {
    listener_ = std::make_unique<raw_listener>();
    sctx_ = SSL_CTX_new(TLS_server_method());
    cctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_use_certificate_chain_file(sctx_, cert.c_str());
    SSL_CTX_use_PrivateKey_file(sctx_, key.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_set_verify(cctx_, SSL_VERIFY_NONE, nullptr);
    thread_ = std::thread([this] { run(); });
  }
  ~tls_relay() {
    stop_ = true;
    thread_.join();
    SSL_CTX_free(sctx_);
    SSL_CTX_free(cctx_);
  }
  std::uint16_t port() const { return listener_->port(); }
  bool relayed_anything() const { return relayed_.load(); }

 private:
  static void set_timeouts(int fd) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  // Copies what `from` has to `to`; false when `from` is closed or broken.
  bool pump(SSL* from, SSL* to) {
    char buf[16384];
    for (;;) {
      const int n = SSL_read(from, buf, sizeof buf);
      if (n <= 0) {
        const int e = SSL_get_error(from, n);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
      }
      relayed_ = true;
      for (int off = 0; off < n;) {
        const int w = SSL_write(to, buf + off, n - off);
        if (w <= 0) {
          const int e = SSL_get_error(to, w);
          if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) return false;
          std::this_thread::sleep_for(1ms);
          continue;
        }
        off += w;
      }
    }
  }
  void run() {
    raw_peer down = listener_->accept_one(10s);
    if (!down.valid()) return;
    raw_peer up = raw_peer::connect_to(server_port_);
    if (!up.valid()) return;
    set_timeouts(down.fd());
    set_timeouts(up.fd());
    SSL* a = SSL_new(sctx_);
    SSL* b = SSL_new(cctx_);
    SSL_set_fd(a, down.fd());
    SSL_set_fd(b, up.fd());
    if (SSL_accept(a) == 1 && SSL_connect(b) == 1) {
      ::fcntl(down.fd(), F_SETFL, ::fcntl(down.fd(), F_GETFL) | O_NONBLOCK);
      ::fcntl(up.fd(), F_SETFL, ::fcntl(up.fd(), F_GETFL) | O_NONBLOCK);
      const auto deadline = std::chrono::steady_clock::now() + wait_limit;
      while (!stop_ && std::chrono::steady_clock::now() < deadline) {
        if (!pump(a, b) || !pump(b, a)) break;
        pollfd p[2] = {{down.fd(), POLLIN, 0}, {up.fd(), POLLIN, 0}};
        ::poll(p, 2, 50);
      }
    }
    SSL_free(a);
    SSL_free(b);
  }

  std::uint16_t server_port_;
  std::unique_ptr<raw_listener> listener_;
  SSL_CTX* sctx_ = nullptr;
  SSL_CTX* cctx_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<bool> relayed_{false};
  std::thread thread_;
};

TEST(Tls, InnerHandshakeIsBoundToTheTlsChannel) {
  pki p;
  auto s = p.node("server", 1, 1, false);
  // A client that (wrongly) does not authenticate the server: the relay's certificate from
  // CA 2 passes. The shared secret must still keep the relay out.
  auto c = p.node("client", 1, 1, false);
  c.tls.verify_peer = false;
  endpoint_pair t(s, c);
  tls_relay relay(t.addr.port(), p.path("leaf2.pem"), p.path("leaf2.key"));
  auto r = connect_sync(*t.client, loopback(relay.port()), "server");
  ASSERT_FALSE(r) << "the handshake went through a TLS relay";
  EXPECT_EQ(r.error(), make_error_code(errc::not_authorised)) << r.fail().message();
  EXPECT_TRUE(relay.relayed_anything());
  ASSERT_TRUE(t.es.wait([](recorder& x) { return !x.rejected.empty(); }));
  EXPECT_EQ(t.es.locked_rejected()[0].code, make_error_code(errc::not_authorised));
  EXPECT_TRUE(t.es.locked_ups().empty());
  // Directly, without the relay, the same client gets through.
  auto direct = connect_sync(*t.client, t.addr, "server");
  EXPECT_TRUE(direct) << direct.fail().message();
}

}  // namespace
}  // namespace otpp::transport
