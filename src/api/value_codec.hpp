// tether::Value to and from the msgpack tether profile (docs/protocol.md 8.1), with large bytes as
// out-of-band segments and object references exported or resolved per connection.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "api/refs.hpp"
#include "wire/frame.hpp"

namespace tether::api {

// Where servants passed as callbacks are exported while a value is encoded for one connection.
class ExportTable {
 public:
  virtual ~ExportTable() = default;
  virtual std::uint64_t export_servant(const std::shared_ptr<Servant>& servant) = 0;
};

struct EncodeContext {
  ExportTable* exports = nullptr;  // none: a callback cannot be sent
  const rpc::Connection* connection = nullptr;  // the connection the value goes to
};

struct DecodeContext {
  std::span<const std::span<const std::byte>> segments;  // of the frame being decoded
  std::shared_ptr<const void> owner;                     // keeps received bytes' memory alive
  std::weak_ptr<rpc::Connection> connection;             // callbacks the peer exports live here
  std::weak_ptr<detail::ClientCore> home;                // makes proxies of URI references
};

// Appends the encoding of `value` to `frame` (payload, and segments for bytes of 64 KiB or more).
// Fails with bad_request for what cannot travel (nesting over 200 levels, a callback of another
// connection); the frame is then unusable.
Status encode_value(const Value& value, wire::OutFrame& frame, const EncodeContext& context);
// Encodes [args, kwargs] (kwargs nil when empty), the body of a REQUEST.
Status encode_request_body(const Value::Items& args, const Value::Entries& kwargs, wire::OutFrame& frame,
                           const EncodeContext& context);
// Decodes one whole payload; bytes left over, bounds broken or malformed data fail with bad_request.
Result<Value> decode_value(std::span<const std::byte> data, const DecodeContext& context);
// Decodes a received frame's body, its segments resolved; received bytes keep the frame alive.
Result<Value> decode_frame_body(wire::Frame&& frame, DecodeContext context);

}  // namespace tether::api
