// DispatchQueue: permits, stall checks and backlog accounting.
#include "rpc/dispatch_queue.hpp"

namespace tether::rpc {

DispatchQueue::DispatchQueue(asio::any_io_executor executor, Options options, Run run)
    : executor_(executor), options_(options), run_(std::move(run)), stall_timer_(std::make_unique<asio::steady_timer>(executor)) {
  if (options_.limit == 0) options_.limit = 1;
}

void DispatchQueue::submit(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& requests) {
  if (requests.empty()) return;
  enqueue(connection, std::move(requests));
  run();
}

void DispatchQueue::enqueue(const std::shared_ptr<Connection>& connection, std::vector<wire::Frame>&& requests) {
  if (requests.empty()) return;
  {
    std::lock_guard lock(mutex_);
    for (auto& frame : requests) queue_.push_back(Job{connection, std::move(frame)});
  }
  connection->adjust_backlog(static_cast<std::ptrdiff_t>(requests.size()), options_.max_backlog);
}

void DispatchQueue::run() {
  if (options_.run_on_reader)
    drain();
  else
    asio::post(executor_, [this] { drain(); });
}

void DispatchQueue::drain() {
  for (;;) {
    Job job;
    bool more_for_same_connection = false;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty() || running_ >= options_.limit) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      ++started_;
      if (!queue_.empty()) {
        more_for_same_connection = queue_.front().connection == job.connection;
        arm_stall_check_locked();
      }
    }
    job.connection->adjust_backlog(-1, options_.max_backlog);
    {
      // Replies to a pipelined batch are queued and flushed together by a posted task that an
      // idle io thread runs within microseconds, so a reply is never held behind a slow request.
      Connection::DeferFlush defer(more_for_same_connection ? job.connection.get() : nullptr);
      run_(job.connection, std::move(job.frame));
    }
    std::lock_guard lock(mutex_);
    --running_;
  }
}

void DispatchQueue::stop() {
  std::lock_guard lock(mutex_);
  stall_timer_.reset();
}

void DispatchQueue::arm_stall_check_locked() {
  if (check_armed_ || !stall_timer_) return;
  check_armed_ = true;
  started_at_check_ = started_;
  stall_timer_->expires_after(options_.stall_after);
  stall_timer_->async_wait([this](std::error_code ec) {
    if (!ec) on_stall_check();
  });
}

void DispatchQueue::on_stall_check() {
  bool help = false;
  {
    std::lock_guard lock(mutex_);
    check_armed_ = false;
    if (queue_.empty()) return;
    help = started_ == started_at_check_ && running_ < options_.limit;
    arm_stall_check_locked();
  }
  if (help) drain();  // this io thread takes the requests queued behind the stalled one
}

}  // namespace tether::rpc
