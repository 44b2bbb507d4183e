// Tests for the node service without workers: hello, put/get/wait, reference counting through
// release, and the errors its methods give for bad arguments. (Tasks and actors need Python
// workers; tests/python/test_cluster.py covers them end to end.)
#include "cluster/node.hpp"

#include <unistd.h>

#include <gtest/gtest.h>

#include "rpc/runtime.hpp"
#include "service/test_client.hpp"

namespace tether::cluster {
namespace {

std::string id_bytes(std::uint8_t n) {
  std::string id(16, '\0');
  id[3] = 1;  // node 1
  id[15] = static_cast<char>(n);
  return id;
}

void pack_bin(wire::Packer& p, const std::string& bytes) {
  p.pack_bin(static_cast<std::uint32_t>(bytes.size()));
  p.pack_bin_body(bytes.data(), static_cast<std::uint32_t>(bytes.size()));
}

struct NodeTest : ::testing::Test {
  rpc::Runtime runtime{1};
  std::unique_ptr<store::ObjectStore> store;
  std::unique_ptr<Node> node;
  std::shared_ptr<service::ServiceHost> host = std::make_shared<service::ServiceHost>();
  std::unique_ptr<service::TestClient> client;

  void SetUp() override {
    store = std::make_unique<store::ObjectStore>(
        store::StoreOptions{"/tether-nodetest-" + std::to_string(getpid()) + "-", 1 << 20, {}});
    NodeOptions options;
    options.resources = {{"CPU", 1}};
    options.python = "/nonexistent/python";  // no worker is ever started here
    service::run_on_io(runtime, [&] { node = std::make_unique<Node>(runtime.context(), options, *store); });
    host->add(*node);
    client = std::make_unique<service::TestClient>(runtime, host);
  }
  void TearDown() override {
    client->close();
    runtime.stop();  // the host still calls the node as the connection closes
    node.reset();
    store.reset();
  }
  Result<wire::Frame> call(const std::string& method, const std::function<void(wire::Packer&)>& pack_args, bool oneway = false) {
    return client->call("node", method, pack_args, oneway);
  }
  msgpack::object_handle body(Result<wire::Frame> reply) {
    EXPECT_TRUE(reply.ok());
    EXPECT_EQ(reply->header.type, wire::MessageType::reply);
    return std::move(*wire::unpack_body(reply->body_span()));
  }
  void hello() {
    auto reply = call("hello", [](wire::Packer& p) {
      p.pack_array(2);
      wire::pack_str(p, "driver");
      p.pack_uint32(42);
    });
    auto answer = body(reply);
    EXPECT_EQ(answer.get().via.map.size, 5u);
  }
  Result<wire::Frame> get(const std::string& id) {
    return call("get", [&](wire::Packer& p) {
      p.pack_array(1);
      p.pack_array(1);
      pack_bin(p, id);
    });
  }
  std::string first_key(const msgpack::object_handle& handle) {
    const auto& value = handle.get().via.array.ptr[0];
    return std::string(value.via.map.ptr[0].key.via.str.ptr, value.via.map.ptr[0].key.via.str.size);
  }
};

// A put value comes back from get, and is freed once its only holder releases it.
TEST_F(NodeTest, PutGetAndReleaseFreesTheObject) {
  hello();
  auto put = call("put", [](wire::Packer& p) {
    p.pack_array(2);
    pack_bin(p, id_bytes(1));
    pack_bin(p, "serialized");
  });
  ASSERT_EQ(put->header.type, wire::MessageType::reply);
  auto value = body(get(id_bytes(1)));
  ASSERT_EQ(first_key(value), "inline");
  EXPECT_EQ(value.get().via.array.ptr[0].via.map.ptr[0].val.as<std::string>(), "serialized");
  ASSERT_TRUE(call("release", [](wire::Packer& p) {
                p.pack_array(1);
                p.pack_array(1);
                pack_bin(p, id_bytes(1));
              }, true).ok());
  EXPECT_EQ(first_key(body(get(id_bytes(1)))), "failure");  // ObjectFreedError
}

// Requests before hello are refused, and a second put of the same id is a bad request.
TEST_F(NodeTest, HelloFirstAndIdsOnce) {
  auto early = call("put", [](wire::Packer& p) {
    p.pack_array(2);
    pack_bin(p, id_bytes(2));
    pack_bin(p, "x");
  });
  ASSERT_EQ(early->header.type, wire::MessageType::error);
  EXPECT_EQ(wire::unpack_error_body(early->body_span()).kind, ErrorKind::denied);
  hello();
  auto put = [&] {
    return call("put", [](wire::Packer& p) {
      p.pack_array(2);
      pack_bin(p, id_bytes(2));
      pack_bin(p, "x");
    });
  };
  EXPECT_EQ(put()->header.type, wire::MessageType::reply);
  auto again = put();
  ASSERT_EQ(again->header.type, wire::MessageType::error);
  EXPECT_EQ(wire::unpack_error_body(again->body_span()).kind, ErrorKind::bad_request);
}

// get with a timeout on an object nobody produces answers {"timeout": true}; wait says what is ready.
TEST_F(NodeTest, GetTimesOutAndWaitCountsReadyAndUnknownIds) {
  hello();
  ASSERT_EQ(call("put", [](wire::Packer& p) {
              p.pack_array(2);
              pack_bin(p, id_bytes(3));
              pack_bin(p, "v");
            })->header.type,
            wire::MessageType::reply);
  // A pending object: made by create (a put being written) and never sealed.
  ASSERT_EQ(call("create", [](wire::Packer& p) {
              p.pack_array(2);
              pack_bin(p, id_bytes(4));
              p.pack_uint64(16);
            })->header.type,
            wire::MessageType::reply);
  auto timed_out = body(call("get", [](wire::Packer& p) {
    p.pack_array(2);
    p.pack_array(1);
    pack_bin(p, id_bytes(4));
    p.pack_double(0.05);
  }));
  ASSERT_EQ(timed_out.get().type, msgpack::type::MAP);
  auto ready = body(call("wait", [](wire::Packer& p) {
    p.pack_array(3);
    p.pack_array(3);
    pack_bin(p, id_bytes(3));
    pack_bin(p, id_bytes(4));
    pack_bin(p, id_bytes(9));  // unknown: counts as ready (its get reports ObjectFreedError)
    p.pack_uint64(2);
    p.pack_double(5.0);
  }));
  EXPECT_EQ(ready.get().as<std::vector<int>>(), (std::vector<int>{0, 2}));
}

// Wrong argument types are answered with bad_request naming the method and argument.
TEST_F(NodeTest, BadArgumentsAreNamed) {
  hello();
  auto reply = call("get", [](wire::Packer& p) {
    p.pack_array(1);
    wire::pack_str(p, "not a list");
  });
  ASSERT_EQ(reply->header.type, wire::MessageType::error);
  auto error = wire::unpack_error_body(reply->body_span());
  EXPECT_EQ(error.kind, ErrorKind::bad_request);
  EXPECT_EQ(error.message, "node.get: argument 'ids' must be a list, got str");
}

}  // namespace
}  // namespace tether::cluster
