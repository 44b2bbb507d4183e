// The C++ core alone: pipelined request/replies over one loopback TCP connection.
// Usage: tether_bench_core [calls] [window]
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "rpc/dispatch_queue.hpp"
#include "rpc/listener.hpp"

using namespace tether;

namespace {

// Answers every request with an empty reply, through the same DispatchQueue a server uses.
class Echo final : public rpc::RequestHandler {
 public:
  explicit Echo(asio::any_io_executor executor)
      : queue_(executor, rpc::DispatchQueue::Options{1}, [](const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) {
          wire::OutFrame reply;
          reply.header.type = wire::MessageType::reply;
          reply.header.request_id = frame.header.request_id;
          connection->send(std::move(reply));
        }) {}
  void on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) override {
    std::vector<wire::Frame> one;
    one.push_back(std::move(frame));
    on_requests(connection, std::move(one));
  }
  void on_requests(const std::shared_ptr<rpc::Connection>& connection, std::vector<wire::Frame>&& frames) override {
    queue_.submit(connection, std::move(frames));
  }
  void stop() { queue_.stop(); }

 private:
  rpc::DispatchQueue queue_;
};

// Counts replies and keeps `window` calls in flight.
class Window final : public rpc::ReplySink {
 public:
  explicit Window(std::size_t window) : free_(window) {}
  void on_frame(wire::Frame&&) override { release(); }
  void on_failure(const Error& error) override {
    std::fprintf(stderr, "call failed: %s\n", error.message.c_str());
    std::exit(1);
  }
  void acquire() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      ++free_;
      ++done_;
    }
    ready_.notify_one();
  }
  void wait_for(std::size_t total) {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return done_ >= total; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::size_t free_;
  std::size_t done_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::size_t calls = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 500000;
  std::size_t window = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  rpc::Runtime server_runtime(2), client_runtime(1);
  auto echo = std::make_shared<Echo>(server_runtime.executor());
  auto listener = rpc::Listener::listen(server_runtime, net::Endpoint{net::Endpoint::Kind::tcp, "127.0.0.1", 0, ""}, {}, {},
                                        echo);
  if (!listener) return std::fprintf(stderr, "%s\n", listener.error().message.c_str()), 1;
  auto connection = rpc::connect(client_runtime, (*listener)->endpoint(), {}, {}, nullptr, std::chrono::seconds(10));
  if (!connection) return std::fprintf(stderr, "%s\n", connection.error().message.c_str()), 1;
  auto sink = std::make_shared<Window>(window);
  auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < calls; ++i) {
    sink->acquire();
    wire::OutFrame frame;
    frame.header.type = wire::MessageType::request;
    frame.meta = std::string("echo\0echo", 9);
    // Like a Python future: the caller does not wait, so requests leave in batched writes.
    rpc::Connection::DeferFlush defer(connection->get());
    (*connection)->call(std::move(frame), sink);
  }
  sink->wait_for(calls);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("core pipelined request/replies: %.0f per second (%zu calls, window %zu)\n", calls / seconds, calls, window);
  (*connection)->close("done");
  (*listener)->close();
  server_runtime.stop();
  echo->stop();
  return 0;
}
