// Error kinds shared by the C++ core, the wire protocol and Python, plus the Result type for
// expected failures and the one assertion macro for broken invariants.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tether {

// Each kind says whether a retry may help; docs/protocol.md lists the same table.
enum class ErrorKind {
  failed,         // the remote code raised; retrying will not help
  unimplemented,  // no such object or method, not exposed, unknown message type
  bad_request,    // malformed frame or payload, unsupported value, over a size limit
  denied,         // authentication failed or the encoding is not allowed
  overloaded,     // the peer refused for now; a retry later may help
  disconnected,   // the connection was lost before the reply; a retry may help
  timeout,        // the deadline passed; a retry may help
  cancelled,      // the caller gave up
};

std::string_view to_string(ErrorKind kind);
std::optional<ErrorKind> error_kind_from_string(std::string_view text);
bool retry_may_help(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::failed;
  std::string message;
};

// An expected failure is a value; a Result holds either a T or an Error.
template <typename T>
class Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}
  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  const T& value() const& { return std::get<0>(state_); }
  const Error& error() const { return std::get<1>(state_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Error> state_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

[[noreturn]] inline void assertion_failed(const char* expr, const char* file, int line, const char* why) {
  std::fprintf(stderr, "tether: invariant broken: %s (%s) at %s:%d\n", expr, why, file, line);
  std::abort();
}

}  // namespace tether

// Broken invariants abort with file and line; expected failures use Result instead.
#define TETHER_ASSERT(cond, why) \
  ((cond) ? (void)0 : ::tether::assertion_failed(#cond, __FILE__, __LINE__, why))
