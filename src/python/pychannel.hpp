// The Python face of one connection (Channel), of a deferred reply (Responder) and of a result
// stream (StreamIterator). Bound to Python in module.cpp.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <nanobind/nanobind.h>

#include "rpc/connection.hpp"

namespace tether::python {

namespace nb = nanobind;

class StreamIterator;

class Channel {
 public:
  explicit Channel(std::shared_ptr<rpc::Connection> connection) : connection_(std::move(connection)) {}
  nb::object call(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs,
                  std::optional<double> timeout, int encoding);
  void call_oneway(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs, int encoding);
  // Returns a tether.Future that the reply completes.
  nb::object call_future(const std::string& object, const std::string& method, nb::tuple args, nb::object kwargs,
                         std::optional<double> timeout, int encoding);
  std::unique_ptr<StreamIterator> call_stream(const std::string& object, const std::string& method, nb::tuple args,
                                              nb::object kwargs, int encoding);
  void cancel(std::uint64_t request_id) { connection_->cancel_call(request_id); }
  // Exports an object so the peer can call it back over this connection; returns its id.
  // `methods`: the exposed method names of an object, or None for a function (called as a whole).
  std::uint64_t export_object(nb::object object, nb::object methods);
  void close(const std::string& reason);
  bool is_open() const { return connection_->is_open(); }
  bool pickle_allowed() const { return connection_->negotiated().pickle_allowed; }
  bool authenticated() const { return connection_->negotiated().authenticated; }
  std::string peer() const { return connection_->describe(); }
  const std::shared_ptr<rpc::Connection>& connection() const { return connection_; }

 private:
  wire::OutFrame request_frame(const std::string& object, const std::string& method, nb::tuple args,
                               nb::object kwargs, int encoding, std::optional<double> timeout = std::nullopt);
  std::shared_ptr<rpc::Connection> connection_;
};

// Items of a streamed result, pulled by the Python iterator; the GIL is released while waiting.
class StreamIterator {
 public:
  class Sink;
  StreamIterator(std::shared_ptr<rpc::Connection> connection, std::shared_ptr<Sink> sink, std::uint64_t id);
  ~StreamIterator();
  nb::object next();
  void close();

 private:
  std::shared_ptr<rpc::Connection> connection_;
  std::shared_ptr<Sink> sink_;
  std::uint64_t id_;
  bool finished_ = false;
  std::uint64_t consumed_since_credit_ = 0;
};

// Answers one request later, from any thread: used for async def methods.
class Responder {
 public:
  Responder(std::shared_ptr<rpc::Connection> connection, std::uint64_t id, wire::Encoding encoding)
      : connection_(std::move(connection)), id_(id), encoding_(encoding) {}
  void reply(nb::handle value);
  void fail(nb::handle exception);

 private:
  std::shared_ptr<rpc::Connection> connection_;
  std::uint64_t id_;
  wire::Encoding encoding_;
  bool done_ = false;
};

PyObject* make_channel_object(const std::shared_ptr<rpc::Connection>& connection);
PyObject* make_responder_object(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, wire::Encoding encoding);

}  // namespace tether::python
