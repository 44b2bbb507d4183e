// Remote errors and the shared state of futures (see include/tether/future.hpp).
#include <condition_variable>
#include <mutex>
#include <vector>

#include "tether/future.hpp"

namespace tether {

RemoteError::RemoteError(ErrorKind kind, std::string message, std::string remote_type, std::string traceback)
    : std::runtime_error(remote_type.empty() ? std::string(to_string(kind)) + ": " + message : remote_type + ": " + message),
      kind_(kind),
      message_(std::move(message)),
      remote_type_(std::move(remote_type)),
      traceback_(std::move(traceback)) {}

namespace detail {

struct FutureState::Shared {
  mutable std::mutex mutex;
  mutable std::condition_variable done;
  bool ready = false;
  Value value;
  std::optional<RemoteError> error;
  std::vector<std::function<void()>> callbacks;
};

std::shared_ptr<FutureState::Shared> FutureState::make_shared_state() { return std::make_shared<Shared>(); }

namespace {
void complete(FutureState::Shared& s, std::unique_lock<std::mutex>& lock) {
  s.ready = true;
  auto callbacks = std::move(s.callbacks);
  lock.unlock();
  s.done.notify_all();
  for (auto& callback : callbacks) callback();
}
}  // namespace

void FutureState::set_value(Value value) {
  std::unique_lock lock(shared_->mutex);
  if (shared_->ready) return;
  shared_->value = std::move(value);
  complete(*shared_, lock);
}

void FutureState::set_error(RemoteError error) {
  std::unique_lock lock(shared_->mutex);
  if (shared_->ready) return;
  shared_->error.emplace(std::move(error));
  complete(*shared_, lock);
}

bool FutureState::ready() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->ready;
}

bool FutureState::wait_until(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(shared_->mutex);
  return shared_->done.wait_until(lock, deadline, [&] { return shared_->ready; });
}

void FutureState::wait() const {
  std::unique_lock lock(shared_->mutex);
  shared_->done.wait(lock, [&] { return shared_->ready; });
}

const Value& FutureState::value() const {
  std::lock_guard lock(shared_->mutex);
  if (!shared_->ready) throw std::logic_error("tether::Future: the outcome is not there yet");
  if (shared_->error) throw *shared_->error;
  return shared_->value;
}

void FutureState::on_ready(std::function<void()> callback) {
  std::unique_lock lock(shared_->mutex);
  if (!shared_->ready) {
    shared_->callbacks.push_back(std::move(callback));
    return;
  }
  lock.unlock();
  callback();
}

}  // namespace detail
}  // namespace tether
