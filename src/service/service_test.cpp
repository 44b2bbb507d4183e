// Tests for C++ services: routing, $meta.describe, argument errors and deferred replies.
#include "service/service.hpp"

#include <future>

#include <gtest/gtest.h>

#include "net/memory_transport.hpp"
#include "rpc/runtime.hpp"

namespace tether::service {
namespace {

using rpc::Clock;

struct Pair {
  std::shared_ptr<rpc::Connection> client, server;
};

Pair connect_in_memory(rpc::Runtime& runtime, std::shared_ptr<rpc::RequestHandler> handler) {
  auto [a, b] = net::make_memory_pipe(runtime.executor());
  Pair pair;
  pair.server = rpc::Connection::create(std::move(b), rpc::Connection::Role::server, {}, {}, std::move(handler));
  pair.client = rpc::Connection::create(std::move(a), rpc::Connection::Role::client, {}, {}, nullptr);
  std::promise<Result<rpc::Negotiated>> done;
  pair.server->start([](const Result<rpc::Negotiated>&) {});
  pair.client->start([&](const Result<rpc::Negotiated>& r) { done.set_value(r); });
  EXPECT_TRUE(done.get_future().get().ok());
  return pair;
}

// A request whose body is [args, kwargs] packed by `pack_args` (which packs the args array).
template <typename PackArgs>
wire::OutFrame request(std::string object, std::string method, PackArgs pack_args) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.meta = object + '\0' + method;
  wire::ByteSink sink{&frame.payload};
  wire::Packer packer(sink);
  packer.pack_array(2);
  pack_args(packer);
  packer.pack_nil();
  return frame;
}

Result<wire::Frame> call(rpc::Connection& client, wire::OutFrame&& frame) {
  auto sink = std::make_shared<rpc::WaitingSink>();
  auto id = client.call(std::move(frame), sink);
  if (!id) return id.error();
  auto outcome = sink->wait(Clock::now() + std::chrono::seconds(10));
  if (!outcome) return Error{ErrorKind::timeout, "no answer"};
  return std::move(*outcome);
}

msgpack::object_handle body_of(const wire::Frame& frame) {
  auto body = wire::unpack_body(frame.body_span());
  EXPECT_TRUE(body.ok());
  return std::move(*body);
}

// Adds two ints; keeps `later` calls to answer them afterwards.
struct Calculator : Service {
  std::vector<Call> later;
  Calculator() : Service("calc") {
    add_method("add", [](Call&& call) {
      auto a = as_u64(call.param(0, "a"), "calc.add: argument 'a'");
      auto b = as_u64(call.param(1, "b"), "calc.add: argument 'b'");
      if (!a) return call.fail(a.error());
      if (!b) return call.fail(b.error());
      ReplyBuilder reply;
      reply.packer().pack_uint64(*a + *b);
      call.reply(std::move(reply));
    });
    add_method("park", [this](Call&& call) { later.push_back(std::move(call)); });
    add_method("forget", [](Call&&) {});
  }
};

struct ServiceTest : ::testing::Test {
  rpc::Runtime runtime{1};
  Calculator calculator;
  std::shared_ptr<ServiceHost> host = std::make_shared<ServiceHost>();
  Pair pair;
  void SetUp() override {
    host->add(calculator);
    pair = connect_in_memory(runtime, host);
  }
  void TearDown() override {
    pair.client->close("done");
    runtime.stop();
  }
};

// A method gets its positional arguments and its reply reaches the caller.
TEST_F(ServiceTest, RoutesARequestToItsMethodAndReplies) {
  auto reply = call(*pair.client, request("calc", "add", [](wire::Packer& p) {
    p.pack_array(2);
    p.pack_uint64(2);
    p.pack_uint64(40);
  }));
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(reply->header.type, wire::MessageType::reply);
  EXPECT_EQ(body_of(*reply).get().as<std::uint64_t>(), 42u);
}

// A wrong argument type is answered with bad_request naming the method, the argument and the types.
TEST_F(ServiceTest, AWrongArgumentTypeGetsAClearError) {
  auto reply = call(*pair.client, request("calc", "add", [](wire::Packer& p) {
    p.pack_array(2);
    wire::pack_str(p, "two");
    p.pack_uint64(40);
  }));
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(reply->header.type, wire::MessageType::error);
  auto error = wire::unpack_error_body(reply->body_span());
  EXPECT_EQ(error.kind, ErrorKind::bad_request);
  EXPECT_EQ(error.message, "calc.add: argument 'a' must be a non-negative int, got str");
}

// Unknown objects, unknown methods and private names are refused as unimplemented.
TEST_F(ServiceTest, UnknownObjectsAndMethodsAreUnimplemented) {
  for (auto [object, method] : {std::pair{"nope", "add"}, {"calc", "mul"}, {"calc", "_secret"}}) {
    auto reply = call(*pair.client, request(object, method, [](wire::Packer& p) { p.pack_array(0); }));
    ASSERT_TRUE(reply.ok());
    ASSERT_EQ(reply->header.type, wire::MessageType::error);
    EXPECT_EQ(wire::unpack_error_body(reply->body_span()).kind, ErrorKind::unimplemented) << object << "." << method;
  }
}

// A body that is not [args, kwargs] is refused as bad_request and the connection goes on working.
TEST_F(ServiceTest, AMalformedBodyIsRefusedAndTheConnectionSurvives) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.meta = std::string("calc") + '\0' + "add";
  frame.payload = {std::byte{0x01}};
  auto reply = call(*pair.client, std::move(frame));
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(wire::unpack_error_body(reply->body_span()).kind, ErrorKind::bad_request);
  auto again = call(*pair.client, request("calc", "add", [](wire::Packer& p) {
    p.pack_array(2);
    p.pack_uint64(1);
    p.pack_uint64(1);
  }));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(body_of(*again).get().as<std::uint64_t>(), 2u);
}

// $meta.describe lists a service's methods, so a Python proxy can connect to it.
TEST_F(ServiceTest, DescribeListsTheMethods) {
  auto reply = call(*pair.client, request("$meta", "describe", [](wire::Packer& p) {
    p.pack_array(1);
    wire::pack_str(p, "calc");
  }));
  ASSERT_TRUE(reply.ok());
  auto described = body_of(*reply).get().as<std::vector<std::vector<std::string>>>();
  ASSERT_EQ(described.size(), 3u);
  EXPECT_EQ(described[0], (std::vector<std::string>{"add", "forget", "park"}));
}

// A call kept by the service is answered later; one dropped unanswered gets an error, not silence.
TEST_F(ServiceTest, DeferredAndDroppedCallsAreAnswered) {
  auto parked = std::make_shared<rpc::WaitingSink>();
  ASSERT_TRUE(pair.client->call(request("calc", "park", [](wire::Packer& p) { p.pack_array(0); }), parked).ok());
  auto dropped = call(*pair.client, request("calc", "forget", [](wire::Packer& p) { p.pack_array(0); }));
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(dropped->header.type, wire::MessageType::error);
  std::promise<void> answered;
  std::size_t parked_calls = 0;
  asio::post(runtime.executor(), [&] {
    parked_calls = calculator.later.size();
    for (auto& later : calculator.later) later.reply_nil();
    calculator.later.clear();
    answered.set_value();
  });
  answered.get_future().get();
  EXPECT_EQ(parked_calls, 1u);
  auto outcome = parked->wait(Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(outcome && outcome->ok());
  EXPECT_EQ(outcome->value().header.type, wire::MessageType::reply);
}

}  // namespace
}  // namespace tether::service
