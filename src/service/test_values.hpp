// For tests of C++ services: argument values packed as a Python client packs them, and REQUEST
// frames built from them.
#pragma once

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "rpc/connection.hpp"
#include "wire/msgpack_util.hpp"

namespace tether::service::testing {

using Value = std::function<void(wire::Packer&)>;
using Values = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;

inline Value integer(std::int64_t v) {
  return [v](wire::Packer& p) { p.pack_int64(v); };
}
// Always a float64, as Python sends floats (msgpack-c's pack_double would send 1.0 as the int 1).
inline Value floating(double v) {
  return [v](wire::Packer& p) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    char encoded[9];
    encoded[0] = static_cast<char>(0xcb);
    for (int i = 0; i < 8; ++i) encoded[1 + i] = static_cast<char>((bits >> (8 * (7 - i))) & 0xff);
    p.pack_bin_body(encoded, sizeof encoded);  // raw bytes: a complete float64
  };
}
inline Value boolean(bool v) {
  return [v](wire::Packer& p) { v ? p.pack_true() : p.pack_false(); };
}
inline Value text(std::string v) {
  return [v](wire::Packer& p) { wire::pack_str(p, v); };
}
inline Value bytes(std::string v) {
  return [v](wire::Packer& p) {
    p.pack_bin(static_cast<std::uint32_t>(v.size()));
    p.pack_bin_body(v.data(), static_cast<std::uint32_t>(v.size()));
  };
}
inline Value none() {
  return [](wire::Packer& p) { p.pack_nil(); };
}
inline Value nested(Values fields) {
  return [fields](wire::Packer& p) {
    p.pack_array(static_cast<std::uint32_t>(fields.size()));
    for (const auto& field : fields) field(p);
  };
}
inline Value dict(std::string key, Value value) {
  return [key, value](wire::Packer& p) {
    p.pack_map(1);
    wire::pack_str(p, key);
    value(p);
  };
}

// A REQUEST to object.method with the body [args, kwargs], where `pack_args` packs the args array.
inline wire::OutFrame request_with(const std::string& object, const std::string& method, const Value& pack_args,
                                   const Kwargs& kwargs, bool oneway) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  frame.header.encoding = wire::Encoding::msgpack;
  if (oneway) frame.header.flags |= wire::kOneway;
  frame.meta = object + '\0' + method;
  wire::ByteSink sink{&frame.payload};
  wire::Packer packer(sink);
  packer.pack_array(2);
  pack_args(packer);
  if (kwargs.empty()) {
    packer.pack_nil();
  } else {
    packer.pack_map(static_cast<std::uint32_t>(kwargs.size()));
    for (const auto& [name, value] : kwargs) {
      wire::pack_str(packer, name);
      value(packer);
    }
  }
  return frame;
}

// A REQUEST to object.method with the body [args, kwargs].
inline wire::OutFrame request(const std::string& object, const std::string& method, const Values& args, const Kwargs& kwargs,
                              bool oneway) {
  return request_with(object, method, nested(args), kwargs, oneway);
}

// Sends a request on `connection` and waits up to 10 s for its answer.
inline Result<wire::Frame> call_and_wait(rpc::Connection& connection, wire::OutFrame&& frame) {
  auto waiting = std::make_shared<rpc::WaitingSink>();
  auto id = connection.call(std::move(frame), waiting);
  if (!id) return id.error();
  auto outcome = waiting->wait(rpc::Clock::now() + std::chrono::seconds(10));
  if (!outcome) return Error{ErrorKind::timeout, "no answer within 10 s"};
  return std::move(*outcome);
}

}  // namespace tether::service::testing
