// tether.Future from C++: made without running Python code, completed with one GIL hold per batch.
// Every function here needs the GIL.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <memory>

#include "rpc/connection.hpp"

namespace tether::python {

struct ConnectionState;

// Remembers the Python class tether.Future (set once at import, with the other hooks).
void set_future_type(PyObject* type);

// A new pending tether.Future for request `request_id` on `channel`; nullptr with an exception set.
PyObject* new_future(PyObject* channel, std::uint64_t request_id);

// Fills in the request id that cancel() sends (known only once the request is sent).
void set_future_request_id(PyObject* future, std::uint64_t request_id);

// Completes `future` with a result or an exception (steals `outcome`). A future nobody waits on
// or watches yet takes its outcome directly; otherwise set_result / set_exception run, which
// wake waiters and run callbacks. A future already done (cancelled by its caller) ignores it.
void complete_future(PyObject* future, PyObject* outcome, bool is_exception);

// The reply sink of one future. Replies are queued on the connection by the io thread and
// completed together at the end of its read (one GIL hold per batch, not per reply).
class FutureSink final : public rpc::ReplySink, public std::enable_shared_from_this<FutureSink> {
 public:
  // Takes new references to `future` and `channel` (the Channel that decodes the reply).
  FutureSink(PyObject* future, PyObject* channel, ConnectionState* state, bool pickle_allowed);
  ~FutureSink() override;
  void on_frame(wire::Frame&& frame) override;
  void on_failure(const Error& error) override;
  void complete_with(const wire::Frame& frame);  // GIL held

 private:
  PyObject* future_;
  PyObject* channel_;
  ConnectionState* state_;  // the connection's; it outlives every call pending on it
  bool pickle_allowed_;
};

}  // namespace tether::python
