// In-memory transport: two byte queues with Asio-style completion posted to an executor.
#include "net/memory_transport.hpp"

#include <algorithm>
#include <deque>
#include <mutex>
#include <optional>

namespace tether::net {
namespace {

// One direction of the pipe. Shared by the writing end and the reading end.
class Channel {
 public:
  Channel(asio::any_io_executor executor, std::size_t capacity) : executor_(executor), capacity_(capacity) {}

  void read(std::span<std::byte> into, IoHandler handler) {
    std::unique_lock lock(mutex_);
    if (bytes_.empty() && !closed_) {
      pending_read_ = PendingRead{into, std::move(handler)};
      return;
    }
    auto taken = take(into);
    lock.unlock();
    flush_writers();
    asio::post(executor_, [handler = std::move(handler), taken] { handler(taken.first, taken.second); });
  }

  std::size_t put(std::span<const asio::const_buffer> buffers, std::error_code& ec) {
    std::unique_lock lock(mutex_);
    if (closed_) {
      ec = asio::error::broken_pipe;
      return 0;
    }
    std::size_t written = 0;
    for (const auto& b : buffers) {
      std::size_t room = capacity_ - std::min(capacity_, bytes_.size());
      std::size_t n = std::min(room, b.size());
      auto* p = static_cast<const std::byte*>(b.data());
      bytes_.insert(bytes_.end(), p, p + n);
      written += n;
      if (n < b.size()) break;
    }
    complete_pending_read(lock);
    return written;
  }

  void write_all(std::vector<asio::const_buffer> buffers, IoHandler handler) {
    std::unique_lock lock(mutex_);
    writers_.push_back(PendingWrite{std::move(buffers), 0, std::move(handler)});
    lock.unlock();
    flush_writers();
  }

  void close() {
    std::unique_lock lock(mutex_);
    closed_ = true;
    complete_pending_read(lock);
    lock.lock();
    auto writers = std::move(writers_);
    writers_.clear();
    lock.unlock();
    for (auto& w : writers)
      asio::post(executor_, [h = std::move(w.handler), n = w.done] { h(asio::error::broken_pipe, n); });
  }

 private:
  struct PendingRead {
    std::span<std::byte> into;
    IoHandler handler;
  };
  struct PendingWrite {
    std::vector<asio::const_buffer> buffers;
    std::size_t done;
    IoHandler handler;
  };

  std::pair<std::error_code, std::size_t> take(std::span<std::byte> into) {
    if (bytes_.empty()) return {asio::error::eof, 0};
    std::size_t n = std::min(into.size(), bytes_.size());
    std::copy_n(bytes_.begin(), n, into.begin());
    bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(n));
    return {{}, n};
  }

  // Called with the lock held; releases it. A waiting read is completed, and the room it leaves is
  // refilled from queued writers straight away, so bytes never sit in a writer with nobody to move them.
  void complete_pending_read(std::unique_lock<std::mutex>& lock) {
    std::vector<PendingWrite> finished;
    std::optional<std::pair<IoHandler, std::pair<std::error_code, std::size_t>>> read_done;
    move_writers_locked(finished);
    if (pending_read_ && (!bytes_.empty() || closed_)) {
      auto pending = std::move(*pending_read_);
      pending_read_.reset();
      read_done.emplace(std::move(pending.handler), take(pending.into));
      move_writers_locked(finished);
    }
    lock.unlock();
    for (auto& w : finished) asio::post(executor_, [h = std::move(w.handler), n = w.done] { h({}, n); });
    if (read_done)
      asio::post(executor_, [h = std::move(read_done->first), r = read_done->second] { h(r.first, r.second); });
  }

  // Moves queued async writes into the buffer as room allows; finished writers go to `finished`.
  void move_writers_locked(std::vector<PendingWrite>& finished) {
    while (!writers_.empty() && !closed_) {
      auto& w = writers_.front();
      std::size_t total = 0;
      for (const auto& b : w.buffers) total += b.size();
      while (w.done < total && bytes_.size() < capacity_) {
        std::size_t offset = w.done;
        for (const auto& b : w.buffers) {
          if (offset >= b.size()) {
            offset -= b.size();
            continue;
          }
          std::size_t n = std::min(b.size() - offset, capacity_ - bytes_.size());
          auto* p = static_cast<const std::byte*>(b.data()) + offset;
          bytes_.insert(bytes_.end(), p, p + n);
          w.done += n;
          break;
        }
      }
      if (w.done < total) return;
      finished.push_back(std::move(w));
      writers_.pop_front();
    }
  }

  void flush_writers() {
    std::unique_lock lock(mutex_);
    complete_pending_read(lock);
  }

  asio::any_io_executor executor_;
  std::size_t capacity_;
  std::mutex mutex_;
  std::deque<std::byte> bytes_;
  std::optional<PendingRead> pending_read_;
  std::deque<PendingWrite> writers_;
  bool closed_ = false;
};

class MemoryTransport final : public Transport {
 public:
  MemoryTransport(asio::any_io_executor executor, std::shared_ptr<Channel> in, std::shared_ptr<Channel> out)
      : executor_(executor), in_(std::move(in)), out_(std::move(out)) {}
  ~MemoryTransport() override { shutdown(); }

  void async_read_some(std::span<std::byte> into, IoHandler handler) override {
    in_->read(into, std::move(handler));
  }
  void async_write(std::vector<asio::const_buffer> buffers, IoHandler handler) override {
    out_->write_all(std::move(buffers), std::move(handler));
  }
  Result<std::size_t> try_write(std::span<const asio::const_buffer> buffers) override {
    std::error_code ec;
    std::size_t n = out_->put(buffers, ec);
    if (ec) return Error{ErrorKind::disconnected, "in-memory pipe closed"};
    return n;
  }
  Result<std::size_t> try_read(std::span<std::byte>) override { return std::size_t{0}; }
  bool wait_ready(bool, std::chrono::milliseconds) override { return false; }
  void shutdown() override {
    in_->close();
    out_->close();
  }
  std::string describe() const override { return "memory"; }
  asio::any_io_executor executor() override { return executor_; }

 private:
  asio::any_io_executor executor_;
  std::shared_ptr<Channel> in_;
  std::shared_ptr<Channel> out_;
};

}  // namespace

std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> make_memory_pipe(
    asio::any_io_executor executor, std::size_t capacity) {
  auto a_to_b = std::make_shared<Channel>(executor, capacity);
  auto b_to_a = std::make_shared<Channel>(executor, capacity);
  return {std::make_unique<MemoryTransport>(executor, b_to_a, a_to_b),
          std::make_unique<MemoryTransport>(executor, a_to_b, b_to_a)};
}

}  // namespace tether::net
