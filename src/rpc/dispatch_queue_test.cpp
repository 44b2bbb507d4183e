// Tests for the dispatch queue: work stealing when a request stalls, and backpressure.
#include "rpc/dispatch_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "net/memory_transport.hpp"
#include "rpc/runtime.hpp"

namespace tether::rpc {
namespace {

// Sends every request to a DispatchQueue; the test decides what running one means.
class QueueHandler final : public RequestHandler {
 public:
  QueueHandler(asio::any_io_executor executor, DispatchQueue::Options options, DispatchQueue::Run run)
      : queue(executor, options, std::move(run)) {}
  void on_request(const std::shared_ptr<Connection>& c, wire::Frame&& f) override {
    std::vector<wire::Frame> one;
    one.push_back(std::move(f));
    on_requests(c, std::move(one));
  }
  void on_requests(const std::shared_ptr<Connection>& c, std::vector<wire::Frame>&& frames) override {
    received += frames.size();
    queue.submit(c, std::move(frames));
  }
  DispatchQueue queue;
  std::atomic<std::size_t> received{0};
};

void reply(const std::shared_ptr<Connection>& connection, const wire::Frame& frame) {
  wire::OutFrame out;
  out.header.type = wire::MessageType::reply;
  out.header.request_id = frame.header.request_id;
  connection->send(std::move(out));
}

wire::OutFrame request() {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::request;
  frame.meta = std::string("o\0m", 3);
  return frame;
}

std::shared_ptr<Connection> connect_client(Runtime& runtime, std::shared_ptr<RequestHandler> server_handler,
                                           std::size_t pipe_capacity = 1 << 20) {
  auto [a, b] = net::make_memory_pipe(runtime.executor(), pipe_capacity);
  auto server = Connection::create(std::move(b), Connection::Role::server, {}, {}, std::move(server_handler));
  auto client = Connection::create(std::move(a), Connection::Role::client, {}, {}, nullptr);
  std::promise<void> ready;
  server->start([](const Result<Negotiated>&) {});
  client->start([&](const Result<Negotiated>&) { ready.set_value(); });
  ready.get_future().wait();
  return client;
}

// Two requests read together where the first waits for the second: only work stealing on a stall
// lets the second run, so a blocking method cannot serialize (or deadlock) its connection.
TEST(DispatchQueue, AStalledRequestLetsTheOnesBehindItRun) {
  Runtime runtime(3);
  std::promise<void> second_ran;
  auto second_ran_future = second_ran.get_future().share();
  std::atomic<int> seen{0};
  auto handler = std::make_shared<QueueHandler>(
      runtime.executor(), DispatchQueue::Options{2, 256, std::chrono::microseconds(1000)},
      [&](const std::shared_ptr<Connection>& connection, wire::Frame&& frame) {
        if (seen.fetch_add(1) == 0) {
          second_ran_future.wait();
        } else {
          second_ran.set_value();
        }
        reply(connection, frame);
      });
  auto client = connect_client(runtime, handler);
  auto first = std::make_shared<WaitingSink>(), second = std::make_shared<WaitingSink>();
  client->call(request(), first);
  client->call(request(), second);
  auto a = first->wait(Clock::now() + std::chrono::seconds(20));
  auto b = second->wait(Clock::now() + std::chrono::seconds(20));
  ASSERT_TRUE(a && a->ok());
  ASSERT_TRUE(b && b->ok());
  client->close("done");
  handler->queue.stop();
  runtime.stop();
}

// With a blocked request and a backlog limit of 4, the server stops reading: far fewer than the 2000
// requests sent reach it (the pause takes hold after the read already under way, so up to two
// reads' worth, a few hundred, may arrive). Once unblocked, reading resumes and all get replies.
TEST(DispatchQueue, AFullBacklogPausesReadingUntilItDrains) {
  Runtime runtime(2);
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> started;
  std::atomic<bool> first{true};
  auto handler = std::make_shared<QueueHandler>(
      runtime.executor(), DispatchQueue::Options{1, 4, std::chrono::microseconds(1000)},
      [&](const std::shared_ptr<Connection>& connection, wire::Frame&& frame) {
        if (first.exchange(false)) {
          started.set_value();
          released.wait();
        }
        reply(connection, frame);
      });
  auto client = connect_client(runtime, handler, 4096);
  std::vector<std::shared_ptr<WaitingSink>> sinks;
  constexpr std::size_t kSent = 2000;
  for (std::size_t i = 0; i < kSent; ++i) {
    sinks.push_back(std::make_shared<WaitingSink>());
    ASSERT_TRUE(client->call(request(), sinks.back()).ok());
  }
  started.get_future().wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // room for a broken pause to overrun
  EXPECT_LT(handler->received.load(), kSent / 2) << "a paused connection must not be read";
  release.set_value();
  for (auto& sink : sinks) {
    auto outcome = sink->wait(Clock::now() + std::chrono::seconds(20));
    ASSERT_TRUE(outcome && outcome->ok());
  }
  EXPECT_EQ(handler->received.load(), kSent);
  client->close("done");
  handler->queue.stop();
  runtime.stop();
}

}  // namespace
}  // namespace tether::rpc

namespace tether::rpc {
namespace {

// Queues each read's requests before the next read starts (as the Python and C++ servers do).
class OrderedQueueHandler final : public RequestHandler {
 public:
  OrderedQueueHandler(asio::any_io_executor executor, DispatchQueue::Run run)
      : queue(executor, DispatchQueue::Options{1, 1 << 20, std::chrono::microseconds(1000)}, std::move(run)) {}
  void on_request(const std::shared_ptr<Connection>&, wire::Frame&&) override { ADD_FAILURE() << "requests go through the queue"; }
  bool queues_requests() const override { return true; }
  void queue_requests(const std::shared_ptr<Connection>& c, std::vector<wire::Frame>&& frames) override {
    queue.enqueue(c, std::move(frames));
  }
  void run_queued() override { queue.run(); }
  DispatchQueue queue;
};

// With one request at a time (an actor), requests run in the order they were sent even though
// consecutive reads of the connection complete on different io threads (a read's batch once
// reached the queue after the next one, and an actor ran calls out of order).
TEST(DispatchQueue, BatchesOfOneConnectionKeepTheirOrderAcrossIoThreads) {
  Runtime runtime(4);
  std::mutex mutex;
  std::vector<std::uint64_t> order;
  auto handler = std::make_shared<OrderedQueueHandler>(runtime.executor(), [&](const std::shared_ptr<Connection>&, wire::Frame&& frame) {
    std::lock_guard lock(mutex);
    order.push_back(frame.header.request_id);
  });
  auto client = connect_client(runtime, handler, 512);  // a small pipe: many short reads
  constexpr std::uint64_t kRequests = 20000;
  std::uint64_t last = 0;
  for (std::uint64_t i = 0; i < kRequests; ++i) {
    auto frame = request();
    frame.header.flags |= wire::kOneway;
    auto sent = client->call(std::move(frame), nullptr);
    ASSERT_TRUE(sent);
    last = *sent;
  }
  for (int i = 0; i < 2000; ++i) {
    {
      std::lock_guard lock(mutex);
      if (order.size() == kRequests) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(order.size(), kRequests);
    EXPECT_EQ(order.back(), last);
    for (std::size_t i = 1; i < order.size(); ++i) ASSERT_LT(order[i - 1], order[i]) << "request " << order[i] << " ran before " << order[i - 1];
  }
  client->close("done");
  handler->queue.stop();
  runtime.stop();
}

}  // namespace
}  // namespace tether::rpc
