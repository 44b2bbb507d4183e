// ObjectId: the 16-byte name of an object in the cluster; its first 4 bytes name the owning node.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace tether::store {

// A plain value (trivially copyable), so it can be copied into frames and shared memory as bytes.
struct ObjectId {
  static constexpr std::size_t kSize = 16;
  std::array<std::uint8_t, kSize> bytes{};

  // 32 lowercase hex characters; also the object's name in /dev/shm and in the spill directory.
  std::string hex() const;
  // nullopt unless exactly 16 bytes.
  static std::optional<ObjectId> from_bytes(std::span<const std::uint8_t> bytes);
  // nullopt unless exactly 32 hex digits (either case).
  static std::optional<ObjectId> from_hex(std::string_view text);
  // The node that owns the object: the first 4 bytes, big-endian.
  std::uint32_t node() const;

  friend bool operator==(const ObjectId&, const ObjectId&) = default;
  friend std::strong_ordering operator<=>(const ObjectId&, const ObjectId&) = default;
};

static_assert(std::is_trivially_copyable_v<ObjectId>);
static_assert(sizeof(ObjectId) == ObjectId::kSize);

}  // namespace tether::store

template <>
struct std::hash<tether::store::ObjectId> {
  std::size_t operator()(const tether::store::ObjectId& id) const noexcept;
};
