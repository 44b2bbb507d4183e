// Tests for the node service across two nodes without workers: joining the head and reporting to
// it, asking an object's owner for its value, fetching a store object from another node in chunks,
// releasing the hold at the owner, what is lost when the owner leaves, and what join, report and
// fetch refuse. Both nodes run on one io thread, as a daemon's nodes do, and share one connection
// over the in-memory transport.
#include "cluster/node.hpp"

#include <atomic>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <functional>
#include <future>
#include <limits>
#include <thread>

#include <gtest/gtest.h>

#include "rpc/runtime.hpp"
#include "service/test_client.hpp"

namespace tether::cluster {
namespace {

using namespace std::chrono_literals;
using service::ReceivedReply;

// An id made by client 1 of node `node` (the first 4 bytes name the node, big-endian).
std::string object_id(std::uint8_t node, std::uint8_t counter) {
  std::string id(16, '\0');
  id[3] = static_cast<char>(node);
  id[7] = 1;
  id[15] = static_cast<char>(counter);
  return id;
}

store::ObjectId store_id(const std::string& id) {
  return store::ObjectId::from_bytes(std::span(reinterpret_cast<const std::uint8_t*>(id.data()), id.size())).value();
}

void pack_bin(wire::Packer& p, const std::string& bytes) {
  p.pack_bin(static_cast<std::uint32_t>(bytes.size()));
  p.pack_bin_body(bytes.data(), static_cast<std::uint32_t>(bytes.size()));
}

void pack_cpus(wire::Packer& p, double cpus) {
  p.pack_map(1);
  wire::pack_str(p, "CPU");
  p.pack_double(cpus);
}

// The large values' bytes: a chunk written at the wrong offset cannot match.
std::byte pattern_byte(std::uint64_t index) { return static_cast<std::byte>((index * 31) % 251); }

// A reply's body, or the ERROR (its kind and message) the peer answered instead.
Result<ReceivedReply> answer(Result<wire::Frame> frame) {
  if (!frame) return frame.error();
  return ReceivedReply::parse(std::move(*frame));
}

// Polls `condition` every 10 ms for up to 5 s: a slow machine only makes the test slower.
bool eventually(const std::function<bool()>& condition) {
  for (auto deadline = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < deadline;) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// A shared-memory segment mapped the way a client maps what node.create or node.get names.
class MappedSegment {
 public:
  MappedSegment(const std::string& name, std::size_t size, bool writable) : size_(size) {
    int fd = shm_open(name.c_str(), writable ? O_RDWR : O_RDONLY, 0);
    if (fd < 0) return;
    void* address = mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (address != MAP_FAILED) address_ = static_cast<std::byte*>(address);
  }
  ~MappedSegment() {
    if (address_) munmap(address_, size_);
  }
  MappedSegment(const MappedSegment&) = delete;
  MappedSegment& operator=(const MappedSegment&) = delete;
  bool mapped() const { return address_ != nullptr; }
  std::span<std::byte> bytes() const { return {address_, size_}; }

 private:
  std::byte* address_ = nullptr;
  std::size_t size_;
};

// Node 1 (the head) and node 2, each with its own store, on one io thread. Node 2 joined the head
// over one connection, which both use both ways; a driver said hello to each node.
struct NodePeersTest : ::testing::Test {
  static constexpr std::uint64_t kStoreBytes = 64ull << 20;

  rpc::Runtime runtime{1};
  std::unique_ptr<store::ObjectStore> store1, store2;
  std::unique_ptr<Node> node1, node2;
  std::shared_ptr<service::ServiceHost> host1 = std::make_shared<service::ServiceHost>();
  std::shared_ptr<service::ServiceHost> host2 = std::make_shared<service::ServiceHost>();
  std::shared_ptr<rpc::Connection> node2_to_head;  // node 2's end of the pair's connection
  std::shared_ptr<rpc::Connection> head_to_node2;  // node 1's end
  std::unique_ptr<service::TestClient> driver1, driver2;
  std::atomic<bool> node2_stop_requested{false};  // node 2 asked to stop (it lost its head)

  static std::string store_prefix(int node) { return "/tether-peertest-" + std::to_string(getpid()) + "-" + std::to_string(node) + "-"; }

  void SetUp() override {
    start_nodes();
    auto joined = join_head();
    ASSERT_TRUE(joined.ok()) << joined.error().message;
    attach_node2(*joined);
    say_hello(*driver1);
    say_hello(*driver2);
  }

  void TearDown() override {
    driver1->close();
    driver2->close();
    // Closed on the io thread: closing tells the nodes at once (they drop the peer), and the nodes
    // are only ever touched from there.
    service::run_on_io(runtime, [&] {
      node2_to_head->close("test done");
      head_to_node2->close("test done");
    });
    runtime.stop();  // the hosts still call the nodes as connections close
    node1.reset();
    node2.reset();
    store1.reset();
    store2.reset();
  }

  void start_nodes() {
    store1 = std::make_unique<store::ObjectStore>(store::StoreOptions{store_prefix(1), kStoreBytes, {}});
    store2 = std::make_unique<store::ObjectStore>(store::StoreOptions{store_prefix(2), kStoreBytes, {}});
    NodeOptions head;
    head.resources = {{"CPU", 1}};
    head.python = "/nonexistent/python";  // no worker is ever started here
    head.address = "node1.test:7001";
    NodeOptions member = head;
    member.head = false;
    member.node_id = 2;
    member.resources = {{"CPU", 2}};
    member.address = "node2.test:7002";
    member.report_interval = 20ms;
    member.on_shutdown_requested = [this] { node2_stop_requested = true; };
    service::run_on_io(runtime, [&] {
      node1 = std::make_unique<Node>(runtime.context(), head, *store1);
      node2 = std::make_unique<Node>(runtime.context(), member, *store2);
    });
    host1->add(*node1);
    host2->add(*node2);

    auto [a, b] = net::make_memory_pipe(runtime.executor());
    head_to_node2 = rpc::Connection::create(std::move(b), rpc::Connection::Role::server, {}, {}, host1);
    node2_to_head = rpc::Connection::create(std::move(a), rpc::Connection::Role::client, {}, {}, host2);
    std::promise<void> server_ready, client_ready;
    head_to_node2->start([&](const Result<rpc::Negotiated>&) { server_ready.set_value(); });
    node2_to_head->start([&](const Result<rpc::Negotiated>&) { client_ready.set_value(); });
    server_ready.get_future().get();
    client_ready.get_future().get();

    driver1 = std::make_unique<service::TestClient>(runtime, host1);
    driver2 = std::make_unique<service::TestClient>(runtime, host2);
  }

  // Sends a request on one of the nodes' own connections, as TestClient::call does on its own.
  static Result<wire::Frame> call_on(rpc::Connection& connection, const std::string& method,
                                     const std::function<void(wire::Packer&)>& pack_args) {
    return service::testing::call_and_wait(connection, service::testing::request_with("node", method, pack_args, {}, false));
  }

  // join(address, resources) from node 2, as tetherd sends it.
  Result<ReceivedReply> send_join(rpc::Connection& connection) {
    return answer(call_on(connection, "join", [](wire::Packer& p) {
      p.pack_array(2);
      wire::pack_str(p, "node2.test:7002");
      pack_cpus(p, 2);
    }));
  }

  struct Joined {
    std::uint32_t node_id = 0;
    std::vector<NodeInfo> directory;
  };
  Result<Joined> join_head() {
    auto reply = send_join(*node2_to_head);
    if (!reply) return reply.error();
    const auto* id = wire::map_get(reply->body(), "node_id");
    const auto* nodes = wire::map_get(reply->body(), "nodes");
    if (!id || id->type != msgpack::type::POSITIVE_INTEGER || !nodes) return Error{ErrorKind::bad_request, "join's answer lacks node_id or nodes"};
    auto directory = Node::read_directory(*nodes);
    if (!directory) return directory.error();
    return Joined{static_cast<std::uint32_t>(id->via.u64), std::move(*directory)};
  }

  void attach_node2(const Joined& joined) {
    service::run_on_io(runtime, [&] { node2->attach_to_head(node2_to_head, joined.directory); });
  }

  void say_hello(service::TestClient& driver) {
    auto reply = answer(driver.call("node", "hello", [](wire::Packer& p) {
      p.pack_array(2);
      wire::pack_str(p, "driver");
      p.pack_uint32(static_cast<std::uint32_t>(getpid()));
    }));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
  }

  static Result<ReceivedReply> call(service::TestClient& driver, const std::string& method,
                                    const std::function<void(wire::Packer&)>& pack_args) {
    return answer(driver.call("node", method, pack_args));
  }

  // retain, release, unmapped (oneway) and get take a list of ids.
  static Result<ReceivedReply> call_with_ids(service::TestClient& driver, const std::string& method,
                                             const std::vector<std::string>& ids) {
    auto pack_ids = [&](wire::Packer& p) {
      p.pack_array(1);
      p.pack_array(static_cast<std::uint32_t>(ids.size()));
      for (const auto& id : ids) pack_bin(p, id);
    };
    return answer(driver.call("node", method, pack_ids));
  }
  static void send_ids(service::TestClient& driver, const std::string& method, const std::vector<std::string>& ids) {
    auto sent = driver.call("node", method, [&](wire::Packer& p) {
      p.pack_array(1);
      p.pack_array(static_cast<std::uint32_t>(ids.size()));
      for (const auto& id : ids) pack_bin(p, id);
    }, true);
    EXPECT_TRUE(sent.ok()) << method;
  }

  static Result<ReceivedReply> fetch(service::TestClient& driver, const std::string& id, std::uint64_t offset, std::uint64_t length) {
    return call(driver, "fetch", [&](wire::Packer& p) {
      p.pack_array(3);
      pack_bin(p, id);
      p.pack_uint64(offset);
      p.pack_uint64(length);
    });
  }

  // Puts a value of `size` pattern bytes into node 2's store the way a client does: create, write
  // into the segment, seal. Driver 2 holds it.
  void store_on_node2(const std::string& id, std::uint64_t size) {
    auto created = call(*driver2, "create", [&](wire::Packer& p) {
      p.pack_array(2);
      pack_bin(p, id);
      p.pack_uint64(size);
    });
    ASSERT_TRUE(created.ok()) << created.error().message;
    ASSERT_EQ(created->body().type, msgpack::type::STR);
    MappedSegment segment(created->body().as<std::string>(), size, true);
    ASSERT_TRUE(segment.mapped());
    for (std::uint64_t i = 0; i < size; ++i) segment.bytes()[i] = pattern_byte(i);
    auto sealed = call(*driver2, "seal", [&](wire::Packer& p) {
      p.pack_array(1);
      pack_bin(p, id);
    });
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;
  }

  static Result<ReceivedReply> status(service::TestClient& driver) {
    return call(driver, "status", [](wire::Packer& p) { p.pack_array(0); });
  }

  // The nodes the node's status lists (its own row first).
  static std::vector<NodeInfo> nodes_listed(service::TestClient& driver) {
    auto reply = status(driver);
    const auto* nodes = reply ? wire::map_get(reply->body(), "nodes") : nullptr;
    auto directory = nodes ? Node::read_directory(*nodes) : Result<std::vector<NodeInfo>>(Error{});
    return directory ? *directory : std::vector<NodeInfo>{};
  }

  // status's objects.count: the entries in the node's object table.
  static std::uint64_t object_count(service::TestClient& driver) {
    auto reply = status(driver);
    const auto* objects = reply ? wire::map_get(reply->body(), "objects") : nullptr;
    const auto* count = objects ? wire::map_get(*objects, "count") : nullptr;
    return count && count->type == msgpack::type::POSITIVE_INTEGER ? count->via.u64 : std::numeric_limits<std::uint64_t>::max();
  }
};

// The same two nodes before node 2 joined, for the test of joining itself.
struct NodePeersJoinTest : NodePeersTest {
  void SetUp() override { start_nodes(); }
};

// Joining gives the next node id and the head's directory, and the head lists the new node only
// once it reported: before, it could be handed tasks it cannot take yet.
TEST_F(NodePeersJoinTest, JoinAnswersTheNextIdAndTheHeadListsTheNodeFromItsFirstReport) {
  auto joined = join_head();
  ASSERT_TRUE(joined.ok()) << joined.error().message;
  EXPECT_EQ(joined->node_id, 2u);
  ASSERT_EQ(joined->directory.size(), 1u);  // node 2 is not ready yet: only the head
  EXPECT_EQ(joined->directory[0].id, 1u);
  EXPECT_EQ(joined->directory[0].address, "node1.test:7001");
  EXPECT_EQ(joined->directory[0].resources, (Resources{{"CPU", 1}}));
  EXPECT_EQ(joined->directory[0].available, (Resources{{"CPU", 1}}));

  // Node 2 reports only once attached, so node 1 cannot have heard from it yet.
  say_hello(*driver1);
  EXPECT_EQ(nodes_listed(*driver1).size(), 1u);

  attach_node2(*joined);
  std::vector<NodeInfo> listed;
  ASSERT_TRUE(eventually([&] { return (listed = nodes_listed(*driver1)).size() == 2; }));
  EXPECT_EQ(listed[0].id, 1u);
  EXPECT_EQ(listed[1].id, 2u);
  EXPECT_EQ(listed[1].address, "node2.test:7002");
  EXPECT_EQ(listed[1].resources, (Resources{{"CPU", 2}}));
  EXPECT_EQ(listed[1].available, (Resources{{"CPU", 2}}));  // as node 2 reported it

  // Node 2 knows the head from the answer to join.
  say_hello(*driver2);
  auto seen_by_node2 = nodes_listed(*driver2);
  ASSERT_EQ(seen_by_node2.size(), 2u);
  EXPECT_EQ(seen_by_node2[0].id, 2u);
  EXPECT_EQ(seen_by_node2[1].id, 1u);
}

// An object node 2 owns is asked of node 2 by node 1 when a client of node 1 refers to it.
TEST_F(NodePeersTest, AnInlineValueIsAskedOfItsOwner) {
  auto id = object_id(2, 1);
  auto put = call(*driver2, "put", [&](wire::Packer& p) {
    p.pack_array(2);
    pack_bin(p, id);
    pack_bin(p, "made on node 2");
  });
  ASSERT_TRUE(put.ok()) << put.error().message;
  send_ids(*driver1, "retain", {id});
  auto got = call_with_ids(*driver1, "get", {id});
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->body().type, msgpack::type::ARRAY);
  ASSERT_EQ(got->body().via.array.size, 1u);
  const auto* value = wire::map_get(got->body().via.array.ptr[0], "inline");
  ASSERT_NE(value, nullptr) << "expected an inline value";
  auto bytes = got->bytes_of(*value, "inline");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()), "made on node 2");
}

// A value in node 2's store is copied into node 1's store, and a driver of node 1 maps node 1's
// copy. Its size takes more 4 MiB chunks than a transfer keeps in flight, and a partial one.
TEST_F(NodePeersTest, AStoreValueIsFetchedIntoTheReadersNodeInChunks) {
  constexpr std::uint64_t kSize = (17ull << 20) + 123;
  auto id = object_id(2, 2);
  store_on_node2(id, kSize);
  if (HasFatalFailure()) return;
  send_ids(*driver1, "retain", {id});
  auto got = call_with_ids(*driver1, "get", {id});
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->body().type, msgpack::type::ARRAY);
  const auto* shm = wire::map_get(got->body().via.array.ptr[0], "shm");
  ASSERT_NE(shm, nullptr) << "expected a shared-memory value";
  ASSERT_EQ(shm->type, msgpack::type::ARRAY);
  ASSERT_EQ(shm->via.array.size, 3u);
  auto name = shm->via.array.ptr[0].as<std::string>();
  EXPECT_EQ(name.rfind(store_prefix(1), 0), 0u) << name << " is not in node 1's store";
  EXPECT_EQ(shm->via.array.ptr[1].as<std::uint64_t>(), kSize);
  EXPECT_TRUE(shm->via.array.ptr[2].as<bool>());  // pinned for driver 1 until it says unmapped

  MappedSegment segment(name, kSize, false);
  ASSERT_TRUE(segment.mapped());
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < kSize; ++i) wrong += segment.bytes()[i] != pattern_byte(i);
  EXPECT_EQ(wrong, 0u);
  auto copy = store1->info(store_id(id));
  ASSERT_TRUE(copy.has_value());
  EXPECT_TRUE(copy->sealed);
  EXPECT_FALSE(copy->primary);  // a copy: node 2 has the primary
}

// Node 1 holds node 2's object at node 2 while a client of node 1 holds it, and lets go when the
// last one does: the owner frees it only then.
TEST_F(NodePeersTest, TheOwnerFreesAnObjectOnceTheOtherNodeReleasedIt) {
  constexpr std::uint64_t kSize = (1ull << 20) + 7;
  auto id = object_id(2, 3);
  store_on_node2(id, kSize);
  if (HasFatalFailure()) return;
  send_ids(*driver1, "retain", {id});
  auto got = call_with_ids(*driver1, "get", {id});
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_NE(wire::map_get(got->body().via.array.ptr[0], "shm"), nullptr);
  auto object = store_id(id);
  ASSERT_TRUE(store1->contains(object));

  // Driver 2 lets go first: node 1's hold at the owner keeps the object. (status answers after
  // the oneway release, on the same connection, was taken.)
  send_ids(*driver2, "release", {id});
  EXPECT_EQ(object_count(*driver2), 1u);
  EXPECT_TRUE(store2->contains(object));

  send_ids(*driver1, "release", {id});
  send_ids(*driver1, "unmapped", {id});
  EXPECT_TRUE(eventually([&] { return object_count(*driver2) == 0; }));
  EXPECT_FALSE(store2->contains(object));
  EXPECT_EQ(object_count(*driver1), 0u);
  EXPECT_FALSE(store1->contains(object));
}

// fetch reads a node's store for any caller, so it must refuse what it cannot serve without
// harming the connection.
TEST_F(NodePeersTest, FetchRefusesBadRangesAndUnknownObjectsAndKeepsServing) {
  constexpr std::uint64_t kSize = 1000;
  auto id = object_id(2, 4);
  store_on_node2(id, kSize);
  if (HasFatalFailure()) return;

  auto too_long = fetch(*driver2, id, 0, (64ull << 20) + 1);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().kind, ErrorKind::bad_request);
  EXPECT_EQ(too_long.error().message, "node.fetch: at most 64 MiB at once");

  auto unknown = fetch(*driver2, object_id(2, 99), 0, 1);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("no object"), std::string::npos) << unknown.error().message;

  for (auto [offset, length] : {std::pair<std::uint64_t, std::uint64_t>{kSize + 1, 0}, {kSize - 10, 11},
                                {std::numeric_limits<std::uint64_t>::max(), 2}}) {  // offset + length overflows
    auto outside = fetch(*driver2, id, offset, length);
    ASSERT_FALSE(outside.ok()) << "offset " << offset << " length " << length;
    EXPECT_EQ(outside.error().kind, ErrorKind::bad_request);
  }

  // An object still being written has no bytes to give yet.
  auto unsealed_id = object_id(2, 5);
  ASSERT_TRUE(call(*driver2, "create", [&](wire::Packer& p) {
                p.pack_array(2);
                pack_bin(p, unsealed_id);
                p.pack_uint64(16);
              }).ok());
  EXPECT_FALSE(fetch(*driver2, unsealed_id, 0, 16).ok());

  auto chunk = fetch(*driver2, id, 990, 10);
  ASSERT_TRUE(chunk.ok()) << chunk.error().message;
  auto bytes = chunk->bytes_of(chunk->body(), "chunk");
  ASSERT_TRUE(bytes.ok());
  ASSERT_EQ(bytes->size(), 10u);
  for (std::uint64_t i = 0; i < 10; ++i) EXPECT_EQ((*bytes)[i], pattern_byte(990 + i));
}

// Only the head numbers nodes, a connection introduces itself once, and only a joined node reports.
TEST_F(NodePeersTest, JoinAndReportAreRefusedWhereTheyDoNotBelong) {
  service::TestClient stranger_at_node2(runtime, host2);
  auto not_head = answer(stranger_at_node2.call("node", "join", [](wire::Packer& p) {
    p.pack_array(2);
    wire::pack_str(p, "node3.test:7003");
    pack_cpus(p, 1);
  }));
  ASSERT_FALSE(not_head.ok());
  EXPECT_EQ(not_head.error().kind, ErrorKind::denied);

  auto twice = send_join(*node2_to_head);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().kind, ErrorKind::bad_request);

  auto pack_report = [](wire::Packer& p) {
    p.pack_array(1);
    pack_cpus(p, 1);
  };
  service::TestClient stranger_at_head(runtime, host1);
  auto stranger_report = answer(stranger_at_head.call("node", "report", pack_report));
  ASSERT_FALSE(stranger_report.ok());
  EXPECT_EQ(stranger_report.error().kind, ErrorKind::denied);
  auto driver_report = call(*driver1, "report", pack_report);  // a driver said hello, not join
  ASSERT_FALSE(driver_report.ok());
  EXPECT_EQ(driver_report.error().kind, ErrorKind::denied);

  // Node 2's own reports still get the directory.
  auto report = answer(call_on(*node2_to_head, "report", pack_report));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_NE(wire::map_get(report->body(), "nodes"), nullptr);
  stranger_at_node2.close();
  stranger_at_head.close();
}

// When the owner leaves, what node 1 already has stays readable (inline values, copies in its
// store); what was only in the owner's store, and ids the owner made, read as lost, not freed.
TEST_F(NodePeersTest, WhenTheOwnerLeavesOnlyWhatWasCopiedHereSurvives) {
  auto small = object_id(2, 1), copied = object_id(2, 2), not_copied = object_id(2, 3);
  ASSERT_TRUE(call(*driver2, "put", [&](wire::Packer& p) {
                p.pack_array(2);
                pack_bin(p, small);
                pack_bin(p, "v");
              }).ok());
  store_on_node2(copied, 100000);
  store_on_node2(not_copied, 100000);
  if (HasFatalFailure()) return;
  send_ids(*driver1, "retain", {small, copied, not_copied});
  ASSERT_TRUE(call_with_ids(*driver1, "get", {small, copied}).ok());
  // wait learns where not_copied is without bringing it here.
  auto waited = call(*driver1, "wait", [&](wire::Packer& p) {
    p.pack_array(3);
    p.pack_array(1);
    pack_bin(p, not_copied);
    p.pack_uint64(1);
    p.pack_double(5.0);
  });
  ASSERT_TRUE(waited.ok()) << waited.error().message;

  service::run_on_io(runtime, [&] { head_to_node2->close("node 2 leaves"); });
  auto got = call_with_ids(*driver1, "get", {small, copied, not_copied, object_id(2, 9)});
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->body().type, msgpack::type::ARRAY);
  ASSERT_EQ(got->body().via.array.size, 4u);
  const auto* values = got->body().via.array.ptr;
  EXPECT_NE(wire::map_get(values[0], "inline"), nullptr);
  EXPECT_NE(wire::map_get(values[1], "shm"), nullptr);
  for (int lost : {2, 3}) {
    const auto* failure = wire::map_get(values[lost], "failure");
    ASSERT_NE(failure, nullptr) << "entry " << lost;
    ASSERT_EQ(failure->type, msgpack::type::ARRAY);
    EXPECT_EQ(failure->via.array.ptr[0].as<std::string>(), "ObjectLostError") << "entry " << lost;
  }
}

// Stopping a node closes its connections to the other nodes; each close removes the peer at once,
// which must not disturb the loop doing the closing (it once stepped through a freed map node).
TEST_F(NodePeersTest, StoppingTheHeadWithANodeConnectedClosesItAndTheNodeStops) {
  service::run_on_io(runtime, [&] { node1->stop_workers(0ms); });
  EXPECT_FALSE(head_to_node2->is_open());
  EXPECT_TRUE(eventually([&] { return node2_stop_requested.load(); })) << "node 2 did not notice its head left";
}

}  // namespace
}  // namespace tether::cluster
