// Runs requests on a runtime's io threads with a bounded pool, stall-driven work stealing, and
// per-connection backpressure.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include <asio.hpp>

#include "rpc/connection.hpp"

namespace tether::rpc {

// At most `limit` requests run at once, so with limit = io threads - 1 one io thread always stays
// free to read (replies, pings, new connections). The thread that reads a batch runs it; if a
// request makes no progress for `stall_after`, another io thread takes the requests queued behind
// it, so blocking methods do not serialize a connection. A connection with more than
// `max_backlog` queued requests stops being read until it drains (backpressure, never dropping).
class DispatchQueue {
 public:
  using Run = std::function<void(const std::shared_ptr<Connection>&, wire::Frame&&)>;
  struct Options {
    std::size_t limit = 1;
    std::size_t max_backlog = 256;
    std::chrono::microseconds stall_after{1000};
    // false: requests never run on the thread that read them but on the executor's threads (a
    // client, whose one io thread must stay free to read replies while callbacks run).
    bool run_on_reader = true;
  };
  DispatchQueue(asio::any_io_executor executor, Options options, Run run);

  // enqueue, then run.
  void submit(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& requests);
  // Queues the requests (counting them in the connection's backlog) without running any.
  void enqueue(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& requests);
  // Runs queued requests: on this thread (run_on_reader), else on the executor's threads.
  void run();
  // Runs queued requests on this thread while permits allow.
  void drain();
  // Drops the stall timer; call once the io threads are stopped, before the io context goes away.
  void stop();

 private:
  struct Job {
    std::shared_ptr<Connection> connection;
    wire::Frame frame;
  };
  void arm_stall_check_locked();
  void on_stall_check();

  asio::any_io_executor executor_;
  Options options_;
  Run run_;
  std::mutex mutex_;
  std::deque<Job> queue_;
  std::size_t running_ = 0;
  std::uint64_t started_ = 0;           // jobs started so far: the progress the stall check watches
  std::uint64_t started_at_check_ = 0;
  bool check_armed_ = false;
  std::unique_ptr<asio::steady_timer> stall_timer_;
};

// A request handler whose requests run through a DispatchQueue (the Python and C++ servers): each
// read's batch is queued before the connection reads on, so batches keep their stream order, and run
// right after; every request then reaches on_request.
class QueuingRequestHandler : public RequestHandler {
 public:
  QueuingRequestHandler(asio::any_io_executor executor, DispatchQueue::Options options)
      : queue_(executor, options, [this](const std::shared_ptr<Connection>& connection, wire::Frame&& frame) {
          on_request(connection, std::move(frame));
        }) {}
  void on_requests(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& frames) override {
    queue_.submit(connection, std::move(frames));
  }
  bool queues_requests() const override { return true; }
  void queue_requests(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& frames) override {
    queue_.enqueue(connection, std::move(frames));
  }
  void run_queued() override { queue_.run(); }
  void stop() { queue_.stop(); }

 private:
  DispatchQueue queue_;
};

}  // namespace tether::rpc
