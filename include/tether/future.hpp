// Remote errors and futures of the C++ API. A Future<T> is the result of an asynchronous call: wait
// with get(), poll with ready(), chain with then(), or co_await it in a C++20 coroutine.
#pragma once

#include <chrono>
#include <coroutine>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "tether/convert.hpp"
#include "tether/error.hpp"

namespace tether {

// A call that failed: raised remotely (kind `failed`, with the remote exception's type such as
// "builtins.KeyError", its message and traceback) or failed on the way (disconnected, timeout,
// unimplemented, ...). docs/protocol.md section 7 lists the kinds.
class RemoteError : public std::runtime_error {
 public:
  RemoteError(ErrorKind kind, std::string message, std::string remote_type = "", std::string traceback = "");
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  const std::string& remote_type() const { return remote_type_; }
  const std::string& traceback() const { return traceback_; }

 private:
  ErrorKind kind_;
  std::string message_;
  std::string remote_type_;
  std::string traceback_;
};

namespace detail {
// The shared state of one call's outcome; completed once by the engine.
class FutureState {
 public:
  void set_value(Value value);
  void set_error(RemoteError error);
  bool ready() const;
  // Waits for the outcome; false if `deadline` passed first.
  bool wait_until(std::chrono::steady_clock::time_point deadline) const;
  void wait() const;
  const Value& value() const;  // throws the RemoteError when the call failed
  // Runs `callback` once the outcome is there: at once on this thread if it already is, else on
  // the engine thread that completes it.
  void on_ready(std::function<void()> callback);

  struct Shared;  // defined in src/api/future.cpp

 private:
  std::shared_ptr<Shared> shared_ = make_shared_state();
  static std::shared_ptr<Shared> make_shared_state();
};
}  // namespace detail

template <typename T = Value>
class Future {
 public:
  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState> state) : state_(std::move(state)) {}

  bool valid() const { return state_ != nullptr; }
  bool ready() const { return state_->ready(); }
  // The result: waits, then converts it to T; throws RemoteError, or TypeMismatch when the value
  // is not a T.
  T get() const {
    state_->wait();
    return convert();
  }
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return state_->wait_until(std::chrono::steady_clock::now() + timeout);
  }
  // Runs `callback(future)` when the outcome is there (on an engine thread; keep it short).
  void then(std::function<void(Future<T>)> callback) const {
    Future<T> self = *this;
    state_->on_ready([self, callback = std::move(callback)] { callback(self); });
  }

  // co_await: the coroutine resumes on the engine thread that completed the call.
  bool await_ready() const { return state_->ready(); }
  void await_suspend(std::coroutine_handle<> handle) const { state_->on_ready([handle] { handle.resume(); }); }
  T await_resume() const { return convert(); }

 private:
  T convert() const {
    if constexpr (std::is_void_v<T>) {
      state_->value();
    } else {
      return from_value<T>(state_->value());
    }
  }
  std::shared_ptr<detail::FutureState> state_;
};

}  // namespace tether
