// ObjectId conversions (hex, bytes) and its hash.
#include "store/object_id.hpp"

#include <algorithm>
#include <cstring>

namespace tether::store {
namespace {

constexpr std::string_view kHexDigits = "0123456789abcdef";

std::optional<std::uint8_t> hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<std::uint8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<std::uint8_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<std::uint8_t>(c - 'A' + 10);
  return std::nullopt;
}

}  // namespace

std::string ObjectId::hex() const {
  std::string text;
  text.reserve(2 * kSize);
  for (std::uint8_t byte : bytes) {
    text.push_back(kHexDigits[byte >> 4]);
    text.push_back(kHexDigits[byte & 0x0f]);
  }
  return text;
}

std::optional<ObjectId> ObjectId::from_bytes(std::span<const std::uint8_t> source) {
  if (source.size() != kSize) return std::nullopt;
  ObjectId id;
  std::copy(source.begin(), source.end(), id.bytes.begin());
  return id;
}

std::optional<ObjectId> ObjectId::from_hex(std::string_view text) {
  if (text.size() != 2 * kSize) return std::nullopt;
  ObjectId id;
  for (std::size_t i = 0; i < kSize; ++i) {
    auto high = hex_digit_value(text[2 * i]);
    auto low = hex_digit_value(text[2 * i + 1]);
    if (!high || !low) return std::nullopt;
    id.bytes[i] = static_cast<std::uint8_t>(*high << 4 | *low);
  }
  return id;
}

std::uint32_t ObjectId::node() const {
  return std::uint32_t{bytes[0]} << 24 | std::uint32_t{bytes[1]} << 16 | std::uint32_t{bytes[2]} << 8 |
         std::uint32_t{bytes[3]};
}

}  // namespace tether::store

// Ids of one node share their first bytes, so every byte takes part: the two halves are mixed
// (splitmix64 finalizer) rather than one half being used as is.
std::size_t std::hash<tether::store::ObjectId>::operator()(const tether::store::ObjectId& id) const noexcept {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  std::memcpy(&high, id.bytes.data(), sizeof high);
  std::memcpy(&low, id.bytes.data() + sizeof high, sizeof low);
  std::uint64_t mixed = high * 0x9e3779b97f4a7c15ULL ^ low;
  mixed ^= mixed >> 30;
  mixed *= 0xbf58476d1ce4e5b9ULL;
  mixed ^= mixed >> 27;
  mixed *= 0x94d049bb133111ebULL;
  mixed ^= mixed >> 31;
  return static_cast<std::size_t>(mixed);
}
