// One peer-to-peer connection: framing, the handshake, request multiplexing with out-of-order
// replies, coalesced writes, heartbeats, idle timeout and call deadlines. Either side may call.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "net/transport.hpp"
#include "rpc/handshake.hpp"
#include "wire/frame.hpp"

namespace tether::rpc {

using Clock = std::chrono::steady_clock;
class Connection;

struct ConnectionOptions {
  wire::Limits limits;
  std::chrono::milliseconds heartbeat{5000};
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds handshake_timeout{10000};
  // Where large out-of-band segments are read to (for example Python bytes objects); none: the body.
  wire::SegmentAllocator allocate_segment;
};

// Receives what arrives for calls this side made: REPLY, ERROR or STREAM_ITEM frames, or a
// failure (disconnect, deadline). on_frame may run on any io thread; it must not block.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void on_frame(wire::Frame&& frame) = 0;
  virtual void on_failure(const Error& error) = 0;
};

// Receives what the peer asks of this side. Owned by whoever owns the connection's role (a server's
// dispatcher, or a client's table of exported callbacks); it outlives its connections.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void on_open(Connection&) {}
  virtual void on_request(const std::shared_ptr<Connection>& connection, wire::Frame&& frame) = 0;
  // The REQUESTs of one read, in order; by default each goes to on_request on this thread.
  virtual void on_requests(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& frames) {
    for (auto& frame : frames) on_request(connection, std::move(frame));
  }
  // A handler that queues requests (rpc::DispatchQueue) takes each read's REQUESTs in two steps:
  // queue_requests before the connection's next read starts, so the batches of one connection are
  // queued in stream order even when another io thread completes the next read, and run_queued
  // right after that read started. Such a handler returns true from queues_requests; on_requests
  // is then not called.
  virtual bool queues_requests() const { return false; }
  virtual void queue_requests(const std::shared_ptr<Connection>&, std::vector<wire::Frame>&&) {}
  virtual void run_queued() {}
  virtual void on_cancel(Connection&, std::uint64_t /*request_id*/) {}
  virtual void on_credit(Connection&, std::uint64_t /*request_id*/, std::uint64_t /*count*/) {}
  // Runs after each batch of replies was delivered, before the next read, on the same thread.
  virtual void on_batch_end(Connection&) {}
  virtual void on_closed(Connection&, const Error&) {}
};

// Shared ownership is real here: the io handlers in flight, the owner (server or proxy) and
// callback proxies handed to user code each keep the connection alive.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Role = Handshake::Role;
  using HandshakeDone = std::function<void(const Result<Negotiated>&)>;

  // `runtime_keepalive` (may be empty) keeps the io context of the transport alive as long as the
  // connection: the socket must not outlive it.
  static std::shared_ptr<Connection> create(std::unique_ptr<net::Transport> transport, Role role,
                                            AuthConfig auth, ConnectionOptions options,
                                            std::shared_ptr<RequestHandler> handler,
                                            std::shared_ptr<void> runtime_keepalive = nullptr);
  ~Connection();

  // Starts reading and the handshake; `done` runs once, on an io thread.
  void start(HandshakeDone done);

  // Sends a frame (reply, error, cancel...). Safe from any thread; writes directly when the
  // socket is idle, else queues the frame to be coalesced with others into one write.
  Status send(wire::OutFrame&& frame);
  // Sends a REQUEST and routes what comes back to `sink`. A deadline makes the call fail with
  // `timeout` unless the owner waits itself (sync calls pass no deadline and wait with their own).
  Result<std::uint64_t> call(wire::OutFrame&& frame, std::shared_ptr<ReplySink> sink,
                             std::optional<Clock::time_point> deadline = std::nullopt);
  // Forgets a call and tells the peer (CANCEL). Replies already in flight are dropped.
  void cancel_call(std::uint64_t request_id, bool notify_peer = true);
  // Graceful close: CLOSE to the peer, then shutdown. Pending calls fail as disconnected.
  void close(std::string reason);

  // Backpressure: counts requests handed to the handler and not yet started. Reading pauses when
  // the count goes over `high` (the peer's writes then back up in TCP) and resumes at high / 2.
  // The decision is taken together with the count, so a pause can never outlive its backlog.
  void adjust_backlog(std::ptrdiff_t delta, std::size_t high);

  // While one is alive on a thread, that thread's sends to `connection` are queued, and one flush
  // is posted to the io threads, so a batch of replies leaves in one write.
  class DeferFlush {
   public:
    explicit DeferFlush(Connection* connection);
    ~DeferFlush();
    DeferFlush(const DeferFlush&) = delete;
    DeferFlush& operator=(const DeferFlush&) = delete;

   private:
    Connection* previous_;
  };

  bool is_open() const { return !closed_.load(std::memory_order_acquire) && !broken_.load(std::memory_order_acquire); }
  const Negotiated& negotiated() const { return negotiated_; }
  std::string describe() const { return description_; }
  std::uint64_t id() const { return id_; }
  std::size_t pending_calls() const;

  // Per-connection state for the handler's use (for example exported callbacks, session objects),
  // destroyed with the connection.
  struct Attachment {
    virtual ~Attachment() = default;
  };
  Attachment* attachment() const { return attachment_.get(); }
  void set_attachment(std::unique_ptr<Attachment> attachment) { attachment_ = std::move(attachment); }

 private:
  Connection(std::unique_ptr<net::Transport> transport, Role role, AuthConfig auth,
             ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
             std::shared_ptr<void> runtime_keepalive);

  struct PendingCall {
    std::shared_ptr<ReplySink> sink;
    std::optional<Clock::time_point> deadline;
  };
  struct QueuedFrame {
    wire::OutFrame frame;
    std::size_t written = 0;
  };

  void start_read();
  void continue_reading();  // starts the next read unless paused
  void resume_reading();
  Status write_queued(std::unique_lock<std::mutex>& lock);
  bool finish_large_write_now(std::unique_lock<std::mutex>& lock);
  Status read_large_body_now(std::vector<wire::Frame>& frames);
  void on_read(std::error_code ec, std::size_t count);
  void handle_handshake_frame(wire::Frame&& frame);
  void handle_frame(wire::Frame&& frame, std::vector<wire::Frame>& requests);
  void deliver_reply(wire::Frame&& frame, bool final);
  // Removes a pending call and its deadline; pending_mutex_ must be held.
  void forget_pending_locked(std::unordered_map<std::uint64_t, PendingCall>::iterator it);
  void send_error(std::uint64_t request_id, ErrorKind kind, std::string message);
  void fail(Error error);
  void protocol_error(const Error& error);

  void start_async_write_locked();
  void flush();  // writes what is queued, if no write is in flight
  void on_write_done(std::error_code ec);
  Error transport_error(std::error_code ec, std::string why) const;
  static std::vector<asio::const_buffer> gather(const std::deque<QueuedFrame>& queue);

  void arm_timer();
  void on_timer();

  std::shared_ptr<void> runtime_keepalive_;  // first member: destroyed last, after the socket
  std::unique_ptr<net::Transport> transport_;
  Role role_;
  ConnectionOptions options_;
  std::shared_ptr<RequestHandler> handler_;
  std::unique_ptr<Handshake> handshake_;
  HandshakeDone handshake_done_;
  Negotiated negotiated_;
  std::atomic<bool> established_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> broken_{false};  // a write failed: no new sends; fail() is on its way (posted)
  std::string description_;
  std::uint64_t id_;
  // The peer's CLOSE reason: written on the read chain, read there and (under the mutex) by callers
  // of a closed connection, whose call may race with the CLOSE frame arriving.
  std::string close_reason_;
  mutable std::mutex close_reason_mutex_;

  wire::FrameDecoder decoder_;  // touched only by the read chain

  std::mutex write_mutex_;
  std::deque<QueuedFrame> write_queue_;
  bool write_in_flight_ = false;
  std::size_t frames_in_flight_ = 0;  // how many queued frames the write in flight covers
  bool flush_posted_ = false;

  std::atomic<bool> pause_requested_{false};
  std::atomic<bool> read_parked_{false};  // the read chain stopped because of a pause
  std::mutex backlog_mutex_;
  std::size_t backlog_ = 0;

  mutable std::mutex pending_mutex_;
  std::unordered_map<std::uint64_t, PendingCall> pending_;
  std::multimap<Clock::time_point, std::uint64_t> deadlines_;
  std::atomic<std::uint64_t> next_request_id_{1};

  std::mutex timer_mutex_;
  asio::steady_timer timer_;
  std::atomic<Clock::rep> last_received_;
  std::atomic<Clock::rep> last_sent_;
  Clock::time_point handshake_deadline_;  // fixed at creation: trickling bytes cannot extend it

  std::unique_ptr<Attachment> attachment_;
};

// A reply sink that a thread can block on: the sync-call path.
class WaitingSink final : public ReplySink {
 public:
  void on_frame(wire::Frame&& frame) override;
  void on_failure(const Error& error) override;
  // Waits until the reply or a failure; returns nullopt if `deadline` passes first.
  std::optional<Result<wire::Frame>> wait(std::optional<Clock::time_point> deadline);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<Result<wire::Frame>> outcome_;
};

}  // namespace tether::rpc
