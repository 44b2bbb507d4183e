// Tuple spaces, topics and groups from the C++ API, against the real services behind a TCP
// listener with a secret, as a head serves them.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "groups/groups.hpp"
#include "rpc/listener.hpp"
#include "service/test_client.hpp"
#include "tether/tether.hpp"
#include "topics/topics.hpp"
#include "tuplespace/tuple_space.hpp"

namespace tether {
namespace {

class Services : public ::testing::Test {
 protected:
  rpc::Runtime runtime{1};
  std::unique_ptr<tuplespace::TupleSpaces> spaces;
  std::unique_ptr<topics::Topics> topics_service;
  std::unique_ptr<groups::Groups> groups_service;
  std::shared_ptr<service::ServiceHost> host = std::make_shared<service::ServiceHost>();
  std::unique_ptr<rpc::Listener> listener;
  std::string address;
  Client client{ClientOptions{.secret = "coordination"}};

  void SetUp() override {
    service::run_on_io(runtime, [&] {
      spaces = std::make_unique<tuplespace::TupleSpaces>(runtime.context());
      topics_service = std::make_unique<topics::Topics>();
      groups_service = std::make_unique<groups::Groups>(runtime.context());
    });
    host->add(*spaces);
    host->add(*topics_service);
    host->add(*groups_service);
    auto listening = rpc::Listener::listen(runtime, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""},
                                           rpc::AuthConfig{"coordination", false, false}, {}, host);
    ASSERT_TRUE(listening);
    listener = std::move(*listening);
    address = listener->endpoint().to_string();
  }
  void TearDown() override {
    client.close();
    listener->close();
    service::run_on_io(runtime, [&] {  // the services' timers belong to the io thread
      spaces.reset();
      topics_service.reset();
      groups_service.reset();
    });
    runtime.stop(std::chrono::milliseconds(1000));
  }
};

// Collects what callbacks deliver, for the test thread to wait on.
template <typename T>
struct Inbox {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<T> items;
  void add(T item) {
    std::lock_guard lock(mutex);
    items.push_back(std::move(item));
    changed.notify_all();
  }
  std::vector<T> wait_for(std::size_t n) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, std::chrono::seconds(10), [&] { return items.size() >= n; });
    return items;
  }
};

TEST_F(Services, TupleSpaceOutTakeReadAndTemplates) {
  TupleSpace space(client, address, "jobs");
  space.out({"job", 1, 2.5});
  space.out({"job", 2, Value::tuple({1, 2})});  // a nested tuple travels as an array
  EXPECT_EQ(space.count(), 2u);
  auto read = space.read_now({"job", type_field("int"), any_field()});
  ASSERT_TRUE(read);
  EXPECT_EQ((*read)[1], Value(1));
  EXPECT_FALSE(space.take_now({"job", 1.0, any_field()}));  // 1.0 is not 1
  auto taken = space.take({"job", 2, any_field()}, 1.0);
  ASSERT_TRUE(taken);
  EXPECT_EQ((*taken)[2], (Value{1, 2}));
  EXPECT_FALSE(space.take({"job", 2, any_field()}, 0.05));  // waited, none came
  EXPECT_EQ(space.count(), 1u);
}

TEST_F(Services, TupleSpaceBlockedTakerGetsTheNextTuple) {
  TupleSpace space(client, address, "queue");
  std::optional<Tuple> got;
  std::thread taker([&] { got = space.take({"work", any_field()}); });
  Client other(ClientOptions{.secret = "coordination"});
  TupleSpace(other, address, "queue").out({"work", "w1"});
  taker.join();
  ASSERT_TRUE(got);
  EXPECT_EQ((*got)[1].as_string(), "w1");
}

TEST_F(Services, TupleSpaceNotifyDeliversInWriteOrder) {
  TupleSpace space(client, address, "watched");
  Inbox<Tuple> inbox;
  auto watch = space.notify({"t", type_field("int")}, [&](Tuple t) { inbox.add(std::move(t)); });
  for (int i = 0; i < 50; ++i) space.out({"t", i});
  space.out({"t", "not an int"});
  auto seen = inbox.wait_for(50);
  ASSERT_EQ(seen.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(seen[i][1], Value(i));
}

TEST_F(Services, TopicsWildcardsRetainedValuesAndPresence) {
  Topics topics(client, address);
  topics.publish("sensors.kitchen.temp", 21.5);
  Inbox<std::pair<std::string, Value>> inbox;
  auto sub = topics.subscribe("sensors.#", [&](const std::string& s, const Value& v) { inbox.add({s, v}); });
  topics.publish("sensors.hall.temp", 19.0, false);
  topics.publish("other.topic", 1);
  auto seen = inbox.wait_for(2);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].first, "sensors.kitchen.temp");  // the retained value, at once
  EXPECT_EQ(seen[0].second, Value(21.5));
  EXPECT_EQ(seen[1].first, "sensors.hall.temp");
  auto retained = topics.retained("sensors.*.temp");
  ASSERT_EQ(retained.size(), 1u);  // the hall value was not retained
  {
    Inbox<Value> presence;
    auto watch = topics.subscribe("$presence.worker", [&](const std::string&, const Value& v) { presence.add(v); });
    auto here = topics.announce("worker");
    EXPECT_EQ(presence.wait_for(1).at(0).find(Value("present"))->as_bool(), true);
    here.cancel();
    EXPECT_EQ(presence.wait_for(2).at(1).find(Value("present"))->as_bool(), false);
  }
}

TEST_F(Services, GroupsViewsAndOneOrderForEveryMember) {
  Group a(client, address, "chat");
  Client other(ClientOptions{.secret = "coordination"});
  Group b(other, address, "chat");
  auto first = a.receive(std::chrono::seconds(10));
  ASSERT_TRUE(first && std::holds_alternative<View>(*first));
  EXPECT_EQ(std::get<View>(*first).members, std::vector<std::string>{a.private_name()});
  // a then sees the view that adds b; b's first event is that same view.
  auto second = a.receive(std::chrono::seconds(10));
  ASSERT_TRUE(second && std::holds_alternative<View>(*second));
  EXPECT_EQ(std::get<View>(*second).members, (std::vector<std::string>{a.private_name(), b.private_name()}));
  for (int i = 0; i < 20; ++i) (i % 2 ? a : b).send(i, i % 3 ? "agreed" : "safe");
  auto messages_of = [](Group& g) {
    std::vector<Value> out;
    while (out.size() < 20) {
      auto event = g.receive(std::chrono::seconds(10));
      if (!event) break;
      if (auto* m = std::get_if<GroupMessage>(&*event)) out.push_back(m->data);
    }
    return out;
  };
  auto seen_a = messages_of(a);
  auto seen_b = messages_of(b);
  ASSERT_EQ(seen_a.size(), 20u);
  EXPECT_EQ(seen_a, seen_b);
  b.leave();
  auto after = a.receive(std::chrono::seconds(10));
  ASSERT_TRUE(after && std::holds_alternative<View>(*after));
  const auto& left = std::get<View>(*after).left;
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0], std::make_pair(b.private_name(), std::string("leave")));
}

}  // namespace
}  // namespace tether
