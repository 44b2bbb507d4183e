// C++ services on the tether protocol: named objects whose methods are C++ functions reading
// msgpack (tether profile) arguments. The node daemon's objects are services; so are the $meta
// answers that let a Python proxy connect to them like to any tether.Server object.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "rpc/connection.hpp"
#include "wire/msgpack_util.hpp"

namespace tether::service {

// Builds one REPLY (or REQUEST) body: msgpack into `frame.payload`, large byte strings as out-of-band segments.
class ReplyBuilder {
 public:
  ReplyBuilder();
  wire::Packer& packer() { return packer_; }
  // Packs bytes as bin, or from 64 KiB on as an ext 5 segment that points at `bytes` (kept alive
  // by `keepalive` until written) instead of copying them.
  void pack_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> keepalive = nullptr);
  // A float64 even when the value is integral (msgpack-cxx would pack 2.0 as the int 2; the
  // protocol says floats travel as float64, so the peer gets a float).
  void pack_float64(double value);
  void pack_resources(const std::map<std::string, double>& resources);
  wire::OutFrame take(std::uint64_t request_id);
  // The same body as a REQUEST to `object`.`method` (for calls a service makes to its peers).
  wire::OutFrame take_request(const std::string& object, const std::string& method);

 private:
  wire::OutFrame frame_;
  wire::ByteSink sink_;
  wire::Packer packer_;
};

// One request to a service method: its arguments, and the means to answer it once, now or later
// (from the daemon's thread). Move-only; a call dropped without an answer is answered with an error.
class Call {
 public:
  Call(std::shared_ptr<rpc::Connection> connection, wire::Frame&& frame, msgpack::object_handle body,
       std::vector<std::span<const std::byte>> segments, std::string method);
  Call(Call&&) noexcept = default;
  Call& operator=(Call&&) noexcept = default;
  ~Call();

  std::size_t arg_count() const;
  const msgpack::object* arg(std::size_t index) const;        // nullptr when absent
  const msgpack::object* kwarg(std::string_view name) const;  // nullptr when absent
  // The positional argument `index`, or else the keyword argument `name`.
  const msgpack::object* param(std::size_t index, std::string_view name) const;
  // The bytes of a bin or ext 5 (segment) value; an error naming `what` for anything else.
  Result<std::span<const std::byte>> bytes_of(const msgpack::object& value, std::string_view what) const;

  bool oneway() const { return oneway_; }
  rpc::Connection& connection() const { return *connection_; }
  const std::shared_ptr<rpc::Connection>& connection_ptr() const { return connection_; }
  const std::string& method() const { return method_; }
  bool answered() const { return answered_; }

  void reply(ReplyBuilder&& reply);
  void reply_nil();
  // Answers with an ERROR. `remote_type` names the exception a Python caller raises (for example
  // "builtins.ValueError"); empty leaves the choice to the caller's error mapping for `kind`.
  void fail(ErrorKind kind, std::string message, std::string remote_type = "");
  void fail(const Error& error) { fail(error.kind, error.message); }

 private:
  std::shared_ptr<rpc::Connection> connection_;
  std::shared_ptr<wire::Frame> frame_;  // keeps the segments' memory alive
  msgpack::object_handle body_;
  std::vector<std::span<const std::byte>> segments_;
  std::string method_;
  std::uint64_t request_id_ = 0;
  bool oneway_ = false;
  bool answered_ = false;
};

// A named object: its methods by name. Methods run on the host's thread and must not block.
class Service {
 public:
  using Method = std::function<void(Call&&)>;
  explicit Service(std::string name) : name_(std::move(name)) {}
  virtual ~Service() = default;
  const std::string& name() const { return name_; }
  void add_method(std::string name, Method method, bool oneway = false);
  const Method* find(const std::string& method) const;
  std::vector<std::string> method_names() const;
  const std::set<std::string>& oneway_methods() const { return oneway_; }
  // Told when a connection that called this service closes (for example to drop its references).
  virtual void on_connection_closed(rpc::Connection&) {}

 private:
  std::string name_;
  std::map<std::string, Method> methods_;
  std::set<std::string> oneway_;
};

// The request handler of a C++ server: routes each REQUEST to its service and method, answers
// $meta.describe, and refuses what it cannot serve with a clear error. Requests run on the io
// thread that read them; a host with one io thread makes its services single-threaded.
class ServiceHost final : public rpc::RequestHandler {
 public:
  // Services are owned elsewhere and outlive the host's connections.
  void add(Service& service);
  void on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) override;
  void on_closed(rpc::Connection& connection, const Error& error) override;
  // Told about every connection that closes (after the services).
  std::function<void(rpc::Connection&)> on_connection_closed;

 private:
  void describe(Call&& call);
  std::map<std::string, Service*, std::less<>> services_;
};

// A reply to a request a service sent to a peer: the body parsed and its out-of-band segments
// resolved. An ERROR frame, or a body that does not parse, becomes the Error.
class ReceivedReply {
 public:
  static Result<ReceivedReply> parse(wire::Frame&& frame);
  const msgpack::object& body() const { return body_.get(); }
  // The bytes of a bin or ext 5 (segment) value, valid while this reply lives.
  Result<std::span<const std::byte>> bytes_of(const msgpack::object& value, std::string_view what) const;

 private:
  std::shared_ptr<wire::Frame> frame_;
  msgpack::object_handle body_;
  std::vector<std::span<const std::byte>> segments_;
};

// Delivers the outcome of one request a service sent, once (a reply, an error, or the failure).
class ReplyHandler final : public rpc::ReplySink {
 public:
  using Handler = std::function<void(Result<ReceivedReply>)>;
  explicit ReplyHandler(Handler handler) : handler_(std::move(handler)) {}
  void on_frame(wire::Frame&& frame) override;
  void on_failure(const Error& error) override;

 private:
  Handler handler_;
};

// Packs a value a caller sent, to be kept or passed on: msgpack as the caller encoded it (ext types
// such as tuples included), except bytes sent out of band (ext 5), which are packed in place, and
// floats, which stay float64 (msgpack-c would pack 1.0 as the integer 1). Fails on nesting deeper
// than 64 levels or an ext whose contents are not msgpack.
using ResolvedPacker = msgpack::packer<msgpack::sbuffer>;
Status pack_resolved(const Call& call, const msgpack::object& value, ResolvedPacker& packer);

// Helpers for reading arguments: each names what it expected in its error.
std::string_view type_name(const msgpack::object& value);
Result<std::string_view> as_str(const msgpack::object* value, std::string_view what);
Result<std::uint64_t> as_u64(const msgpack::object* value, std::string_view what);
Result<double> as_number(const msgpack::object* value, std::string_view what);
Result<bool> as_bool(const msgpack::object* value, std::string_view what);
// A map or array (nullptr passes as "absent" only through the optional variants below).
Result<const msgpack::object_map*> as_map(const msgpack::object* value, std::string_view what);
Result<const msgpack::object_array*> as_array(const msgpack::object* value, std::string_view what);
// The value under `key` in a msgpack map with str keys; nullptr when absent.
const msgpack::object* field(const msgpack::object_map& map, std::string_view key);

}  // namespace tether::service
