// Tests for the object table: reference counting across holds, pins and contained objects, and
// waiters that finish when enough objects are ready.
#include "cluster/object_table.hpp"

#include <unistd.h>

#include <gtest/gtest.h>

namespace tether::cluster {
namespace {

ObjectId make_id(std::uint8_t n) {
  ObjectId id;
  id.bytes[15] = n;
  return id;
}

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> out;
  for (char c : text) out.push_back(static_cast<std::byte>(c));
  return out;
}

struct ObjectTableTest : ::testing::Test {
  store::ObjectStore store{store::StoreOptions{"/tether-tabletest-" + std::to_string(getpid()) + "-", 1 << 20, {}}};
  ObjectTable table{store};
};

// An object lives while a client holds it, and goes when the last hold is released.
TEST_F(ObjectTableTest, AnObjectLivesWhileHeld) {
  auto id = make_id(1);
  table.add_pending(id);
  table.hold(id, 7);
  table.hold(id, 7);
  ASSERT_TRUE(table.set_ready(id, ObjectValue::inline_value(bytes_of("v")), {}));
  table.release(id, 7);
  EXPECT_TRUE(table.is_ready(id));
  table.release(id, 7);
  EXPECT_FALSE(table.contains(id));
}

// A client that disconnects drops all its holds at once; other clients' holds remain.
TEST_F(ObjectTableTest, ReleasingAClientDropsOnlyItsHolds) {
  auto a = make_id(1), b = make_id(2);
  for (auto id : {a, b}) table.add_pending(id);
  table.hold(a, 1);
  table.hold(b, 1);
  table.hold(b, 2);
  table.set_ready(a, ObjectValue::inline_value(bytes_of("a")), {});
  table.set_ready(b, ObjectValue::inline_value(bytes_of("b")), {});
  table.release_client(1);
  EXPECT_FALSE(table.contains(a));
  EXPECT_TRUE(table.contains(b));
  table.release(b, 1);  // client 1 no longer holds b: this must not take client 2's hold
  EXPECT_TRUE(table.contains(b));
}

// An object nested in another stays alive as long as its container, even with no holder.
TEST_F(ObjectTableTest, ContainedObjectsLiveAsLongAsTheirContainer) {
  auto inner = make_id(1), outer = make_id(2);
  table.add_pending(inner);
  table.hold(inner, 1);
  table.set_ready(inner, ObjectValue::inline_value(bytes_of("inner")), {});
  table.add_pending(outer);
  table.hold(outer, 1);
  table.set_ready(outer, ObjectValue::inline_value(bytes_of("outer")), {inner});
  table.release(inner, 1);
  EXPECT_TRUE(table.contains(inner));
  table.release(outer, 1);
  EXPECT_FALSE(table.contains(outer));
  EXPECT_FALSE(table.contains(inner));
}

// A pending object is kept (its task still runs) and freed once produced if nobody holds it.
TEST_F(ObjectTableTest, APendingObjectIsFreedOnceProducedIfUnheld) {
  auto id = make_id(1);
  table.add_pending(id);
  EXPECT_TRUE(table.contains(id));
  table.set_ready(id, ObjectValue::inline_value(bytes_of("v")), {});
  EXPECT_FALSE(table.contains(id));
}

// Freeing an object that lives in the store removes it from the store too.
TEST_F(ObjectTableTest, FreeingAStoreObjectRemovesItFromTheStore) {
  auto id = make_id(1);
  ASSERT_TRUE(store.create(id, 64, true).ok());
  ASSERT_TRUE(store.seal(id).ok());
  table.add_pending(id);
  table.hold(id, 3);
  table.set_ready(id, ObjectValue::in_store(64), {});
  EXPECT_TRUE(store.contains(id));
  table.release(id, 3);
  EXPECT_FALSE(store.contains(id));
}

// A waiter finishes when the number of ready objects it needs is reached, not before, and once.
TEST_F(ObjectTableTest, AWaiterFinishesOnceEnoughObjectsAreReady) {
  auto a = make_id(1), b = make_id(2), c = make_id(3);
  for (auto id : {a, b, c}) {
    table.add_pending(id);
    table.hold(id, 1);
  }
  int finished = 0;
  auto waiter = std::make_shared<ObjectWaiter>();
  waiter->ids = {a, b, c};
  waiter->needed = 2;
  waiter->done = [&](bool timed_out) {
    EXPECT_FALSE(timed_out);
    ++finished;
  };
  table.wait(waiter);
  table.set_ready(a, ObjectValue::inline_value(bytes_of("a")), {});
  EXPECT_EQ(finished, 0);
  table.set_ready(c, ObjectValue::inline_value(bytes_of("c")), {});
  EXPECT_EQ(finished, 1);
  table.set_ready(b, ObjectValue::inline_value(bytes_of("b")), {});
  EXPECT_EQ(finished, 1);
}

// Waiting for an unknown (freed) id does not wait: its get answers with an error instead.
TEST_F(ObjectTableTest, UnknownIdsDoNotBlockAWaiter) {
  bool finished = false;
  auto waiter = std::make_shared<ObjectWaiter>();
  waiter->ids = {make_id(9)};
  waiter->needed = 1;
  waiter->done = [&](bool) { finished = true; };
  table.wait(waiter);
  EXPECT_TRUE(finished);
}

// A second put of the same id is refused and the first value stays.
TEST_F(ObjectTableTest, ASecondValueForAnIdIsRefused) {
  auto id = make_id(1);
  table.add_pending(id);
  table.hold(id, 1);
  ASSERT_TRUE(table.set_ready(id, ObjectValue::inline_value(bytes_of("first")), {}));
  EXPECT_FALSE(table.set_ready(id, ObjectValue::inline_value(bytes_of("second")), {}));
  EXPECT_EQ(table.value(id)->bytes->size(), 5u);
}

}  // namespace
}  // namespace tether::cluster
