// ObjectStore: a node's objects, each in its own POSIX shared-memory segment, with LRU eviction of
// secondary copies and spilling of primary copies to disk when memory runs short.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/object_id.hpp"
#include "store/shm_segment.hpp"
#include "tether/error.hpp"

namespace tether::store {

struct StoreOptions {
  // Segment names are prefix + id.hex(); a prefix like "/tether-<session>-" (one leading '/', no
  // other) keeps sessions apart and lets remove_leftovers find a killed daemon's segments.
  std::string prefix;
  // The most bytes resident in shared memory at once (spilled objects do not count).
  std::uint64_t capacity_bytes = 0;
  // Where primary objects are spilled, created on first use. Empty: primaries are never spilled.
  std::filesystem::path spill_dir;
};

// Where a resident object lives: another process maps it with shm_open(shm_name) + mmap(size).
struct SegmentInfo {
  std::string shm_name;
  std::uint64_t size = 0;
};

struct ObjectInfo {
  std::uint64_t size = 0;
  bool sealed = false;
  bool primary = false;
  bool spilled = false;
  std::uint32_t pins = 0;
};

struct Stats {
  std::uint64_t capacity_bytes = 0;
  std::uint64_t used_bytes = 0;       // bytes resident in shared memory, sealed or not
  std::uint64_t objects = 0;          // every known object, spilled ones included
  std::uint64_t spilled_objects = 0;
  std::uint64_t spilled_bytes = 0;
  std::uint64_t evictions = 0;        // secondary copies deleted to make room, since start
  std::uint64_t spills = 0;           // primary copies written to disk to make room, since start
  std::uint64_t restores = 0;         // spilled objects brought back into memory, since start
};

// One per node daemon; every method may be called from any thread.
//
// Life of an object: create (writable, unsealed) → write chunks → seal (immutable, readable) →
// open/read → remove. A primary object is this node's own copy and is never deleted to make room,
// only spilled; a secondary object is a copy of another node's object, which can be fetched again,
// so it is evicted. Pinned objects (mapped by a reader, or being transferred) stay in memory.
//
// Making room for `n` bytes: first secondary copies are evicted, then primary copies are
// spilled, each least recently used first, skipping pinned and unsealed objects. When all of them
// together could not free enough, none is touched and the request fails with
// ErrorKind::overloaded ("object store full: ..."). A spill that fails (disk full) leaves its
// object resident, and its reason is added to that error if room is still short.
//
// Locking: one mutex guards the bookkeeping; no callback runs under it. Spilling and restoring do
// their file I/O under it (the room they make must be known before the caller proceeds), while
// the bytes of write() and read() are copied outside it.
class ObjectStore {
 public:
  explicit ObjectStore(StoreOptions options);
  // Unlinks every segment and deletes every spill file this store made (and the spill directory,
  // if the store created it and it is now empty). Readers' existing mappings stay valid.
  ~ObjectStore();
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // Reserves room and creates the segment, writable and unsealed. Size 0 is allowed.
  // Errors: the id exists (bad_request); no room (overloaded); the system refused (failed).
  Result<SegmentInfo> create(const ObjectId& id, std::uint64_t size, bool primary);
  // Copies `data` into an unsealed object at `offset`, for chunked transfers. Chunks may be
  // written from several threads at once; seal only after every write has returned.
  Status write(const ObjectId& id, std::uint64_t offset, std::span<const std::byte> data);
  // Makes the object immutable and readable.
  Status seal(const ObjectId& id);

  // Returns a sealed object's segment, restoring it from disk first if it was spilled, and marks
  // it recently used. The segment may be spilled again once this returns unless it is pinned:
  // open_and_pin does both under one lock, so a reader cannot lose the object in between.
  Result<SegmentInfo> open(const ObjectId& id);
  Result<SegmentInfo> open_and_pin(const ObjectId& id);
  // Copies [offset, offset + length) of a sealed object, restoring it if spilled; for sending an
  // object to another node in chunks.
  Result<std::vector<std::byte>> read(const ObjectId& id, std::uint64_t offset, std::uint64_t length);

  // Pins nest; a pinned object is neither evicted nor spilled. Unknown ids are ignored (the
  // object may have been removed while in use); unpinning an object with no pins is a bug.
  void pin(const ObjectId& id);
  void unpin(const ObjectId& id);

  // Deletes the object whatever its state; returns whether it existed.
  bool remove(const ObjectId& id);

  bool contains(const ObjectId& id) const;
  std::optional<ObjectInfo> info(const ObjectId& id) const;
  Stats stats() const;

  // Unlinks every /dev/shm segment whose name starts with `prefix`, e.g. after a daemon of the
  // same session was killed; returns how many.
  static std::size_t remove_leftovers(const std::string& prefix);

 private:
  struct Entry {
    std::uint64_t size = 0;
    bool primary = false;
    bool sealed = false;
    std::uint32_t pins = 0;
    std::optional<ShmSegment> segment;  // empty while spilled
    // Position in lru_, present exactly while the object is sealed and resident.
    std::optional<std::list<ObjectId>::iterator> lru_position;

    bool spilled() const { return !segment.has_value(); }
  };

  enum class OpenMode { plain, pin };
  Result<SegmentInfo> open_object(const ObjectId& id, OpenMode mode);

  // Everything below runs with mutex_ held.
  Entry* find_locked(const ObjectId& id);
  Result<Entry*> find_readable_locked(const ObjectId& id);
  Status make_room_locked(std::uint64_t needed);
  std::vector<ObjectId> reclaim_candidates_locked(bool primary) const;
  Status spill_locked(const ObjectId& id, Entry& entry);
  Status restore_locked(const ObjectId& id, Entry& entry);
  void evict_locked(const ObjectId& id);
  void release_memory_locked(Entry& entry);
  void mark_used_locked(const ObjectId& id, Entry& entry);
  Status ensure_spill_dir_locked();
  Error store_full_locked(std::uint64_t needed, const std::string& spill_failure) const;
  std::string segment_name(const ObjectId& id) const { return options_.prefix + id.hex(); }
  std::filesystem::path spill_path(const ObjectId& id) const { return options_.spill_dir / id.hex(); }

  const StoreOptions options_;
  mutable std::mutex mutex_;
  std::unordered_map<ObjectId, Entry> objects_;
  std::list<ObjectId> lru_;  // sealed resident objects, least recently used first
  std::uint64_t used_bytes_ = 0;
  std::uint64_t evictions_ = 0;
  std::uint64_t spills_ = 0;
  std::uint64_t restores_ = 0;
  bool created_spill_dir_ = false;
};

}  // namespace tether::store
