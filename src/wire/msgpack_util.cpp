// msgpack helpers for core-built bodies.
#include "wire/msgpack_util.hpp"

namespace tether::wire {

Result<msgpack::object_handle> unpack_body(std::span<const std::byte> body) {
  // Every element takes at least one byte, so no honest count exceeds the body size; the limits
  // stop a tiny frame from declaring a huge container that would be allocated up front.
  std::size_t n = body.size();
  msgpack::unpack_limit limit(n, n / 2, n, n, n, 64);
  try {
    std::size_t offset = 0;
    return msgpack::unpack(reinterpret_cast<const char*>(body.data()), body.size(), offset, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    return Error{ErrorKind::bad_request, std::string("malformed msgpack body: ") + e.what()};
  }
}

std::vector<std::byte> pack_error_body(const ErrorBody& error) {
  std::vector<std::byte> out;
  ByteSink sink{&out};
  Packer packer(sink);
  packer.pack_map(5);
  pack_str(packer, "kind");
  pack_str(packer, to_string(error.kind));
  pack_str(packer, "message");
  pack_str(packer, error.message);
  pack_str(packer, "type");
  pack_str(packer, error.type);
  pack_str(packer, "args");
  packer.pack_array(1);
  pack_str(packer, error.message);
  pack_str(packer, "traceback");
  pack_str(packer, error.traceback);
  return out;
}

OutFrame credit_frame(std::uint64_t request_id, std::uint64_t count) {
  OutFrame credit;
  credit.header.type = MessageType::credit;
  credit.header.request_id = request_id;
  credit.header.encoding = Encoding::msgpack;
  ByteSink sink{&credit.payload};
  Packer packer(sink);
  packer.pack_uint64(count);
  return credit;
}

const msgpack::object* map_get(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key)
      return &kv.val;
  }
  return nullptr;
}

namespace {
std::string string_field(const msgpack::object& map, std::string_view key) {
  const auto* value = map_get(map, key);
  if (!value || value->type != msgpack::type::STR) return {};
  return std::string(value->via.str.ptr, value->via.str.size);
}
}  // namespace

ErrorBody unpack_error_body(std::span<const std::byte> body) {
  ErrorBody out;
  auto handle = unpack_body(body);
  if (!handle) {
    out.kind = ErrorKind::bad_request;
    out.message = "undecodable error body from peer";
    return out;
  }
  const auto& map = handle->get();
  out.kind = error_kind_from_string(string_field(map, "kind")).value_or(ErrorKind::failed);
  out.message = string_field(map, "message");
  out.type = string_field(map, "type");
  out.traceback = string_field(map, "traceback");
  return out;
}

}  // namespace tether::wire
