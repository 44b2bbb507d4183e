// The io context and the threads that run it. A server owns one; proxies share one per process
// that the owner (the Python module, or a C++ program) creates and passes in: no hidden singleton.
#pragma once

#include <functional>
#include <memory>
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
  // Stops the loop and joins the threads; a no-op when called again.
  void stop();
  bool running_in_this_thread() const;

 private:
  asio::io_context context_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

}  // namespace tether::rpc
