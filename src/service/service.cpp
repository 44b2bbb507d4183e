// Services: request routing, argument access, replies (see service.hpp).
#include "service/service.hpp"

#include <cstring>

namespace tether::service {
namespace {

constexpr std::size_t kSegmentThreshold = 64 * 1024;  // docs/protocol.md 8.1: from 64 KiB on, ext 5
constexpr std::int8_t kSegmentExt = 5;

wire::OutFrame error_frame(std::uint64_t request_id, ErrorKind kind, std::string message, std::string type) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::error;
  frame.header.request_id = request_id;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = wire::pack_error_body(wire::ErrorBody{kind, std::move(message), std::move(type), ""});
  return frame;
}

void send_error(rpc::Connection& connection, const wire::Frame& request, ErrorKind kind, std::string message) {
  if (request.header.flags & wire::kOneway) return;
  connection.send(error_frame(request.header.request_id, kind, std::move(message), ""));
}

}  // namespace

// ---- ReplyBuilder ----

ReplyBuilder::ReplyBuilder() : sink_{&frame_.payload}, packer_(sink_) {}

void ReplyBuilder::pack_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> keepalive) {
  if (bytes.size() < kSegmentThreshold) {
    packer_.pack_bin(static_cast<std::uint32_t>(bytes.size()));
    packer_.pack_bin_body(reinterpret_cast<const char*>(bytes.data()), static_cast<std::uint32_t>(bytes.size()));
    return;
  }
  auto index = static_cast<std::uint32_t>(frame_.segments.size());
  std::byte le[4];
  for (int i = 0; i < 4; ++i) le[i] = static_cast<std::byte>((index >> (8 * i)) & 0xff);
  packer_.pack_ext(4, kSegmentExt);
  packer_.pack_ext_body(reinterpret_cast<const char*>(le), 4);
  frame_.segments.push_back({bytes, std::const_pointer_cast<void>(std::move(keepalive))});
}

void ReplyBuilder::pack_float64(double value) {
  std::uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  frame_.payload.push_back(std::byte{0xcb});
  for (int shift = 56; shift >= 0; shift -= 8) frame_.payload.push_back(static_cast<std::byte>((bits >> shift) & 0xff));
}

void ReplyBuilder::pack_resources(const std::map<std::string, double>& resources) {
  packer_.pack_map(static_cast<std::uint32_t>(resources.size()));
  for (const auto& [name, amount] : resources) {
    wire::pack_str(packer_, name);
    pack_float64(amount);
  }
}

wire::OutFrame ReplyBuilder::take(std::uint64_t request_id) {
  frame_.header.type = wire::MessageType::reply;
  frame_.header.request_id = request_id;
  frame_.header.encoding = wire::Encoding::msgpack;
  return std::move(frame_);
}

wire::OutFrame ReplyBuilder::take_request(const std::string& object, const std::string& method) {
  frame_.header.type = wire::MessageType::request;
  frame_.header.encoding = wire::Encoding::msgpack;
  frame_.meta = object + '\0' + method;
  return std::move(frame_);
}

// ---- Call ----

Call::Call(std::shared_ptr<rpc::Connection> connection, wire::Frame&& frame, msgpack::object_handle body,
           std::vector<std::span<const std::byte>> segments, std::string method)
    : connection_(std::move(connection)),
      body_(std::move(body)),
      segments_(std::move(segments)),
      method_(std::move(method)),
      request_id_(frame.header.request_id),
      oneway_(frame.header.flags & wire::kOneway) {
  frame_ = std::make_shared<wire::Frame>(std::move(frame));
}

Call::~Call() {
  // A method that forgot its caller must not leave it waiting until its deadline.
  if (connection_ && !answered_ && !oneway_)
    connection_->send(error_frame(request_id_, ErrorKind::failed, "the service dropped the call without an answer", ""));
}

std::size_t Call::arg_count() const { return body_.get().via.array.ptr[0].via.array.size; }

const msgpack::object* Call::arg(std::size_t index) const {
  const auto& args = body_.get().via.array.ptr[0].via.array;
  return index < args.size ? &args.ptr[index] : nullptr;
}

const msgpack::object* Call::kwarg(std::string_view name) const {
  const auto& kwargs = body_.get().via.array.ptr[1];
  if (kwargs.type != msgpack::type::MAP) return nullptr;
  return field(kwargs.via.map, name);
}

const msgpack::object* Call::param(std::size_t index, std::string_view name) const {
  if (const auto* value = arg(index)) return value;
  return kwarg(name);
}

namespace {

Result<std::span<const std::byte>> bytes_in(const msgpack::object& value, const std::vector<std::span<const std::byte>>& segments,
                                            std::string_view what) {
  if (value.type == msgpack::type::BIN)
    return std::span(reinterpret_cast<const std::byte*>(value.via.bin.ptr), value.via.bin.size);
  if (value.type == msgpack::type::EXT && value.via.ext.type() == kSegmentExt && value.via.ext.size == 4) {
    std::uint32_t index = 0;
    for (int i = 0; i < 4; ++i) index |= std::uint32_t(static_cast<std::uint8_t>(value.via.ext.data()[i])) << (8 * i);
    if (index < segments.size()) return segments[index];
    return Error{ErrorKind::bad_request, std::string(what) + ": segment index out of range"};
  }
  return Error{ErrorKind::bad_request, std::string(what) + " must be bytes, got " + std::string(type_name(value))};
}

}  // namespace

Result<std::span<const std::byte>> Call::bytes_of(const msgpack::object& value, std::string_view what) const {
  return bytes_in(value, segments_, what);
}

// ---- ReceivedReply ----

Result<ReceivedReply> ReceivedReply::parse(wire::Frame&& frame) {
  if (frame.header.type == wire::MessageType::error) {
    auto error = wire::unpack_error_body(frame.body_span());
    return Error{error.kind, error.message};
  }
  ReceivedReply reply;
  reply.frame_ = std::make_shared<wire::Frame>(std::move(frame));
  std::span<const std::byte> main = reply.frame_->body_span();
  if (reply.frame_->header.flags & wire::kSegments) {
    auto split = wire::split_segments(*reply.frame_);
    if (!split) return split.error();
    main = split->main;
    reply.segments_ = std::move(split->segments);
  }
  auto body = wire::unpack_body(main);
  if (!body) return body.error();
  reply.body_ = std::move(*body);
  return reply;
}

Result<std::span<const std::byte>> ReceivedReply::bytes_of(const msgpack::object& value, std::string_view what) const {
  return bytes_in(value, segments_, what);
}

void ReplyHandler::on_frame(wire::Frame&& frame) {
  if (auto handler = std::exchange(handler_, nullptr)) handler(ReceivedReply::parse(std::move(frame)));
}

void ReplyHandler::on_failure(const Error& error) {
  if (auto handler = std::exchange(handler_, nullptr)) handler(error);
}

void Call::reply(ReplyBuilder&& reply) {
  if (std::exchange(answered_, true) || oneway_) return;
  connection_->send(reply.take(request_id_));
}

void Call::reply_nil() {
  ReplyBuilder reply;
  reply.packer().pack_nil();
  this->reply(std::move(reply));
}

void Call::fail(ErrorKind kind, std::string message, std::string remote_type) {
  if (std::exchange(answered_, true) || oneway_) return;
  connection_->send(error_frame(request_id_, kind, std::move(message), std::move(remote_type)));
}

// ---- Service ----

void Service::add_method(std::string name, Method method, bool oneway) {
  if (oneway) oneway_.insert(name);
  methods_[std::move(name)] = std::move(method);
}

const Service::Method* Service::find(const std::string& method) const {
  auto it = methods_.find(method);
  return it == methods_.end() ? nullptr : &it->second;
}

std::vector<std::string> Service::method_names() const {
  std::vector<std::string> names;
  for (const auto& [name, method] : methods_) names.push_back(name);
  return names;
}

// ---- ServiceHost ----

void ServiceHost::add(Service& service) { services_[service.name()] = &service; }

void ServiceHost::on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) {
  auto separator = frame.meta.find('\0');
  if (separator == std::string::npos)
    return send_error(*connection, frame, ErrorKind::bad_request, "request meta must be 'object\\0method'");
  std::string object = frame.meta.substr(0, separator);
  std::string method = frame.meta.substr(separator + 1);
  if (frame.header.encoding != wire::Encoding::msgpack)
    return send_error(*connection, frame, ErrorKind::denied, "this server takes msgpack requests only");

  std::span<const std::byte> main = frame.body_span();
  std::vector<std::span<const std::byte>> segments;
  if (frame.header.flags & wire::kSegments) {
    auto split = wire::split_segments(frame);
    if (!split) return send_error(*connection, frame, ErrorKind::bad_request, split.error().message);
    main = split->main;
    segments = std::move(split->segments);
  }
  auto body = wire::unpack_body(main);
  if (!body) return send_error(*connection, frame, ErrorKind::bad_request, body.error().message);
  const auto& request = body->get();
  bool well_formed = request.type == msgpack::type::ARRAY && request.via.array.size == 2 &&
                     request.via.array.ptr[0].type == msgpack::type::ARRAY &&
                     (request.via.array.ptr[1].type == msgpack::type::MAP || request.via.array.ptr[1].type == msgpack::type::NIL);
  if (!well_formed) return send_error(*connection, frame, ErrorKind::bad_request, "request body must be [args, kwargs]");

  if (object == "$meta" && method == "describe")
    return describe(Call(connection, std::move(frame), std::move(*body), std::move(segments), method));
  auto it = services_.find(object);
  if (it == services_.end())
    return send_error(*connection, frame, ErrorKind::unimplemented, "no object named '" + object + "' on this server");
  const auto* handler = it->second->find(method);
  if (!handler || method.empty() || method[0] == '_')
    return send_error(*connection, frame, ErrorKind::unimplemented, "object '" + object + "' has no method '" + method + "'");
  (*handler)(Call(connection, std::move(frame), std::move(*body), std::move(segments), object + "." + method));
}

void ServiceHost::describe(Call&& call) {
  auto name = as_str(call.param(0, "name"), "name");
  if (!name) return call.fail(name.error());
  auto it = services_.find(*name);
  if (it == services_.end())
    return call.fail(ErrorKind::failed, "no object named '" + std::string(*name) + "' on this server", "builtins.LookupError");
  auto names = it->second->method_names();
  const auto& oneway = it->second->oneway_methods();
  ReplyBuilder reply;
  auto& p = reply.packer();
  p.pack_array(3);
  p.pack_array(static_cast<std::uint32_t>(names.size()));
  for (const auto& n : names) wire::pack_str(p, n);
  p.pack_array(static_cast<std::uint32_t>(oneway.size()));
  for (const auto& n : oneway) wire::pack_str(p, n);
  p.pack_array(0);  // C++ services do not stream
  call.reply(std::move(reply));
}

void ServiceHost::on_closed(rpc::Connection& connection, const Error&) {
  for (auto& [name, service] : services_) service->on_connection_closed(connection);
  if (on_connection_closed) on_connection_closed(connection);
}

// ---- argument helpers ----

std::string_view type_name(const msgpack::object& value) {
  switch (value.type) {
    case msgpack::type::NIL: return "None";
    case msgpack::type::BOOLEAN: return "bool";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER: return "int";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "str";
    case msgpack::type::BIN: return "bytes";
    case msgpack::type::ARRAY: return "list";
    case msgpack::type::MAP: return "dict";
    case msgpack::type::EXT: return "ext";
  }
  return "unknown";
}

namespace {
Error wrong_type(const msgpack::object* value, std::string_view what, std::string_view expected) {
  std::string got = value ? std::string(type_name(*value)) : "nothing";
  return Error{ErrorKind::bad_request, std::string(what) + " must be " + std::string(expected) + ", got " + got};
}
}  // namespace

Result<std::string_view> as_str(const msgpack::object* value, std::string_view what) {
  if (!value || value->type != msgpack::type::STR) return wrong_type(value, what, "str");
  return std::string_view(value->via.str.ptr, value->via.str.size);
}

Result<std::uint64_t> as_u64(const msgpack::object* value, std::string_view what) {
  if (!value || value->type != msgpack::type::POSITIVE_INTEGER) return wrong_type(value, what, "a non-negative int");
  return value->via.u64;
}

Result<double> as_number(const msgpack::object* value, std::string_view what) {
  if (value && value->type == msgpack::type::POSITIVE_INTEGER) return static_cast<double>(value->via.u64);
  if (value && value->type == msgpack::type::NEGATIVE_INTEGER) return static_cast<double>(value->via.i64);
  if (value && (value->type == msgpack::type::FLOAT64 || value->type == msgpack::type::FLOAT32)) return value->via.f64;
  return wrong_type(value, what, "a number");
}

Result<bool> as_bool(const msgpack::object* value, std::string_view what) {
  if (!value || value->type != msgpack::type::BOOLEAN) return wrong_type(value, what, "a bool");
  return value->via.boolean;
}

Result<const msgpack::object_map*> as_map(const msgpack::object* value, std::string_view what) {
  if (!value || value->type != msgpack::type::MAP) return wrong_type(value, what, "a dict");
  return &value->via.map;
}

Result<const msgpack::object_array*> as_array(const msgpack::object* value, std::string_view what) {
  if (!value || value->type != msgpack::type::ARRAY) return wrong_type(value, what, "a list");
  return &value->via.array;
}

const msgpack::object* field(const msgpack::object_map& map, std::string_view key) {
  for (std::uint32_t i = 0; i < map.size; ++i) {
    const auto& k = map.ptr[i].key;
    if (k.type == msgpack::type::STR && std::string_view(k.via.str.ptr, k.via.str.size) == key) return &map.ptr[i].val;
  }
  return nullptr;
}


// ---- values passed on ----

namespace {

constexpr std::int8_t kBigIntExt = 4;  // its body is the integer's bytes, not msgpack
constexpr int kMaxResolveDepth = 64;

Status pack_resolved_at(const Call& call, const msgpack::object& value, ResolvedPacker& packer, int depth);

// The tether profile's ext types other than big integers hold msgpack values (a tuple's or a set's
// items, a registered type's name and state), which may refer to out-of-band bytes.
Status pack_ext(const Call& call, const msgpack::object& value, ResolvedPacker& packer, int depth) {
  const char* body = value.via.ext.data();
  std::size_t size = value.via.ext.size, offset = 0;
  msgpack::sbuffer inner;
  ResolvedPacker inner_packer(inner);
  while (offset < size) {
    msgpack::object_handle item;
    try {
      msgpack::unpack(item, body, size, offset);
    } catch (const std::exception&) {
      return Error{ErrorKind::bad_request, "the value holds an ext type whose contents are not msgpack"};
    }
    if (auto packed = pack_resolved_at(call, item.get(), inner_packer, depth + 1); !packed) return packed;
  }
  packer.pack_ext(inner.size(), value.via.ext.type());
  packer.pack_ext_body(inner.data(), static_cast<std::uint32_t>(inner.size()));
  return Ok{};
}

Status pack_resolved_at(const Call& call, const msgpack::object& value, ResolvedPacker& packer, int depth) {
  if (depth > kMaxResolveDepth) return Error{ErrorKind::bad_request, "the value is nested too deeply"};
  switch (value.type) {
    case msgpack::type::ARRAY:
      packer.pack_array(value.via.array.size);
      for (std::uint32_t i = 0; i < value.via.array.size; ++i)
        if (auto packed = pack_resolved_at(call, value.via.array.ptr[i], packer, depth + 1); !packed) return packed;
      return Ok{};
    case msgpack::type::MAP:
      packer.pack_map(value.via.map.size);
      for (std::uint32_t i = 0; i < value.via.map.size; ++i) {
        if (auto packed = pack_resolved_at(call, value.via.map.ptr[i].key, packer, depth + 1); !packed) return packed;
        if (auto packed = pack_resolved_at(call, value.via.map.ptr[i].val, packer, depth + 1); !packed) return packed;
      }
      return Ok{};
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: {
      std::uint64_t bits;
      std::memcpy(&bits, &value.via.f64, sizeof bits);
      char out[9];
      out[0] = static_cast<char>(0xcb);
      for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>((bits >> (8 * (7 - i))) & 0xff);
      packer.pack_bin_body(out, 9);  // raw bytes: a complete float64
      return Ok{};
    }
    case msgpack::type::EXT:
      if (value.via.ext.type() == kSegmentExt) {
        auto bytes = call.bytes_of(value, "the value");
        if (!bytes) return bytes.error();
        packer.pack_bin(static_cast<std::uint32_t>(bytes->size()));
        packer.pack_bin_body(reinterpret_cast<const char*>(bytes->data()), static_cast<std::uint32_t>(bytes->size()));
        return Ok{};
      }
      if (value.via.ext.type() != kBigIntExt) return pack_ext(call, value, packer, depth);
      [[fallthrough]];
    default:
      packer.pack(value);  // other scalars and big integers, byte for byte
      return Ok{};
  }
}

}  // namespace

Status pack_resolved(const Call& call, const msgpack::object& value, ResolvedPacker& packer) {
  return pack_resolved_at(call, value, packer, 0);
}

}  // namespace tether::service
