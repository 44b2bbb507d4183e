// A named POSIX shared-memory segment created by this process, and this process's mapping of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "tether/error.hpp"

namespace tether::store {

// This process's view of a segment's bytes; unmapped when the last holder lets go. Shared because
// a copy into or out of an object runs outside the store's lock and must survive the object being
// removed or spilled meanwhile (the segment's name goes away at once, the bytes when the copy ends).
class ShmMapping {
 public:
  ShmMapping(void* address, std::size_t size) : address_(address), size_(size) {}
  ~ShmMapping();
  ShmMapping(const ShmMapping&) = delete;
  ShmMapping& operator=(const ShmMapping&) = delete;

  std::span<std::byte> bytes() const { return {static_cast<std::byte*>(address_), size_}; }

 private:
  void* address_;  // null for a 0-byte segment, which is never mapped
  std::size_t size_;
};

// Owns the segment's name: destroying it unlinks the name, so no segment outlives its owner.
// Other processes that have it mapped keep their mapping.
class ShmSegment {
 public:
  // shm_open(O_CREAT | O_EXCL, 0600), sized and backed by memory now (so a full /dev/shm fails
  // here, not with SIGBUS at the first write), then mapped read-write. `name` starts with '/'.
  // A full /dev/shm gives ErrorKind::overloaded, anything else ErrorKind::failed.
  static Result<ShmSegment> create(std::string name, std::uint64_t size);

  ShmSegment(ShmSegment&& other) noexcept
      : name_(std::exchange(other.name_, {})), mapping_(std::move(other.mapping_)) {}
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ~ShmSegment();

  const std::string& name() const { return name_; }
  std::uint64_t size() const { return mapping_->bytes().size(); }
  const std::shared_ptr<ShmMapping>& mapping() const { return mapping_; }

 private:
  ShmSegment(std::string name, std::shared_ptr<ShmMapping> mapping)
      : name_(std::move(name)), mapping_(std::move(mapping)) {}
  void unlink_name();

  std::string name_;  // empty once moved from
  std::shared_ptr<ShmMapping> mapping_;
};

// Unlinks every segment whose name (without the leading '/') starts with `prefix` (without its
// leading '/'); returns how many. For segments left behind by a process that was killed. An empty
// prefix matches nothing rather than everything.
std::size_t unlink_segments_with_prefix(const std::string& prefix);

}  // namespace tether::store
