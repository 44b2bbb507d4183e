// Tests for connections: multiplexed calls over the in-memory transport and over real TCP.
#include "rpc/connection.hpp"

#include <gtest/gtest.h>

#include "net/memory_transport.hpp"
#include "rpc/listener.hpp"
#include "rpc/runtime.hpp"

namespace tether::rpc {
namespace {

// Answers every request with its own meta as the body, after `delay_for` requests whose id is odd.
class EchoHandler final : public RequestHandler {
 public:
  void on_request(const std::shared_ptr<Connection>& connection, wire::Frame&& frame) override {
    wire::OutFrame reply;
    reply.header.type = wire::MessageType::reply;
    reply.header.request_id = frame.header.request_id;
    auto* p = reinterpret_cast<const std::byte*>(frame.meta.data());
    reply.payload.assign(p, p + frame.meta.size());
    connection->send(std::move(reply));
  }
};

wire::OutFrame request(std::string meta) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  frame.meta = std::move(meta);
  return frame;
}

std::string body_text(const wire::Frame& frame) {
  auto span = frame.body_span();
  return {reinterpret_cast<const char*>(span.data()), span.size()};
}

struct Pair {
  std::shared_ptr<Connection> client, server;
};

// Never answers: for tests of deadlines and disconnects.
class SilentHandler final : public RequestHandler {
  void on_request(const std::shared_ptr<Connection>&, wire::Frame&&) override {}
};

Pair connect_in_memory(Runtime& runtime, std::shared_ptr<RequestHandler> server_handler = std::make_shared<EchoHandler>()) {
  auto [a, b] = net::make_memory_pipe(runtime.executor());
  Pair pair;
  pair.server = Connection::create(std::move(b), Connection::Role::server, {}, {}, std::move(server_handler));
  pair.client = Connection::create(std::move(a), Connection::Role::client, {}, {}, nullptr);
  std::promise<Result<Negotiated>> done;
  pair.server->start([](const Result<Negotiated>&) {});
  pair.client->start([&](const Result<Negotiated>& r) { done.set_value(r); });
  auto negotiated = done.get_future().get();
  EXPECT_TRUE(negotiated.ok()) << (negotiated.ok() ? "" : negotiated.error().message);
  return pair;
}

// Many calls in flight on one connection each get their own reply, matched by request id.
TEST(Connection, MultiplexesManyCallsInFlight) {
  Runtime runtime(2);
  auto pair = connect_in_memory(runtime);
  std::vector<std::shared_ptr<WaitingSink>> sinks;
  for (int i = 0; i < 500; ++i) {
    sinks.push_back(std::make_shared<WaitingSink>());
    ASSERT_TRUE(pair.client->call(request("call " + std::to_string(i)), sinks.back()).ok());
  }
  for (int i = 0; i < 500; ++i) {
    auto outcome = sinks[i]->wait(Clock::now() + std::chrono::seconds(10));
    ASSERT_TRUE(outcome && outcome->ok());
    EXPECT_EQ(body_text(outcome->value()), "call " + std::to_string(i));
  }
  pair.client->close("done");
  runtime.stop();
}

// A call with a deadline that the peer never answers fails with `timeout`.
TEST(Connection, DeadlineFailsAnUnansweredCall) {
  Runtime runtime(1);
  auto [client, server] = connect_in_memory(runtime, std::make_shared<SilentHandler>());
  auto sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE(client->call(request("x"), sink, Clock::now() + std::chrono::milliseconds(50)).ok());
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->ok());
  EXPECT_EQ(outcome->error().kind, ErrorKind::timeout);
  EXPECT_EQ(client->pending_calls(), 0u);
  client->close("done");
  runtime.stop();
}

// When the peer goes away, every pending call fails as disconnected instead of hanging.
TEST(Connection, PendingCallsFailWhenThePeerCloses) {
  Runtime runtime(1);
  auto [client, server] = connect_in_memory(runtime, std::make_shared<SilentHandler>());
  auto sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE(client->call(request("x"), sink).ok());
  server->close("going away");
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->ok());
  EXPECT_EQ(outcome->error().kind, ErrorKind::disconnected);
  runtime.stop();
}

// A write that fails closes the connection for new calls at once, before the io loop has handled
// the failure: a caller that retries does not write to the dead socket again, and a proxy that
// checks is_open() reconnects instead.
TEST(Connection, AFailedWriteClosesTheConnectionForNewCallsAtOnce) {
  Runtime runtime(1);
  auto [client, server] = connect_in_memory(runtime, std::make_shared<SilentHandler>());
  std::promise<void> blocked, release;
  auto released = release.get_future();
  asio::post(runtime.executor(), [&] {
    blocked.set_value();
    released.wait();  // the only io thread is busy: the client reads nothing meanwhile
  });
  blocked.get_future().wait();
  server->close("going away");  // closes the pipe under the client, which has not read that yet
  auto first = client->call(request("x"), std::make_shared<WaitingSink>());
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().kind, ErrorKind::disconnected);
  EXPECT_FALSE(client->is_open());
  auto second = client->call(request("y"), std::make_shared<WaitingSink>());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("connection is closed"), std::string::npos) << second.error().message;
  EXPECT_EQ(client->pending_calls(), 0u);
  release.set_value();
  runtime.stop();
}

// A wrong secret stops the connection in the handshake: nothing can be called.
TEST(Connection, WrongSecretCannotCall) {
  Runtime runtime(1);
  auto listener = Listener::listen(runtime, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""},
                                   AuthConfig{"right", false, false}, {}, std::make_shared<EchoHandler>());
  ASSERT_TRUE(listener.ok());
  auto connection = connect(runtime, (*listener)->endpoint(), AuthConfig{"wrong", false, false}, {}, nullptr,
                            std::chrono::seconds(10));
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.error().kind, ErrorKind::denied);
  (*listener)->close();
  runtime.stop();
}

// Real TCP on loopback: the same calls work end to end, and a 20 MiB payload arrives intact.
TEST(Connection, CallsOverRealTcp) {
  Runtime runtime(2);
  auto listener = Listener::listen(runtime, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""},
                                   AuthConfig{"s", false, false}, {}, std::make_shared<EchoHandler>());
  ASSERT_TRUE(listener.ok());
  auto connection = connect(runtime, (*listener)->endpoint(), AuthConfig{"s", false, false}, {}, nullptr,
                            std::chrono::seconds(10));
  ASSERT_TRUE(connection.ok()) << connection.error().message;
  std::string big(20 << 20, 'z');
  auto sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE((*connection)->call(request(std::string("o\0m", 3)), sink).ok());
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outcome && outcome->ok());
  EXPECT_EQ(body_text(outcome->value()), std::string("o\0m", 3));
  wire::OutFrame large = request("big");
  large.payload.assign(reinterpret_cast<const std::byte*>(big.data()), reinterpret_cast<const std::byte*>(big.data()) + big.size());
  auto large_sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE((*connection)->call(std::move(large), large_sink).ok());
  auto large_outcome = large_sink->wait(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(large_outcome && large_outcome->ok());
  EXPECT_EQ(body_text(large_outcome->value()), "big");
  (*connection)->close("done");
  (*listener)->close();
  runtime.stop();
}

}  // namespace
}  // namespace tether::rpc

namespace tether::rpc {
namespace {

ConnectionOptions quick_heartbeat(std::chrono::milliseconds heartbeat, std::chrono::milliseconds idle) {
  ConnectionOptions options;
  options.heartbeat = heartbeat;
  options.idle_timeout = idle;
  return options;
}

std::pair<std::shared_ptr<Connection>, std::shared_ptr<Connection>> connect_with(Runtime& runtime, ConnectionOptions client_options,
                                                                                 ConnectionOptions server_options) {
  auto [a, b] = net::make_memory_pipe(runtime.executor());
  auto server = Connection::create(std::move(b), Connection::Role::server, {}, server_options, std::make_shared<EchoHandler>());
  auto client = Connection::create(std::move(a), Connection::Role::client, {}, client_options, nullptr);
  std::promise<void> ready;
  server->start([](const Result<Negotiated>&) {});
  client->start([&](const Result<Negotiated>&) { ready.set_value(); });
  ready.get_future().wait();
  return {client, server};
}

// Heartbeats keep a connection with no calls alive for many idle timeouts.
TEST(Connection, HeartbeatsKeepAnIdleConnectionOpen) {
  Runtime runtime(2);
  auto options = quick_heartbeat(std::chrono::milliseconds(20), std::chrono::milliseconds(150));
  auto [client, server] = connect_with(runtime, options, options);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_TRUE(client->is_open());
  EXPECT_TRUE(server->is_open());
  auto sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE(client->call(request(std::string("o\0m", 3)), sink).ok());
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outcome && outcome->ok());
  client->close("done");
  runtime.stop();
}

// A peer that stops reading (so answers nothing) is dropped after the idle timeout, and the call
// waiting on it fails as disconnected instead of hanging.
TEST(Connection, IdleTimeoutDropsASilentPeer) {
  Runtime runtime(2);
  auto [client, server] = connect_with(runtime, quick_heartbeat(std::chrono::milliseconds(20), std::chrono::milliseconds(200)),
                                       quick_heartbeat(std::chrono::hours(1), std::chrono::hours(1)));
  server->adjust_backlog(1000, 10);  // the server stops reading after its current read
  auto sink = std::make_shared<WaitingSink>();
  ASSERT_TRUE(client->call(request(std::string("o\0m", 3)), sink).ok());
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(20));
  ASSERT_TRUE(outcome.has_value());
  if (outcome->ok()) {
    // The request was read before the pause took hold; the next one is not answered.
    sink = std::make_shared<WaitingSink>();
    ASSERT_TRUE(client->call(request(std::string("o\0m", 3)), sink).ok());
    outcome = sink->wait(Clock::now() + std::chrono::seconds(20));
    ASSERT_TRUE(outcome.has_value());
  }
  ASSERT_FALSE(outcome->ok());
  EXPECT_EQ(outcome->error().kind, ErrorKind::disconnected);
  EXPECT_NE(outcome->error().message.find("idle"), std::string::npos) << outcome->error().message;
  server->close("done");
  runtime.stop();
}

}  // namespace
}  // namespace tether::rpc
