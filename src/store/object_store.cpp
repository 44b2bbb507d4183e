// ObjectStore: bookkeeping of a node's objects, making room (eviction, spilling), and restoring.
#include "store/object_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

namespace tether::store {
namespace {

namespace fs = std::filesystem;

Error no_such_object(const ObjectId& id) {
  return Error{ErrorKind::unimplemented, "no object " + id.hex() + " in this store"};
}

Error bad_request(const ObjectId& id, const std::string& problem) {
  return Error{ErrorKind::bad_request, "object " + id.hex() + " " + problem};
}

// Written so that offset + length cannot overflow.
Status check_range(const ObjectId& id, std::uint64_t object_size, std::uint64_t offset, std::uint64_t length) {
  if (offset <= object_size && length <= object_size - offset) return ok_status();
  return bad_request(id, "has " + std::to_string(object_size) + " bytes; range at offset " + std::to_string(offset) +
                             " of " + std::to_string(length) + " bytes is outside it");
}

Error file_error(const char* what, const fs::path& path, int error_number) {
  return Error{ErrorKind::failed, std::string(what) + " " + path.string() + ": " + std::strerror(error_number)};
}

// Closes on every path; `release` hands the descriptor over so close() can be checked.
struct OpenFile {
  int fd;
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

Status write_file(const fs::path& path, std::span<const std::byte> bytes) {
  OpenFile file{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (file.fd < 0) return file_error("open", path, errno);
  while (!bytes.empty()) {
    ssize_t written = ::write(file.fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) return file_error("write", path, errno);
    bytes = bytes.subspan(static_cast<std::size_t>(written));
  }
  // Some file systems report a failed write only at close.
  if (::close(file.release()) != 0) return file_error("close", path, errno);
  return ok_status();
}

// Fills `bytes` exactly; a file of another size is not the object that was spilled.
Status read_file(const fs::path& path, std::span<std::byte> bytes) {
  OpenFile file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) return file_error("open", path, errno);
  struct stat status {};
  if (::fstat(file.fd, &status) != 0) return file_error("stat", path, errno);
  if (static_cast<std::uint64_t>(status.st_size) != bytes.size())
    return Error{ErrorKind::failed, "spill file " + path.string() + " has " + std::to_string(status.st_size) +
                                        " bytes, expected " + std::to_string(bytes.size())};
  while (!bytes.empty()) {
    ssize_t got = ::read(file.fd, bytes.data(), bytes.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return file_error("read", path, errno);
    if (got == 0) return Error{ErrorKind::failed, "spill file " + path.string() + " ended early"};
    bytes = bytes.subspan(static_cast<std::size_t>(got));
  }
  return ok_status();
}

void remove_file_quietly(const fs::path& path) {
  std::error_code ignored;
  fs::remove(path, ignored);
}

bool is_valid_prefix(const std::string& prefix) {
  return prefix.size() > 1 && prefix.front() == '/' && prefix.find('/', 1) == std::string::npos;
}

}  // namespace

ObjectStore::ObjectStore(StoreOptions options) : options_(std::move(options)) {
  TETHER_ASSERT(is_valid_prefix(options_.prefix), "a store prefix is '/' followed by a name without '/'");
}

ObjectStore::~ObjectStore() {
  std::lock_guard lock(mutex_);
  for (const auto& [id, entry] : objects_)
    if (entry.spilled()) remove_file_quietly(spill_path(id));
  lru_.clear();
  objects_.clear();  // each ShmSegment unlinks its name
  if (created_spill_dir_) {
    std::error_code ignored;
    fs::remove(options_.spill_dir, ignored);  // removes only an empty directory
  }
}

Result<SegmentInfo> ObjectStore::create(const ObjectId& id, std::uint64_t size, bool primary) {
  std::lock_guard lock(mutex_);
  if (objects_.contains(id)) return bad_request(id, "already exists");
  if (Status room = make_room_locked(size); !room) return room.error();
  auto segment = ShmSegment::create(segment_name(id), size);
  if (!segment) return segment.error();
  SegmentInfo created{segment->name(), size};
  Entry entry;
  entry.size = size;
  entry.primary = primary;
  entry.segment.emplace(std::move(segment).value());
  objects_.emplace(id, std::move(entry));
  used_bytes_ += size;
  return created;
}

Status ObjectStore::write(const ObjectId& id, std::uint64_t offset, std::span<const std::byte> data) {
  std::shared_ptr<ShmMapping> mapping;
  {
    std::lock_guard lock(mutex_);
    Entry* entry = find_locked(id);
    if (entry == nullptr) return no_such_object(id);
    if (entry->sealed) return bad_request(id, "is sealed and can no longer be written");
    if (Status in_range = check_range(id, entry->size, offset, data.size()); !in_range) return in_range;
    mapping = entry->segment->mapping();
  }
  // Copied outside the lock so transfers into different objects run in parallel.
  if (!data.empty()) std::memcpy(mapping->bytes().data() + offset, data.data(), data.size());
  return ok_status();
}

Status ObjectStore::seal(const ObjectId& id) {
  std::lock_guard lock(mutex_);
  Entry* entry = find_locked(id);
  if (entry == nullptr) return no_such_object(id);
  if (entry->sealed) return bad_request(id, "is already sealed");
  entry->sealed = true;
  mark_used_locked(id, *entry);
  return ok_status();
}

Result<SegmentInfo> ObjectStore::open(const ObjectId& id) { return open_object(id, OpenMode::plain); }

Result<SegmentInfo> ObjectStore::open_and_pin(const ObjectId& id) { return open_object(id, OpenMode::pin); }

Result<SegmentInfo> ObjectStore::open_object(const ObjectId& id, OpenMode mode) {
  std::lock_guard lock(mutex_);
  auto found = find_readable_locked(id);
  if (!found) return found.error();
  Entry& entry = **found;
  if (entry.spilled())
    if (Status restored = restore_locked(id, entry); !restored) return restored.error();
  mark_used_locked(id, entry);
  if (mode == OpenMode::pin) ++entry.pins;
  return SegmentInfo{entry.segment->name(), entry.size};
}

Result<std::vector<std::byte>> ObjectStore::read(const ObjectId& id, std::uint64_t offset, std::uint64_t length) {
  std::shared_ptr<ShmMapping> mapping;
  {
    std::lock_guard lock(mutex_);
    auto found = find_readable_locked(id);
    if (!found) return found.error();
    Entry& entry = **found;
    if (Status in_range = check_range(id, entry.size, offset, length); !in_range) return in_range.error();
    if (entry.spilled())
      if (Status restored = restore_locked(id, entry); !restored) return restored.error();
    mark_used_locked(id, entry);
    mapping = entry.segment->mapping();
  }
  // Sealed bytes never change, and the mapping outlives a concurrent spill or remove, so the
  // copy needs no lock.
  std::vector<std::byte> bytes(static_cast<std::size_t>(length));
  if (length > 0) std::memcpy(bytes.data(), mapping->bytes().data() + offset, bytes.size());
  return bytes;
}

void ObjectStore::pin(const ObjectId& id) {
  std::lock_guard lock(mutex_);
  if (Entry* entry = find_locked(id)) ++entry->pins;
}

void ObjectStore::unpin(const ObjectId& id) {
  std::lock_guard lock(mutex_);
  Entry* entry = find_locked(id);
  if (entry == nullptr) return;
  TETHER_ASSERT(entry->pins > 0, "unpin without a matching pin");
  --entry->pins;
}

bool ObjectStore::remove(const ObjectId& id) {
  std::lock_guard lock(mutex_);
  Entry* entry = find_locked(id);
  if (entry == nullptr) return false;
  if (entry->spilled())
    remove_file_quietly(spill_path(id));
  else
    release_memory_locked(*entry);
  objects_.erase(id);
  return true;
}

bool ObjectStore::contains(const ObjectId& id) const {
  std::lock_guard lock(mutex_);
  return objects_.contains(id);
}

std::optional<ObjectInfo> ObjectStore::info(const ObjectId& id) const {
  std::lock_guard lock(mutex_);
  auto found = objects_.find(id);
  if (found == objects_.end()) return std::nullopt;
  const Entry& entry = found->second;
  return ObjectInfo{entry.size, entry.sealed, entry.primary, entry.spilled(), entry.pins};
}

Stats ObjectStore::stats() const {
  std::lock_guard lock(mutex_);
  Stats stats;
  stats.capacity_bytes = options_.capacity_bytes;
  stats.used_bytes = used_bytes_;
  stats.objects = objects_.size();
  for (const auto& [id, entry] : objects_) {
    if (!entry.spilled()) continue;
    ++stats.spilled_objects;
    stats.spilled_bytes += entry.size;
  }
  stats.evictions = evictions_;
  stats.spills = spills_;
  stats.restores = restores_;
  return stats;
}

std::size_t ObjectStore::remove_leftovers(const std::string& prefix) { return unlink_segments_with_prefix(prefix); }

ObjectStore::Entry* ObjectStore::find_locked(const ObjectId& id) {
  auto found = objects_.find(id);
  return found == objects_.end() ? nullptr : &found->second;
}

Result<ObjectStore::Entry*> ObjectStore::find_readable_locked(const ObjectId& id) {
  Entry* entry = find_locked(id);
  if (entry == nullptr) return no_such_object(id);
  if (!entry->sealed) return bad_request(id, "is not sealed yet");
  return entry;
}

Status ObjectStore::make_room_locked(std::uint64_t needed) {
  // used_bytes_ <= capacity always holds, so these subtractions cannot wrap.
  auto has_room = [&] { return needed <= options_.capacity_bytes - used_bytes_; };
  if (has_room()) return ok_status();

  std::vector<ObjectId> secondaries = reclaim_candidates_locked(false);
  std::vector<ObjectId> primaries;
  if (!options_.spill_dir.empty()) primaries = reclaim_candidates_locked(true);
  std::uint64_t reclaimable = 0;
  for (const auto* candidates : {&secondaries, &primaries})
    for (const ObjectId& id : *candidates) reclaimable += objects_.at(id).size;
  // A request that cannot succeed must not throw away other objects on the way to failing.
  if (needed > options_.capacity_bytes - (used_bytes_ - reclaimable)) return store_full_locked(needed, "");

  for (const ObjectId& id : secondaries) {
    if (has_room()) break;
    evict_locked(id);
  }
  std::string spill_failure;
  for (const ObjectId& id : primaries) {
    if (has_room()) break;
    Status spilled = spill_locked(id, objects_.at(id));
    if (!spilled && spill_failure.empty()) spill_failure = spilled.error().message;
  }
  if (has_room()) return ok_status();
  return store_full_locked(needed, spill_failure);
}

// Sealed, resident, unpinned objects of one kind, least recently used first. Empty objects are
// left out: dropping them frees nothing.
std::vector<ObjectId> ObjectStore::reclaim_candidates_locked(bool primary) const {
  std::vector<ObjectId> candidates;
  for (const ObjectId& id : lru_) {
    const Entry& entry = objects_.at(id);
    if (entry.primary == primary && entry.pins == 0 && entry.size > 0) candidates.push_back(id);
  }
  return candidates;
}

Status ObjectStore::spill_locked(const ObjectId& id, Entry& entry) {
  if (Status dir = ensure_spill_dir_locked(); !dir) return dir;
  fs::path path = spill_path(id);
  if (Status saved = write_file(path, entry.segment->mapping()->bytes()); !saved) {
    remove_file_quietly(path);
    return saved;
  }
  release_memory_locked(entry);
  ++spills_;
  return ok_status();
}

Status ObjectStore::restore_locked(const ObjectId& id, Entry& entry) {
  // The object being restored is spilled, hence not a candidate for making this room.
  if (Status room = make_room_locked(entry.size); !room) return room;
  auto segment = ShmSegment::create(segment_name(id), entry.size);
  if (!segment) return segment.error();
  fs::path path = spill_path(id);
  // On failure the new segment is unlinked again and the object stays spilled.
  if (Status loaded = read_file(path, segment->mapping()->bytes()); !loaded) return loaded;
  entry.segment.emplace(std::move(segment).value());
  used_bytes_ += entry.size;
  remove_file_quietly(path);
  ++restores_;
  return ok_status();
}

void ObjectStore::evict_locked(const ObjectId& id) {
  release_memory_locked(objects_.at(id));
  objects_.erase(id);
  ++evictions_;
}

// Unlinks the segment (readers keep their mappings) and gives its bytes back to the capacity.
void ObjectStore::release_memory_locked(Entry& entry) {
  if (entry.lru_position) lru_.erase(*entry.lru_position);
  entry.lru_position.reset();
  entry.segment.reset();
  used_bytes_ -= entry.size;
}

void ObjectStore::mark_used_locked(const ObjectId& id, Entry& entry) {
  if (entry.lru_position) lru_.erase(*entry.lru_position);
  entry.lru_position = lru_.insert(lru_.end(), id);
}

Status ObjectStore::ensure_spill_dir_locked() {
  if (options_.spill_dir.empty()) return Error{ErrorKind::failed, "no spill directory configured"};
  std::error_code error;
  bool created = fs::create_directories(options_.spill_dir, error);
  if (error)
    return Error{ErrorKind::failed,
                 "cannot create spill directory " + options_.spill_dir.string() + ": " + error.message()};
  created_spill_dir_ = created_spill_dir_ || created;
  return ok_status();
}

Error ObjectStore::store_full_locked(std::uint64_t needed, const std::string& spill_failure) const {
  std::uint64_t held = 0;  // bytes that cannot be reclaimed: pinned or still being written
  for (const auto& [id, entry] : objects_)
    if (!entry.spilled() && (entry.pins > 0 || !entry.sealed)) held += entry.size;
  std::string message = "object store full: need " + std::to_string(needed) + " bytes, capacity " +
                        std::to_string(options_.capacity_bytes) + ", used " + std::to_string(used_bytes_) +
                        " (" + std::to_string(held) + " pinned or unsealed)";
  if (!spill_failure.empty()) message += "; spilling failed: " + spill_failure;
  return Error{ErrorKind::overloaded, message};
}

}  // namespace tether::store
