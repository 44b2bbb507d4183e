// Runs the requests a peer sends to C++ servants: the objects a tether::Server publishes and the
// callbacks either side exported on one connection. Shared by Server and Client.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "api/value_codec.hpp"
#include "rpc/connection.hpp"
#include "rpc/dispatch_queue.hpp"

namespace tether::detail {

// One call to an async method, answered once through its Reply.
struct CallData {
  std::shared_ptr<rpc::Connection> connection;
  std::uint64_t request_id = 0;
  bool oneway = false;
  std::string where;  // "object.method", for messages
  std::weak_ptr<ClientCore> home;
  std::atomic<bool> answered{false};
  std::atomic<bool> cancelled{false};
  ~CallData();  // an unanswered call is answered with an error
};

// One running stream: the credit the caller granted, and whether it went away.
struct StreamData {
  std::shared_ptr<rpc::Connection> connection;
  std::uint64_t request_id = 0;
  std::weak_ptr<ClientCore> home;
  std::mutex mutex;
  std::condition_variable changed;
  std::int64_t credit = 0;
  bool gone = false;  // cancelled, or the connection closed
};

}  // namespace tether::detail

namespace tether::api {

// Per-connection state: what this side exported on it, and its running async calls and streams.
struct ConnectionState : rpc::Connection::Attachment, ExportTable {
  std::mutex mutex;
  std::unordered_map<std::uint64_t, std::shared_ptr<Servant>> exports;
  std::unordered_map<const Servant*, std::uint64_t> export_ids;
  std::uint64_t next_export = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<detail::StreamData>> streams;
  std::unordered_map<std::uint64_t, std::weak_ptr<detail::CallData>> async_calls;
  bool closed = false;

  std::uint64_t export_servant(const std::shared_ptr<Servant>& servant) override;
  std::shared_ptr<Servant> exported(std::uint64_t id);
};

ConnectionState* state_of(const rpc::Connection& connection);

// Sends `error` as the ERROR answering `request_id` (nothing for a oneway request).
void send_error(rpc::Connection& connection, std::uint64_t request_id, const RemoteError& error);
// The error a C++ exception becomes on the wire (docs/cpp.md): TypeMismatch -> TypeError, ...
RemoteError error_from_exception(std::exception_ptr exception, const std::string& where);
// Encodes and sends a REPLY or STREAM_ITEM; a value that cannot be encoded sends the ERROR instead.
void send_value(rpc::Connection& connection, std::uint64_t request_id, wire::MessageType type, const Value& value,
                const std::string& where);

class ObjectHandler final : public rpc::QueuingRequestHandler {
 public:
  // Requests run on `executor`'s threads, at most `limit` at once (rpc::DispatchQueue).
  ObjectHandler(asio::any_io_executor executor, std::size_t limit, bool run_on_reader, std::weak_ptr<detail::ClientCore> home);
  void publish(const std::string& name, std::shared_ptr<Servant> servant);
  bool unpublish(const std::string& name);

  void on_open(rpc::Connection& connection) override;
  void on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) override;
  void on_cancel(rpc::Connection& connection, std::uint64_t request_id) override;
  void on_credit(rpc::Connection& connection, std::uint64_t request_id, std::uint64_t count) override;
  void on_closed(rpc::Connection& connection, const Error& error) override;

 private:
  std::shared_ptr<Servant> find_target(const std::shared_ptr<rpc::Connection>& connection, const std::string& object);
  void describe(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, const Args& args);
  void run(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, bool oneway, const std::string& where,
           const Servant::Method& method, Args&& args);
  void run_stream(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, const std::string& where,
                  const Servant::Method& method, const Args& args);

  std::weak_ptr<detail::ClientCore> home_;
  std::shared_mutex published_mutex_;
  std::unordered_map<std::string, std::shared_ptr<Servant>> published_;
};

const rpc::Connection* current_caller_connection();  // null outside a servant method

// Marks the caller of the servant method this thread runs (tether::current_call()).
class CallScope {
 public:
  explicit CallScope(const rpc::Connection& connection);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

 private:
  const rpc::Connection* previous_;
};

}  // namespace tether::api
