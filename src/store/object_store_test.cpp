// Tests for ObjectId and ObjectStore: segments seen from another mapping, making room, spilling,
// pins, removal, cleanup, and consistency under concurrent use.
#include "store/object_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <thread>
#include <unordered_set>

namespace tether::store {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

ObjectId make_id(std::uint32_t node, std::uint32_t serial) {
  ObjectId id;
  for (int i = 0; i < 4; ++i) {
    id.bytes[i] = static_cast<std::uint8_t>(node >> (24 - 8 * i));
    id.bytes[12 + i] = static_cast<std::uint8_t>(serial >> (24 - 8 * i));
  }
  return id;
}

// Bytes that differ with position and seed, so a misplaced or mixed-up chunk is noticed.
std::vector<std::byte> pattern(std::uint64_t size, std::uint32_t seed) {
  std::vector<std::byte> bytes(size);
  for (std::uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 31 + seed * 7 + (i >> 8)) & 0xff);
  return bytes;
}

// Maps a segment by name read-only, as a reader in another process would.
std::vector<std::byte> read_through_own_mapping(const SegmentInfo& segment) {
  int fd = ::shm_open(segment.shm_name.c_str(), O_RDONLY, 0);
  if (fd < 0) {
    ADD_FAILURE() << "shm_open " << segment.shm_name << ": " << std::strerror(errno);
    return {};
  }
  std::vector<std::byte> bytes(segment.size);
  if (segment.size > 0) {
    void* address = ::mmap(nullptr, segment.size, PROT_READ, MAP_SHARED, fd, 0);
    EXPECT_NE(address, MAP_FAILED);
    if (address != MAP_FAILED) {
      std::memcpy(bytes.data(), address, segment.size);
      ::munmap(address, segment.size);
    }
  }
  ::close(fd);
  return bytes;
}

bool segment_exists(const std::string& name) {
  int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

std::vector<std::string> shm_entries_with_prefix(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator("/dev/shm")) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(prefix.substr(1))) names.push_back(name);
  }
  return names;
}

// Each test gets its own segment prefix and spill directory, and anything left is cleaned up
// even when a test fails halfway.
class ObjectStoreTest : public ::testing::Test {
 protected:
  ObjectStoreTest() {
    static std::atomic<int> counter{0};
    std::string unique = std::to_string(::getpid()) + "-" + std::to_string(counter++);
    prefix_ = "/tether-store-test-" + unique + "-";
    spill_dir_ = fs::temp_directory_path() / ("tether-store-test-" + unique);
  }
  ~ObjectStoreTest() override {
    ObjectStore::remove_leftovers(prefix_);
    fs::remove_all(spill_dir_);
  }

  StoreOptions options(std::uint64_t capacity) const { return StoreOptions{prefix_, capacity, spill_dir_}; }

  // create + write + seal in one step, for tests about what happens afterwards.
  static void put(ObjectStore& store, const ObjectId& id, const std::vector<std::byte>& bytes, bool primary) {
    auto created = store.create(id, bytes.size(), primary);
    ASSERT_TRUE(created.ok()) << created.error().message;
    ASSERT_TRUE(store.write(id, 0, bytes).ok());
    ASSERT_TRUE(store.seal(id).ok());
  }

  static std::vector<std::byte> read_all(ObjectStore& store, const ObjectId& id) {
    auto size = store.info(id).value().size;
    auto bytes = store.read(id, 0, size);
    EXPECT_TRUE(bytes.ok()) << bytes.error().message;
    return bytes.ok() ? bytes.value() : std::vector<std::byte>{};
  }

  std::string prefix_;
  fs::path spill_dir_;
};

// The hex form names segments and spill files, so it must round-trip and be lowercase.
TEST(ObjectIdTest, HexRoundTripsAndIsLowercase) {
  ObjectId id = make_id(0xdeadbeef, 0x0102abcd);
  EXPECT_EQ(id.hex(), "deadbeef0000000000000000" "0102abcd");
  EXPECT_EQ(ObjectId::from_hex(id.hex()), id);
  EXPECT_EQ(ObjectId::from_hex("DEADBEEF0000000000000000" "0102ABCD"), id);
}

// Ids arrive from the wire; anything but exactly 16 bytes or 32 hex digits is refused.
TEST(ObjectIdTest, FromBytesAndFromHexRejectMalformedInput) {
  std::vector<std::uint8_t> sixteen(16, 0xab);
  std::string sixteen_hex;
  for (int i = 0; i < 16; ++i) sixteen_hex += "ab";
  EXPECT_EQ(ObjectId::from_bytes(sixteen).value().hex(), sixteen_hex);
  EXPECT_FALSE(ObjectId::from_bytes(std::vector<std::uint8_t>(15)).has_value());
  EXPECT_FALSE(ObjectId::from_bytes(std::vector<std::uint8_t>(17)).has_value());
  EXPECT_FALSE(ObjectId::from_bytes({}).has_value());
  EXPECT_FALSE(ObjectId::from_hex("").has_value());
  EXPECT_FALSE(ObjectId::from_hex(std::string(31, '0')).has_value());
  EXPECT_FALSE(ObjectId::from_hex(std::string(33, '0')).has_value());
  EXPECT_FALSE(ObjectId::from_hex(std::string(31, '0') + "g").has_value());
  EXPECT_FALSE(ObjectId::from_hex(std::string(30, '0') + " 1").has_value());
}

// The owner node is how a daemon decides where to fetch an object from.
TEST(ObjectIdTest, NodeIsTheFirstFourBytesBigEndian) {
  EXPECT_EQ(make_id(0x01020304, 99).node(), 0x01020304u);
  EXPECT_EQ(make_id(0, 0xffffffff).node(), 0u);
  EXPECT_EQ(make_id(0xffffffff, 0).node(), 0xffffffffu);
}

// Ids key ordered and hashed containers; equal ids must agree in both.
TEST(ObjectIdTest, EqualityOrderingAndHashAgree) {
  ObjectId a = make_id(1, 1), b = make_id(1, 2), c = make_id(2, 0);
  EXPECT_EQ(a, make_id(1, 1));
  EXPECT_NE(a, b);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);  // the node bytes come first
  EXPECT_EQ(std::hash<ObjectId>{}(a), std::hash<ObjectId>{}(make_id(1, 1)));
  std::unordered_set<ObjectId> hashed;
  std::set<ObjectId> ordered;
  for (std::uint32_t i = 0; i < 1000; ++i) {
    hashed.insert(make_id(7, i));
    ordered.insert(make_id(7, i));
  }
  EXPECT_EQ(hashed.size(), 1000u);
  EXPECT_EQ(ordered.size(), 1000u);
  EXPECT_TRUE(std::is_trivially_copyable_v<ObjectId>);
}

// The whole point of the store: what one side writes, a reader mapping the name sees.
TEST_F(ObjectStoreTest, SealedObjectIsReadableThroughAnIndependentMapping) {
  ObjectStore store(options(1 * kMiB));
  ObjectId id = make_id(1, 1);
  auto bytes = pattern(100 * kKiB, 1);
  auto created = store.create(id, bytes.size(), true);
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(created->shm_name, prefix_ + id.hex());
  EXPECT_EQ(created->size, bytes.size());
  // Written in two chunks, as a transfer would.
  std::span<const std::byte> all(bytes);
  ASSERT_TRUE(store.write(id, 0, all.first(40 * kKiB)).ok());
  ASSERT_TRUE(store.write(id, 40 * kKiB, all.subspan(40 * kKiB)).ok());
  ASSERT_TRUE(store.seal(id).ok());

  auto opened = store.open(id);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->shm_name, created->shm_name);
  EXPECT_EQ(read_through_own_mapping(*opened), bytes);
  auto middle = store.read(id, 1000, 5000);
  ASSERT_TRUE(middle.ok());
  EXPECT_EQ(middle.value(), std::vector<std::byte>(bytes.begin() + 1000, bytes.begin() + 6000));

  auto info = store.info(id).value();
  EXPECT_TRUE(info.sealed);
  EXPECT_TRUE(info.primary);
  EXPECT_FALSE(info.spilled);
  EXPECT_EQ(store.stats().used_bytes, bytes.size());
  EXPECT_EQ(store.stats().objects, 1u);
}

// mmap refuses 0 bytes, yet empty results (b"") are common objects.
TEST_F(ObjectStoreTest, ZeroByteObjectWorksLikeAnyOther) {
  ObjectStore store(options(1 * kKiB));
  ObjectId id = make_id(1, 1);
  ASSERT_TRUE(store.create(id, 0, true).ok());
  EXPECT_TRUE(store.write(id, 0, {}).ok());
  EXPECT_FALSE(store.write(id, 0, pattern(1, 1)).ok());
  ASSERT_TRUE(store.seal(id).ok());
  auto opened = store.open(id);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->size, 0u);
  EXPECT_TRUE(segment_exists(opened->shm_name));
  EXPECT_TRUE(read_through_own_mapping(*opened).empty());
  auto bytes = store.read(id, 0, 0);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(bytes->empty());
  EXPECT_EQ(store.stats().used_bytes, 0u);
  EXPECT_TRUE(store.remove(id));
  EXPECT_FALSE(segment_exists(opened->shm_name));
}

// Two writers of one id would corrupt each other's bytes.
TEST_F(ObjectStoreTest, CreatingAnExistingIdIsABadRequest) {
  ObjectStore store(options(1 * kMiB));
  ObjectId id = make_id(1, 1);
  ASSERT_TRUE(store.create(id, 10, true).ok());
  auto again = store.create(id, 10, false);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, ErrorKind::bad_request);
  EXPECT_EQ(store.stats().used_bytes, 10u);
  EXPECT_TRUE(store.info(id)->primary);
}

// Chunk offsets come from peers; none may write outside the segment.
TEST_F(ObjectStoreTest, WritesOutsideTheObjectAreRejected) {
  ObjectStore store(options(1 * kMiB));
  ObjectId id = make_id(1, 1);
  ASSERT_TRUE(store.create(id, 100, true).ok());
  EXPECT_TRUE(store.write(id, 90, pattern(10, 1)).ok());
  EXPECT_TRUE(store.write(id, 100, {}).ok());
  for (auto [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {91, 10}, {0, 101}, {101, 0}, {~std::uint64_t{0} - 4, 10}}) {
    Status written = store.write(id, offset, pattern(length, 1));
    ASSERT_FALSE(written.ok()) << "offset " << offset << " length " << length;
    EXPECT_EQ(written.error().kind, ErrorKind::bad_request);
  }
  ASSERT_TRUE(store.seal(id).ok());
  auto read_past = store.read(id, 50, 51);
  ASSERT_FALSE(read_past.ok());
  EXPECT_EQ(read_past.error().kind, ErrorKind::bad_request);
}

// A reader must never see a half-written object, and a sealed one never changes.
TEST_F(ObjectStoreTest, UnsealedObjectsCannotBeReadAndSealedOnesCannotBeWritten) {
  ObjectStore store(options(1 * kMiB));
  ObjectId id = make_id(1, 1);
  ASSERT_TRUE(store.create(id, 10, true).ok());
  auto opened = store.open(id);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().kind, ErrorKind::bad_request);
  auto read = store.read(id, 0, 10);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().kind, ErrorKind::bad_request);
  ASSERT_TRUE(store.seal(id).ok());
  EXPECT_EQ(store.write(id, 0, pattern(10, 1)).error().kind, ErrorKind::bad_request);
  EXPECT_EQ(store.seal(id).error().kind, ErrorKind::bad_request);
}

// "No such object" travels to callers as unimplemented and names the id.
TEST_F(ObjectStoreTest, UnknownIdsAreReportedAsUnimplementedWithTheirHex) {
  ObjectStore store(options(1 * kMiB));
  ObjectId id = make_id(5, 5);
  std::string expected = "no object " + id.hex() + " in this store";
  auto opened = store.open(id);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().kind, ErrorKind::unimplemented);
  EXPECT_EQ(opened.error().message, expected);
  EXPECT_EQ(store.read(id, 0, 0).error().message, expected);
  EXPECT_EQ(store.write(id, 0, {}).error().message, expected);
  EXPECT_EQ(store.seal(id).error().message, expected);
  EXPECT_EQ(store.open_and_pin(id).error().kind, ErrorKind::unimplemented);
  store.pin(id);  // ignored: the object may have been removed while in use
  store.unpin(id);
  EXPECT_FALSE(store.contains(id));
  EXPECT_FALSE(store.info(id).has_value());
  EXPECT_FALSE(store.remove(id));
}

// Secondary copies can be fetched again, primaries cannot: copies go first (least recently used
// first, with open counting as use), and only then are primaries spilled, never deleted.
TEST_F(ObjectStoreTest, EvictsSecondaryCopiesLeastRecentlyUsedFirstBeforeSpillingPrimaries) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(options(3 * unit));
  ObjectId older_copy = make_id(2, 1), newer_copy = make_id(2, 2), primary = make_id(1, 1);
  put(store, older_copy, pattern(unit, 1), false);
  put(store, newer_copy, pattern(unit, 2), false);
  put(store, primary, pattern(unit, 3), true);
  ASSERT_TRUE(store.open(older_copy).ok());  // now newer_copy is the least recently used copy
  std::string newer_copy_segment = prefix_ + newer_copy.hex();
  ASSERT_TRUE(segment_exists(newer_copy_segment));

  put(store, make_id(1, 10), pattern(unit, 10), true);
  EXPECT_FALSE(store.contains(newer_copy));
  EXPECT_FALSE(segment_exists(newer_copy_segment));
  EXPECT_TRUE(store.contains(older_copy));
  EXPECT_FALSE(store.info(primary)->spilled);
  EXPECT_EQ(store.stats().evictions, 1u);
  EXPECT_EQ(store.stats().spills, 0u);

  put(store, make_id(1, 11), pattern(unit, 11), true);
  EXPECT_FALSE(store.contains(older_copy));
  EXPECT_FALSE(store.info(primary)->spilled);
  EXPECT_EQ(store.stats().evictions, 2u);

  // No copies left: the least recently used primary is spilled, and still known.
  put(store, make_id(1, 12), pattern(unit, 12), true);
  ASSERT_TRUE(store.contains(primary));
  EXPECT_TRUE(store.info(primary)->spilled);
  EXPECT_FALSE(store.info(make_id(1, 10))->spilled);
  EXPECT_TRUE(fs::exists(spill_dir_ / primary.hex()));
  Stats stats = store.stats();
  EXPECT_EQ(stats.spills, 1u);
  EXPECT_EQ(stats.spilled_objects, 1u);
  EXPECT_EQ(stats.spilled_bytes, unit);
  EXPECT_EQ(stats.used_bytes, 3 * unit);
  EXPECT_EQ(stats.objects, 4u);
}

// A spilled object comes back byte for byte, and its spill file is not left behind.
TEST_F(ObjectStoreTest, OpeningASpilledObjectRestoresIdenticalBytesAndDeletesTheSpillFile) {
  const std::uint64_t size = 3 * kMiB;
  ObjectStore store(options(size + size / 2));
  ObjectId first = make_id(1, 1), second = make_id(1, 2);
  auto first_bytes = pattern(size, 1), second_bytes = pattern(size, 2);
  put(store, first, first_bytes, true);
  put(store, second, second_bytes, true);  // spills `first`
  ASSERT_TRUE(store.info(first)->spilled);
  fs::path first_spill_file = spill_dir_ / first.hex();
  ASSERT_TRUE(fs::exists(first_spill_file));
  EXPECT_EQ(fs::file_size(first_spill_file), size);

  auto opened = store.open(first);  // needs room: spills `second`
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(read_through_own_mapping(*opened), first_bytes);
  EXPECT_FALSE(fs::exists(first_spill_file));
  EXPECT_FALSE(store.info(first)->spilled);
  EXPECT_TRUE(store.info(second)->spilled);

  // read() restores too, for transfers of spilled objects.
  EXPECT_EQ(read_all(store, second), second_bytes);
  EXPECT_FALSE(store.info(second)->spilled);
  Stats stats = store.stats();
  EXPECT_EQ(stats.restores, 2u);
  EXPECT_EQ(stats.spills, 3u);
  EXPECT_EQ(stats.used_bytes, size);
}

// Pinned objects are mapped by someone; moving them would break the reader's promise. When only
// pinned objects remain, the caller gets a clear "full" error and nothing is lost.
TEST_F(ObjectStoreTest, PinnedObjectsStayAndAFullStoreSaysSoWithoutLosingAnything) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(options(2 * unit));
  ObjectId primary = make_id(1, 1), copy = make_id(2, 1);
  put(store, primary, pattern(unit, 1), true);
  put(store, copy, pattern(unit, 2), false);
  ASSERT_TRUE(store.open_and_pin(primary).ok());
  store.pin(copy);

  auto refused = store.create(make_id(1, 2), unit, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::overloaded);
  EXPECT_TRUE(refused.error().message.starts_with("object store full:")) << refused.error().message;
  EXPECT_NE(refused.error().message.find(std::to_string(2 * unit)), std::string::npos) << refused.error().message;
  EXPECT_FALSE(store.contains(make_id(1, 2)));
  EXPECT_FALSE(segment_exists(prefix_ + make_id(1, 2).hex()));

  Stats stats = store.stats();
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.spills, 0u);
  EXPECT_EQ(stats.used_bytes, 2 * unit);
  EXPECT_EQ(read_through_own_mapping(store.open(primary).value()), pattern(unit, 1));
  EXPECT_EQ(read_through_own_mapping(store.open(copy).value()), pattern(unit, 2));
  EXPECT_EQ(store.info(primary)->pins, 1u);

  // Unpinned, the copy is evictable again.
  store.unpin(copy);
  ASSERT_TRUE(store.create(make_id(1, 2), unit, true).ok());
  EXPECT_FALSE(store.contains(copy));
  EXPECT_FALSE(store.info(primary)->spilled);
}

// A reader and a transfer may pin the same object; it stays until both let go.
TEST_F(ObjectStoreTest, PinsNest) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(options(unit));
  ObjectId id = make_id(1, 1);
  put(store, id, pattern(unit, 1), true);
  store.pin(id);
  store.pin(id);
  store.unpin(id);
  EXPECT_EQ(store.info(id)->pins, 1u);
  EXPECT_EQ(store.create(make_id(1, 2), unit, true).error().kind, ErrorKind::overloaded);
  store.unpin(id);
  ASSERT_TRUE(store.create(make_id(1, 2), unit, true).ok());
  EXPECT_TRUE(store.info(id)->spilled);
}

// A request that cannot succeed even after making all possible room must not throw away the
// cache on its way to failing.
TEST_F(ObjectStoreTest, AnImpossibleRequestEvictsAndSpillsNothing) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(options(3 * unit));
  put(store, make_id(2, 1), pattern(unit, 1), false);
  put(store, make_id(1, 1), pattern(unit, 2), true);
  ASSERT_TRUE(store.create(make_id(1, 2), unit, true).ok());  // unsealed: cannot be moved

  auto refused = store.create(make_id(1, 3), 3 * unit, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::overloaded);
  Stats stats = store.stats();
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.spills, 0u);
  EXPECT_EQ(stats.used_bytes, 3 * unit);
}

// Without a spill directory primaries have nowhere to go, so they are kept and the store is full.
TEST_F(ObjectStoreTest, WithoutASpillDirectoryPrimariesAreKept) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(StoreOptions{prefix_, unit, {}});
  put(store, make_id(1, 1), pattern(unit, 1), true);
  EXPECT_EQ(store.create(make_id(1, 2), unit, true).error().kind, ErrorKind::overloaded);
  EXPECT_FALSE(store.info(make_id(1, 1))->spilled);
}

// remove is how the owner frees an object, whatever it is doing at the time.
TEST_F(ObjectStoreTest, RemoveDeletesAnObjectInEveryState) {
  const std::uint64_t unit = 10 * kKiB;
  ObjectStore store(options(3 * unit));
  ObjectId unsealed = make_id(1, 1), sealed = make_id(1, 2), pinned = make_id(1, 3), spilled = make_id(1, 4);
  ASSERT_TRUE(store.create(unsealed, unit, true).ok());
  put(store, spilled, pattern(unit, 4), true);
  put(store, sealed, pattern(unit, 2), true);
  put(store, pinned, pattern(unit, 3), true);  // spills `spilled`, the least recently used
  store.pin(pinned);
  ASSERT_TRUE(store.info(spilled)->spilled);

  for (const ObjectId& id : {unsealed, sealed, pinned, spilled}) {
    EXPECT_TRUE(store.remove(id)) << id.hex();
    EXPECT_FALSE(store.contains(id));
    EXPECT_FALSE(segment_exists(prefix_ + id.hex()));
    EXPECT_FALSE(fs::exists(spill_dir_ / id.hex()));
    EXPECT_FALSE(store.remove(id));
  }
  store.unpin(pinned);  // the reader letting go after removal is harmless
  Stats stats = store.stats();
  EXPECT_EQ(stats.used_bytes, 0u);
  EXPECT_EQ(stats.objects, 0u);
  EXPECT_EQ(stats.spilled_objects, 0u);
  EXPECT_EQ(stats.spilled_bytes, 0u);
}

// A daemon that exits must not leak shared memory (it outlives processes) or disk.
TEST_F(ObjectStoreTest, DestructorLeavesNoSegmentsAndNoSpillFiles) {
  const std::uint64_t unit = 10 * kKiB;
  {
    ObjectStore store(options(2 * unit));
    put(store, make_id(1, 1), pattern(unit, 1), true);
    put(store, make_id(1, 2), pattern(unit, 2), true);
    put(store, make_id(1, 3), pattern(unit, 3), true);  // spills one
    ASSERT_TRUE(store.create(make_id(1, 4), 0, false).ok());
    ASSERT_EQ(store.stats().spilled_objects, 1u);
    ASSERT_EQ(shm_entries_with_prefix(prefix_).size(), 3u);
    ASSERT_TRUE(fs::exists(spill_dir_));
  }
  EXPECT_TRUE(shm_entries_with_prefix(prefix_).empty());
  EXPECT_FALSE(fs::exists(spill_dir_));  // the store created it, so it removes it
}

// A spill directory that was there before belongs to someone else and stays.
TEST_F(ObjectStoreTest, DestructorKeepsASpillDirectoryItDidNotCreate) {
  const std::uint64_t unit = 10 * kKiB;
  fs::create_directories(spill_dir_);
  {
    ObjectStore store(options(unit));
    put(store, make_id(1, 1), pattern(unit, 1), true);
    put(store, make_id(1, 2), pattern(unit, 2), true);
    ASSERT_TRUE(fs::exists(spill_dir_ / make_id(1, 1).hex()));
  }
  EXPECT_TRUE(fs::exists(spill_dir_));
  EXPECT_TRUE(fs::is_empty(spill_dir_));
}

// After a daemon was killed, its successor clears the segments it left behind, and only those.
TEST_F(ObjectStoreTest, RemoveLeftoversUnlinksOnlySegmentsWithThePrefix) {
  std::string other_prefix = prefix_ + "other-";
  {
    ObjectStore live(options(1 * kMiB));
    for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(live.create(make_id(1, i), 100, true).ok());
    // A killed daemon's segments are simply names nobody unlinked; made here by hand.
    for (std::uint32_t i = 0; i < 3; ++i) {
      std::string name = prefix_ + "left-" + std::to_string(i);
      int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      ASSERT_GE(fd, 0) << std::strerror(errno);
      ::close(fd);
    }
    EXPECT_EQ(ObjectStore::remove_leftovers(prefix_ + "left-"), 3u);
    EXPECT_EQ(shm_entries_with_prefix(prefix_).size(), 3u);  // the live store's segments are untouched
  }
  int fd = ::shm_open((other_prefix + "x").c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_EQ(ObjectStore::remove_leftovers(prefix_ + "nothing-"), 0u);
  EXPECT_EQ(ObjectStore::remove_leftovers(other_prefix), 1u);
  EXPECT_TRUE(shm_entries_with_prefix(prefix_).empty());
  EXPECT_EQ(ObjectStore::remove_leftovers(""), 0u);  // an empty prefix must not mean "everything"
}

// The daemon calls the store from many threads; its accounting must stay exact: used bytes equal
// the sizes of the resident objects, and every surviving object keeps its bytes.
TEST_F(ObjectStoreTest, ConcurrentUseFromFourThreadsKeepsStatsConsistent) {
  constexpr int kThreads = 4;
  constexpr std::uint32_t kObjectsPerThread = 60;
  constexpr std::uint64_t kLargest = 5000;
  // Each thread holds at most one unmovable (pinned) object at a time, so creates always find
  // room, while the total is far more than fits: eviction and spilling run too.
  ObjectStore store(options(2 * kThreads * kLargest));
  auto size_of = [](std::uint32_t serial) { return 1000 + serial * 37 % (kLargest - 1000); };
  std::atomic<int> failures{0};

  auto worker = [&](std::uint32_t node) {
    for (std::uint32_t serial = 0; serial < kObjectsPerThread; ++serial) {
      ObjectId id = make_id(node, serial);
      auto bytes = pattern(size_of(serial), node * 1000 + serial);
      bool primary = serial % 3 != 0;
      // Pinned from creation to the last read, as a transfer followed by a reader would hold it;
      // unpinned, a sealed secondary copy may be evicted by another thread at any moment.
      bool ok = store.create(id, bytes.size(), primary).ok();
      if (ok) {
        store.pin(id);
        ok = store.write(id, 0, bytes).ok() && store.seal(id).ok() && store.open(id).ok();
        auto back = store.read(id, 0, bytes.size());
        ok = ok && back.ok() && back.value() == bytes;
        store.unpin(id);
      }
      if (!ok) ++failures;
      if (serial % 4 == 0) store.remove(id);
    }
  };
  std::vector<std::thread> threads;
  for (std::uint32_t node = 1; node <= kThreads; ++node) threads.emplace_back(worker, node);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);

  auto check_accounting = [&] {
    std::uint64_t resident = 0, spilled = 0, count = 0;
    for (std::uint32_t node = 1; node <= kThreads; ++node)
      for (std::uint32_t serial = 0; serial < kObjectsPerThread; ++serial) {
        auto info = store.info(make_id(node, serial));
        if (!info) continue;
        ++count;
        EXPECT_EQ(info->pins, 0u);
        (info->spilled ? spilled : resident) += info->size;
      }
    Stats stats = store.stats();
    EXPECT_EQ(stats.used_bytes, resident);
    EXPECT_LE(stats.used_bytes, stats.capacity_bytes);
    EXPECT_EQ(stats.spilled_bytes, spilled);
    EXPECT_EQ(stats.objects, count);
    EXPECT_EQ(shm_entries_with_prefix(prefix_).size(), count - stats.spilled_objects);
  };
  check_accounting();
  Stats stats = store.stats();
  EXPECT_GT(stats.evictions, 0u);
  EXPECT_GT(stats.spills, 0u);

  // Every primary survived (evicted ones were secondary) and still has its bytes.
  for (std::uint32_t node = 1; node <= kThreads; ++node)
    for (std::uint32_t serial = 0; serial < kObjectsPerThread; ++serial) {
      if (serial % 4 == 0 || serial % 3 == 0) continue;
      ObjectId id = make_id(node, serial);
      ASSERT_TRUE(store.contains(id)) << id.hex();
      EXPECT_EQ(read_all(store, id), pattern(size_of(serial), node * 1000 + serial)) << id.hex();
    }
  check_accounting();
}

}  // namespace
}  // namespace tether::store
