// Tests for the cluster's name server: its answers and errors, and the sweep of dead servers.
#include "cluster/name_service.hpp"

#include <future>

#include <gtest/gtest.h>

#include "rpc/runtime.hpp"
#include "service/test_client.hpp"

namespace tether::cluster {
namespace {

// A client connection to a ServiceHost holding the name service, over the in-memory transport.
struct NameServiceTest : ::testing::Test {
  rpc::Runtime runtime{1};
  std::unique_ptr<NameService> names;
  std::shared_ptr<service::ServiceHost> host = std::make_shared<service::ServiceHost>();
  std::unique_ptr<service::TestClient> client;

  void SetUp() override {
    service::run_on_io(runtime, [&] { names = std::make_unique<NameService>(runtime.context(), std::chrono::milliseconds(0)); });
    host->add(*names);
    client = std::make_unique<service::TestClient>(runtime, host);
  }
  void TearDown() override {
    client->close();
    runtime.stop();  // the host still calls the service as the connections close
    names.reset();
  }
  Result<wire::Frame> call(const std::string& method, const std::function<void(wire::Packer&)>& pack_args) {
    return client->call("tether.ns", method, pack_args);
  }
  void register_name(const std::string& name, const std::string& uri, std::vector<std::string> tags) {
    auto reply = call("register", [&](wire::Packer& p) {
      p.pack_array(3);
      wire::pack_str(p, name);
      wire::pack_str(p, uri);
      p.pack(tags);
    });
    ASSERT_TRUE(reply.ok());
    ASSERT_EQ(reply->header.type, wire::MessageType::reply);
  }
  template <typename T>
  T answer(const std::string& method, const std::function<void(wire::Packer&)>& pack_args) {
    auto reply = call(method, pack_args);
    EXPECT_TRUE(reply.ok());
    EXPECT_EQ(reply->header.type, wire::MessageType::reply);
    return wire::unpack_body(reply->body_span())->get().as<T>();
  }
};

auto one_str(std::string text) {
  return [text](wire::Packer& p) {
    p.pack_array(1);
    wire::pack_str(p, text);
  };
}

// Registered names are looked up, listed by prefix, filtered by tags, and removed once.
TEST_F(NameServiceTest, RegistersLooksUpListsAndRemoves) {
  register_name("app.one", "tether://127.0.0.1:1000/one", {"blue", "fast"});
  register_name("app.two", "tether://127.0.0.1:1000/two", {"blue"});
  register_name("other", "tether+unix://%2Ftmp%2Fs/x", {});
  EXPECT_EQ(answer<std::string>("lookup", one_str("app.two")), "tether://127.0.0.1:1000/two");
  auto listed = answer<std::map<std::string, std::string>>("list", one_str("app."));
  EXPECT_EQ(listed.size(), 2u);
  auto fast = answer<std::map<std::string, std::string>>("lookup_by_metadata", [](wire::Packer& p) {
    p.pack_array(1);
    p.pack(std::vector<std::string>{"fast", "blue"});
  });
  EXPECT_EQ(fast, (std::map<std::string, std::string>{{"app.one", "tether://127.0.0.1:1000/one"}}));
  EXPECT_EQ(answer<std::vector<std::string>>("metadata", one_str("app.one")), (std::vector<std::string>{"blue", "fast"}));
  EXPECT_TRUE(answer<bool>("remove", one_str("app.one")));
  EXPECT_FALSE(answer<bool>("remove", one_str("app.one")));
}

// An unknown name is a KeyError and a bad URI a ValueError, as from the Python name server.
TEST_F(NameServiceTest, UnknownNamesAndBadUrisGetPythonErrors) {
  auto missing = call("lookup", one_str("nobody"));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(wire::unpack_error_body(missing->body_span()).type, "builtins.KeyError");
  auto bad = call("register", [](wire::Packer& p) {
    p.pack_array(2);
    wire::pack_str(p, "x");
    wire::pack_str(p, "http://example.invalid/");
  });
  ASSERT_TRUE(bad.ok());
  auto error = wire::unpack_error_body(bad->body_span());
  EXPECT_EQ(error.type, "builtins.ValueError");
  EXPECT_EQ(error.message, "not a tether URI: http://example.invalid/");
}

// The sweep keeps entries whose server accepts connections and drops the others.
TEST_F(NameServiceTest, SweepDropsEntriesWhoseServersAreGone) {
  asio::ip::tcp::acceptor alive(runtime.context(), asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::ip::tcp::acceptor closed(runtime.context(), asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto dead_port = closed.local_endpoint().port();
  closed.close();  // nothing listens there any more
  register_name("live", "tether://127.0.0.1:" + std::to_string(alive.local_endpoint().port()) + "/x", {});
  register_name("dead", "tether://127.0.0.1:" + std::to_string(dead_port) + "/x", {});
  std::promise<void> swept;
  asio::post(runtime.executor(), [&] { names->sweep([&] { swept.set_value(); }); });
  swept.get_future().get();
  auto listed = answer<std::map<std::string, std::string>>("list", [](wire::Packer& p) { p.pack_array(0); });
  EXPECT_EQ(listed.count("live"), 1u);
  EXPECT_EQ(listed.count("dead"), 0u);
  service::run_on_io(runtime, [&] { alive.close(); });
}

}  // namespace
}  // namespace tether::cluster
