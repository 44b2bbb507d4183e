// POSIX shared-memory segments: creation, mapping, unlinking, and cleaning up leftovers.
#include "store/shm_segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace tether::store {
namespace {

// Where Linux keeps POSIX shared memory; listing it is the only way to find segments by prefix.
const std::filesystem::path kShmDirectory = "/dev/shm";

Error system_error(const std::string& what, const std::string& name, int error_number) {
  bool out_of_memory = error_number == ENOSPC || error_number == ENOMEM;
  return Error{out_of_memory ? ErrorKind::overloaded : ErrorKind::failed,
               what + " " + name + ": " + std::strerror(error_number)};
}

// Closes the descriptor on every path; the mapping does not need it once made.
struct FileDescriptor {
  int fd;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

// tmpfs allocates pages lazily, when the writer first touches them. Checking the free space now
// turns "/dev/shm is full" into an error here rather than a SIGBUS in the writer. (Reserving the
// pages with posix_fallocate would be exact, but it zeroes every page on the daemon's one thread:
// half a second per GB during which no other client is served. The writer zeroes them anyway.)
int reserve_memory(int fd, std::uint64_t size) {
  if (size == 0) return 0;
  struct statvfs fs {};
  if (::fstatvfs(fd, &fs) != 0) return errno;
  std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  return free_bytes >= size ? 0 : ENOSPC;
}

}  // namespace

ShmMapping::~ShmMapping() {
  if (address_ != nullptr) ::munmap(address_, size_);
}

Result<ShmSegment> ShmSegment::create(std::string name, std::uint64_t size) {
  FileDescriptor file{::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600)};
  if (file.fd < 0) return system_error("shm_open", name, errno);
  // From here on the name exists, so every failure unlinks it again.
  ShmSegment segment(std::move(name), std::make_shared<ShmMapping>(nullptr, 0));
  if (::ftruncate(file.fd, static_cast<off_t>(size)) != 0) return system_error("ftruncate", segment.name_, errno);
  if (int error_number = reserve_memory(file.fd, size); error_number != 0)
    return system_error("reserving shared memory", segment.name_, error_number);
  // mmap refuses 0 bytes, and a 0-byte object has nothing to map.
  if (size > 0) {
    void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd, 0);
    if (address == MAP_FAILED) return system_error("mmap", segment.name_, errno);
    segment.mapping_ = std::make_shared<ShmMapping>(address, static_cast<std::size_t>(size));
  }
  return segment;
}

ShmSegment& ShmSegment::operator=(ShmSegment&& other) noexcept {
  if (this != &other) {
    unlink_name();
    name_ = std::exchange(other.name_, {});
    mapping_ = std::move(other.mapping_);
  }
  return *this;
}

ShmSegment::~ShmSegment() { unlink_name(); }

void ShmSegment::unlink_name() {
  if (!name_.empty()) ::shm_unlink(name_.c_str());
  name_.clear();
}

std::size_t unlink_segments_with_prefix(const std::string& prefix) {
  std::string bare_prefix = prefix.starts_with('/') ? prefix.substr(1) : prefix;
  if (bare_prefix.empty()) return 0;
  std::error_code ignored;
  std::size_t unlinked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kShmDirectory, ignored)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(bare_prefix) && ::shm_unlink(("/" + name).c_str()) == 0) ++unlinked;
  }
  return unlinked;
}

}  // namespace tether::store
