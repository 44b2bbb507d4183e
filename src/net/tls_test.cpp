// TLS links over real TCP: certificates made by write_certificates, verification both ways,
// identities from certificates and named secrets, and the refusals a wrong peer gets.
#include "net/tls.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "net/certs.hpp"
#include "rpc/listener.hpp"
#include "rpc/runtime.hpp"

namespace tether::rpc {
namespace {

// Replies with the names the server knows the caller by, joined with ','.
class WhoAmI final : public RequestHandler {
 public:
  void on_request(const std::shared_ptr<Connection>& connection, wire::Frame&& frame) override {
    wire::OutFrame reply;
    reply.header.type = wire::MessageType::reply;
    reply.header.request_id = frame.header.request_id;
    std::string names;
    for (const auto& name : connection->negotiated().names()) names += (names.empty() ? "" : ",") + name;
    names += "|" + std::to_string(frame.body_span().size());
    auto* p = reinterpret_cast<const std::byte*>(names.data());
    reply.payload.assign(p, p + names.size());
    connection->send(std::move(reply));
  }
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tether-tls-test-" + std::to_string(std::random_device{}()));
    ASSERT_TRUE(net::write_certificates(dir_, {{"server", {"127.0.0.1", "localhost"}},
                                               {"alice", {}},
                                               {"elsewhere", {"10.9.8.7"}}}).ok());
    other_ = dir_ / "other";
    ASSERT_TRUE(net::write_certificates(other_, {{"mallory", {"127.0.0.1"}}}).ok());
  }
  void TearDown() override {
    runtime_.stop();
    std::filesystem::remove_all(dir_);
  }

  std::shared_ptr<net::TlsContext> tls(const std::filesystem::path& dir, const std::string& name, bool mutual = false,
                                       const std::filesystem::path& ca_dir = {}) {
    net::TlsConfig config;
    if (!name.empty()) {
      config.cert_file = dir / (name + ".pem");
      config.key_file = dir / (name + ".key");
    }
    config.ca_file = (ca_dir.empty() ? dir : ca_dir) / "ca.pem";
    config.require_client_certificate = mutual;
    auto context = net::TlsContext::create(config);
    EXPECT_TRUE(context.ok()) << context.error().message;
    return context.ok() ? *context : nullptr;
  }

  std::unique_ptr<Listener> serve(AuthConfig auth) {
    auto listener = Listener::listen(runtime_, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""},
                                     std::move(auth), {}, std::make_shared<WhoAmI>());
    EXPECT_TRUE(listener.ok()) << listener.error().message;
    return listener.ok() ? std::move(*listener) : nullptr;
  }

  Result<std::shared_ptr<Connection>> dial(const net::Endpoint& endpoint, AuthConfig auth) {
    return connect(runtime_, endpoint, std::move(auth), {}, nullptr, std::chrono::seconds(10));
  }

  // One call; returns the reply body.
  std::string ask(Connection& connection, std::size_t payload = 0) {
    wire::OutFrame frame;
    frame.header.type = wire::MessageType::request;
    frame.meta = std::string("o\0m", 3);
    frame.payload.assign(payload, std::byte{7});
    auto sink = std::make_shared<WaitingSink>();
    EXPECT_TRUE(connection.call(std::move(frame), sink).ok());
    auto outcome = sink->wait(Clock::now() + std::chrono::seconds(30));
    if (!outcome || !outcome->ok()) return "(failed)";
    auto body = outcome->value().body_span();
    return {reinterpret_cast<const char*>(body.data()), body.size()};
  }

  Runtime runtime_{2};
  std::filesystem::path dir_, other_;
};

TEST_F(TlsTest, CallsRunOverTlsAndTheUriSaysSo) {
  auto listener = serve(AuthConfig{.tls = tls(dir_, "server")});
  ASSERT_TRUE(listener);
  EXPECT_TRUE(listener->endpoint().tls);
  EXPECT_EQ(net::format_uri(listener->endpoint(), "x").rfind("tethers://", 0), 0u);
  auto connection = dial(listener->endpoint(), AuthConfig{.tls = tls(dir_, "")});
  ASSERT_TRUE(connection.ok()) << connection.error().message;
  EXPECT_EQ(ask(**connection), "|0");  // no client certificate, no secret: no names
  EXPECT_EQ(ask(**connection, 3 << 20), "|3145728");  // a frame larger than many TLS records
  EXPECT_TRUE((*connection)->negotiated().authenticated);  // the server's certificate verified
  EXPECT_EQ((*connection)->negotiated().certificate_subject, "CN=server,O=tether");
  (*connection)->close("done");
}

TEST_F(TlsTest, MutualTlsNamesTheClientByItsCertificate) {
  auto listener = serve(AuthConfig{.tls = tls(dir_, "server", true)});
  ASSERT_TRUE(listener);
  auto alice = dial(listener->endpoint(), AuthConfig{.tls = tls(dir_, "alice")});
  ASSERT_TRUE(alice.ok()) << alice.error().message;
  EXPECT_EQ(ask(**alice), "alice|0");
  auto anonymous = dial(listener->endpoint(), AuthConfig{.tls = tls(dir_, "")});
  EXPECT_FALSE(anonymous.ok() && ask(**anonymous) != "(failed)");  // no certificate: refused
}

TEST_F(TlsTest, AServerSignedByAnotherCaIsRefused) {
  auto listener = serve(AuthConfig{.tls = tls(other_, "mallory")});
  ASSERT_TRUE(listener);
  auto connection = dial(listener->endpoint(), AuthConfig{.tls = tls(dir_, "")});
  ASSERT_FALSE(connection.ok());
  EXPECT_NE(connection.error().message.find("certificate verify failed"), std::string::npos) << connection.error().message;
}

TEST_F(TlsTest, ACertificateForAnotherHostIsRefused) {
  auto listener = serve(AuthConfig{.tls = tls(dir_, "elsewhere")});
  ASSERT_TRUE(listener);
  EXPECT_FALSE(dial(listener->endpoint(), AuthConfig{.tls = tls(dir_, "")}).ok());
}

TEST_F(TlsTest, PlainTextAndTlsDoNotMix) {
  auto tls_listener = serve(AuthConfig{.tls = tls(dir_, "server")});
  auto plain_listener = serve(AuthConfig{});
  ASSERT_TRUE(tls_listener && plain_listener);
  auto plain_endpoint = tls_listener->endpoint();
  plain_endpoint.tls = false;
  EXPECT_FALSE(dial(plain_endpoint, AuthConfig{}).ok());  // plain text to a TLS server
  EXPECT_FALSE(dial(plain_listener->endpoint(), AuthConfig{.tls = tls(dir_, "")}).ok());  // TLS to a plain server
  // The TLS server goes on serving.
  auto good = dial(tls_listener->endpoint(), AuthConfig{.tls = tls(dir_, "")});
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(ask(**good), "|0");
}

TEST_F(TlsTest, MissingOrMismatchedFilesFailAtStart) {
  EXPECT_FALSE(net::TlsContext::create({(dir_ / "nope.pem").string(), (dir_ / "server.key").string(), ""}).ok());
  auto mismatched = net::TlsContext::create({(dir_ / "server.pem").string(), (dir_ / "alice.key").string(), ""});
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(mismatched.error().message.find("does not match"), std::string::npos) << mismatched.error().message;
  EXPECT_FALSE(net::TlsContext::create({.cert_file = (dir_ / "server.pem").string()}).ok());  // no key
  EXPECT_EQ(std::filesystem::status(dir_ / "alice.key").permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
}

TEST(Identities, NamedSecretsNameTheCaller) {
  Runtime runtime(2);
  AuthConfig server_auth;
  server_auth.secret = "shared";
  server_auth.identities = {{"alice", "alice-secret"}, {"bob", "bob-secret"}};
  auto listener = Listener::listen(runtime, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""}, server_auth, {},
                                   std::make_shared<WhoAmI>());
  ASSERT_TRUE(listener.ok());
  auto dial = [&](std::string secret, std::string identity) {
    AuthConfig auth;
    auth.secret = std::move(secret);
    auth.identity = std::move(identity);
    return connect(runtime, (*listener)->endpoint(), auth, {}, nullptr, std::chrono::seconds(10));
  };
  auto ask = [](Connection& connection) {
    wire::OutFrame frame;
    frame.header.type = wire::MessageType::request;
    frame.meta = std::string("o\0m", 3);
    auto sink = std::make_shared<WaitingSink>();
    connection.call(std::move(frame), sink);
    auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
    auto body = outcome->value().body_span();
    return std::string(reinterpret_cast<const char*>(body.data()), body.size());
  };
  auto alice = dial("alice-secret", "alice");
  ASSERT_TRUE(alice.ok()) << alice.error().message;
  EXPECT_EQ(ask(**alice), "alice|0");
  auto shared = dial("shared", "");
  ASSERT_TRUE(shared.ok()) << shared.error().message;
  EXPECT_EQ(ask(**shared), "default|0");
  EXPECT_FALSE(dial("bob-secret", "alice").ok());  // another identity's secret
  EXPECT_FALSE(dial("x", "carol").ok());           // an unknown identity fails like a wrong secret
  auto refused = dial("x", "carol");
  EXPECT_EQ(refused.error().message, dial("wrong", "alice").error().message);
  (*listener)->close();
  runtime.stop();
}

}  // namespace
}  // namespace tether::rpc
