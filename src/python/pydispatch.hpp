// Runs requests against Python objects: the published objects of a server and the callbacks a
// side exported over one connection. One dispatcher per server, and one per client runtime.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <memory>
#include <string>
#include <condition_variable>
#include <functional>
#include <vector>
#include <unordered_map>
#include <unordered_set>
#include <mutex>

#include "rpc/connection.hpp"
#include "rpc/dispatch_queue.hpp"

namespace tether::python {

class Channel;
class FutureSink;

// A reply waiting to complete its future at the end of the read that brought it.
struct PendingCompletion {
  std::shared_ptr<FutureSink> sink;
  wire::Frame frame;
};

// Per-connection Python state. Cleared on close, with the GIL, to break reference cycles.
struct ConnectionState : rpc::Connection::Attachment {
  PyObject* exports = nullptr;   // dict: int id -> exported object
  PyObject* sessions = nullptr;  // dict: object name -> instance (mode "session")
  PyObject* channel = nullptr;   // the Channel wrapping this connection, created on first need
  PyObject* async_calls = nullptr;  // dict: request id -> future of a running async method
  // (names frozenset, certificate subject, address, authenticated): who is calling, built on first call.
  PyObject* peer = nullptr;
  // Streams: what the peer cancelled, and the credit each running stream has left.
  std::mutex stream_mutex;
  std::condition_variable stream_changed;
  std::unordered_set<std::uint64_t> cancelled;
  std::unordered_map<std::uint64_t, std::int64_t> credits;
  std::uint64_t highest_started = 0;  // cancels of later ids are for requests not yet started
  bool closed = false;

  // Replies that complete Python futures, gathered during one read and run under one GIL hold.
  std::mutex completions_mutex;
  std::vector<PendingCompletion> completions;
  ~ConnectionState() override;
  void clear();  // needs the GIL
};

class Dispatcher final : public rpc::QueuingRequestHandler {
 public:
  // `published` is a dict name -> (target, mode, methods, oneway, streams[, access]), owned by the
  // Python Server; `access` is None or a dict method name (or "*" for all) -> frozenset of identities.
  // Requests run on `executor`'s threads, at most `limit` at once (see rpc::DispatchQueue).
  Dispatcher(PyObject* published, asio::any_io_executor executor, std::size_t limit, bool run_on_reader = true);
  ~Dispatcher() override;

  void on_open(rpc::Connection& connection) override;
  void on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) override;
  void on_cancel(rpc::Connection& connection, std::uint64_t request_id) override;
  void on_credit(rpc::Connection& connection, std::uint64_t request_id, std::uint64_t count) override;
  void on_closed(rpc::Connection& connection, const Error& error) override;
  void on_batch_end(rpc::Connection& connection) override;

 private:
  void dispatch(const std::shared_ptr<rpc::Connection>& connection, wire::Frame& frame);
  PyObject* published_;  // strong reference
};

// Sends the Python exception currently set (and clears it) as an ERROR frame answering `id`.
void send_current_exception(rpc::Connection& connection, std::uint64_t id, ErrorKind kind);

// Async (coroutine) methods running at once for one connection; more are refused with `overloaded`
// (docs/protocol.md, section 9). Sync methods are bounded by the dispatch queue's backpressure.
inline constexpr std::size_t kMaxAsyncCallsInFlight = 1024;

// Items a stream may send before the caller grants more credit (docs/protocol.md, section 5).
inline constexpr std::int64_t kInitialStreamCredit = 64;

// Forgets the running async method answering `request_id` (GIL held).
void forget_async_call(rpc::Connection& connection, std::uint64_t request_id);

// The Channel for a connection, created on first use (GIL held); borrowed reference.
PyObject* channel_for(const std::shared_ptr<rpc::Connection>& connection);

}  // namespace tether::python
