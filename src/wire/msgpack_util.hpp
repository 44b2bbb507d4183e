// Small msgpack helpers for the bodies the C++ core builds and reads itself (handshake, errors,
// built-in services). Python values are encoded by src/python/pycodec instead.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "tether/error.hpp"
#include "wire/frame.hpp"

namespace tether::wire {

// Adapts a byte vector to msgpack's packer interface.
struct ByteSink {
  std::vector<std::byte>* out;
  void write(const char* data, std::size_t size) {
    auto* p = reinterpret_cast<const std::byte*>(data);
    out->insert(out->end(), p, p + size);
  }
};
using Packer = msgpack::packer<ByteSink>;

inline void pack_str(Packer& packer, std::string_view text) {
  packer.pack_str(static_cast<std::uint32_t>(text.size()));
  packer.pack_str_body(text.data(), static_cast<std::uint32_t>(text.size()));
}

// Unpacks a whole body; a malformed body is an expected failure, not an exception.
Result<msgpack::object_handle> unpack_body(std::span<const std::byte> body);

// The ERROR body: {"kind", "message", "type", "args", "traceback"}.
struct ErrorBody {
  ErrorKind kind = ErrorKind::failed;
  std::string message;
  std::string type;
  std::string traceback;
};
std::vector<std::byte> pack_error_body(const ErrorBody& error);
ErrorBody unpack_error_body(std::span<const std::byte> body);

// CREDIT(request_id) granting `count` more stream items (docs/protocol.md section 5).
OutFrame credit_frame(std::uint64_t request_id, std::uint64_t count);

// Looks a key up in a msgpack map object; nullptr when absent or not a map.
const msgpack::object* map_get(const msgpack::object& map, std::string_view key);

}  // namespace tether::wire
