// Tests for the shared-secret proofs and the handshake state machine.
#include "rpc/auth.hpp"
#include "rpc/handshake.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace tether::rpc {
namespace {

// Drives a client and a server handshake against each other without any I/O.
struct Outcome {
  std::optional<Error> client_error, server_error;
  Negotiated client, server;
};

Outcome run(AuthConfig client_auth, AuthConfig server_auth) {
  Handshake client(Handshake::Role::client, client_auth, {}, std::chrono::milliseconds(1000));
  Handshake server(Handshake::Role::server, server_auth, {}, std::chrono::milliseconds(1000));
  Outcome outcome;
  auto to_frame = [](wire::OutFrame& out) {
    wire::Frame frame;
    frame.header = out.header;
    frame.body = std::make_shared<wire::Bytes>(out.payload.size());
    std::copy(out.payload.begin(), out.payload.end(), frame.body->data());
    return frame;
  };
  auto step = client.start();
  bool to_server = true;
  for (int round = 0; round < 6 && !step.send.empty(); ++round) {
    Handshake::Step next;
    for (auto& out : step.send) {
      next = to_server ? server.on_frame(to_frame(out)) : client.on_frame(to_frame(out));
      auto& error = to_server ? outcome.server_error : outcome.client_error;
      if (next.failure) error = next.failure;
    }
    if (next.failure && !next.send.empty()) {
      // the failing side's ERROR frame reaches the other side
      auto reply = to_server ? client.on_frame(to_frame(next.send[0])) : server.on_frame(to_frame(next.send[0]));
      auto& error = to_server ? outcome.client_error : outcome.server_error;
      if (reply.failure) error = reply.failure;
      break;
    }
    step = std::move(next);
    to_server = !to_server;
  }
  outcome.client = client.negotiated();
  outcome.server = server.negotiated();
  return outcome;
}

// Proofs differ when any input differs, and compare equal only to themselves.
TEST(Auth, ProofDependsOnSecretAndNonces) {
  auto a = random_nonce(), b = random_nonce();
  EXPECT_NE(a, b);
  auto proof = make_proof("secret", kClientLabel, a, b);
  EXPECT_TRUE(proofs_equal(proof, make_proof("secret", kClientLabel, a, b)));
  EXPECT_FALSE(proofs_equal(proof, make_proof("Secret", kClientLabel, a, b)));
  EXPECT_FALSE(proofs_equal(proof, make_proof("secret", kServerLabel, a, b)));
  EXPECT_FALSE(proofs_equal(proof, make_proof("secret", kClientLabel, b, a)));
}

// Without secrets the handshake completes unauthenticated and pickle stays off.
TEST(Handshake, CompletesWithoutSecrets) {
  auto outcome = run(AuthConfig{"", false, true}, AuthConfig{"", true, false});
  EXPECT_FALSE(outcome.client_error);
  EXPECT_FALSE(outcome.server_error);
  EXPECT_FALSE(outcome.client.authenticated);
  EXPECT_FALSE(outcome.client.pickle_allowed) << "pickle needs an authenticated connection";
}

// Matching secrets authenticate both ways, and then pickle may be negotiated.
TEST(Handshake, MatchingSecretsAuthenticateAndAllowPickle) {
  auto outcome = run(AuthConfig{"s3cret", false, true}, AuthConfig{"s3cret", true, false});
  EXPECT_FALSE(outcome.client_error);
  EXPECT_FALSE(outcome.server_error);
  EXPECT_TRUE(outcome.client.authenticated);
  EXPECT_TRUE(outcome.server.authenticated);
  EXPECT_TRUE(outcome.client.pickle_allowed);
}

// A wrong secret is refused with `denied` on both sides.
TEST(Handshake, WrongSecretIsDenied) {
  auto outcome = run(AuthConfig{"wrong", false, false}, AuthConfig{"right", false, false});
  ASSERT_TRUE(outcome.server_error);
  EXPECT_EQ(outcome.server_error->kind, ErrorKind::denied);
  ASSERT_TRUE(outcome.client_error);
  EXPECT_EQ(outcome.client_error->kind, ErrorKind::denied);
}

// A client without a secret cannot reach a server that requires one.
TEST(Handshake, MissingSecretIsDenied) {
  auto outcome = run(AuthConfig{"", false, false}, AuthConfig{"right", false, false});
  ASSERT_TRUE(outcome.client_error);
  EXPECT_EQ(outcome.client_error->kind, ErrorKind::denied);
}

}  // namespace
}  // namespace tether::rpc

namespace tether::rpc {
namespace {

// Found by the frame fuzzer: a HELLO whose few bytes declare a 4-billion-element array must be
// refused as bad_request without allocating the array.
TEST(Handshake, HelloDeclaringAHugeArrayIsRefusedCheaply) {
  Handshake server(Handshake::Role::server, AuthConfig{}, {}, std::chrono::milliseconds(1000));
  const unsigned char body[] = {0x81, 0xa8, 'v', 'e', 'r', 's', 'i', 'o', 'n', 's', 0xdd, 0xff, 0xff, 0xff, 0xff};
  wire::Frame hello;
  hello.header.type = wire::MessageType::hello;
  hello.header.encoding = wire::Encoding::msgpack;
  hello.body = std::make_shared<wire::Bytes>(sizeof body);
  std::memcpy(hello.body->data(), body, sizeof body);
  auto step = server.on_frame(hello);
  ASSERT_TRUE(step.failure.has_value());
  EXPECT_EQ(step.failure->kind, ErrorKind::bad_request);
}

}  // namespace
}  // namespace tether::rpc
