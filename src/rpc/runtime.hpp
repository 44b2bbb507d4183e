// The io context and the threads that run it. A server owns one; proxies share one per process
// that the owner (the Python module, or a C++ program) creates and passes in: no hidden singleton.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <asio.hpp>

namespace tether::rpc {

// Owned through shared_ptr where connections may outlive their owner: each connection then keeps
// its runtime (and so the io context its socket belongs to) alive.
class Runtime : public std::enable_shared_from_this<Runtime> {
 public:
  // Run on each io thread when it starts and just before it ends; an embedding uses them to give
  // its threads lasting per-thread state (the Python layer keeps one thread state per io thread).
  struct ThreadHooks {
    std::function<void()> on_start;
    std::function<void()> on_exit;
  };
  // Each thread runs the io loop and also runs the requests it reads (see docs/design.md).
  explicit Runtime(std::size_t threads, ThreadHooks hooks = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  asio::io_context& context() { return context_; }
  asio::any_io_executor executor() { return context_.get_executor(); }
  // Stops the loop and joins the threads; a no-op when called again. With `drain`, the threads
  // first finish the work already there (completions of closed sockets, cancelled timers) for up to
  // that long, so no queued handler is left holding a connection.
  void stop(std::chrono::milliseconds drain = std::chrono::milliseconds(0));
  bool running_in_this_thread() const;

 private:
  asio::io_context context_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  std::mutex finished_mutex_;
  std::condition_variable finished_changed_;
  std::size_t finished_ = 0;  // threads whose loop ran out of work
};

}  // namespace tether::rpc
