// Runtime: an io_context run by a fixed set of threads.
#include "rpc/runtime.hpp"

#include <algorithm>

#include "tether/error.hpp"

namespace tether::rpc {

Runtime::Runtime(std::size_t threads, ThreadHooks hooks) : work_(asio::make_work_guard(context_)) {
  threads = std::max<std::size_t>(threads, 1);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this, hooks] {
      if (hooks.on_start) hooks.on_start();
      context_.run();
      {
        std::lock_guard lock(finished_mutex_);
        ++finished_;
      }
      finished_changed_.notify_all();
      if (hooks.on_exit) hooks.on_exit();
    });
}

Runtime::~Runtime() { stop(); }

void Runtime::stop(std::chrono::milliseconds drain) {
  TETHER_ASSERT(!running_in_this_thread(), "a runtime cannot stop itself from one of its own threads");
  work_.reset();
  if (drain.count() > 0 && !threads_.empty()) {
    std::unique_lock lock(finished_mutex_);
    finished_changed_.wait_for(lock, drain, [&] { return finished_ == threads_.size(); });
  }
  context_.stop();
  for (auto& thread : threads_)
    if (thread.joinable()) thread.join();
  threads_.clear();
}

bool Runtime::running_in_this_thread() const {
  auto self = std::this_thread::get_id();
  return std::any_of(threads_.begin(), threads_.end(), [&](const std::thread& t) { return t.get_id() == self; });
}

}  // namespace tether::rpc
