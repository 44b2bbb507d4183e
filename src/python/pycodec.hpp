// Python values <-> the msgpack tether profile (docs/protocol.md, "Encodings"), and pickle framing.
// Every function here needs the GIL.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "wire/frame.hpp"
#include "wire/msgpack_util.hpp"

namespace tether::python {

// Owns one Python reference for a scope.
struct PyRef {
  PyObject* p;
  explicit PyRef(PyObject* o = nullptr) : p(o) {}
  ~PyRef() { Py_XDECREF(p); }
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  PyObject* release() { return std::exchange(p, nullptr); }
  explicit operator bool() const { return p != nullptr; }
};

// Hooks into the Python layer, set once by tether/__init__.py (owned references).
struct Hooks {
  PyObject* encoders = nullptr;       // dict: type -> (name, to_state)
  PyObject* decoders = nullptr;       // dict: name -> from_state
  PyObject* export_object = nullptr;  // callable(channel, obj) -> int id, or None when obj is plain data
  PyObject* make_ref = nullptr;       // callable(channel, kind, value) -> proxy
  PyObject* make_error = nullptr;     // callable(kind, message, type, args, traceback) -> exception
  PyObject* pickle_dumps = nullptr;   // callable(obj) -> (bytes, [buffers])
  PyObject* pickle_loads = nullptr;   // callable(bytes, [buffers]) -> obj
  PyObject* format_exception = nullptr;  // callable(exc) -> (type name, args, traceback str)
  PyObject* run_async = nullptr;         // callable(coroutine, responder): runs it on the server's loop
  PyObject* call_context = nullptr;      // contextvars.ContextVar set to the caller's peer tuple during a call
};
Hooks& hooks();

// Context for one encode: where out-of-band segments go and whose connection callbacks export to.
struct EncodeContext {
  std::vector<std::byte>* out = nullptr;  // the packer's buffer: ext headers are patched in place
  std::vector<wire::OutFrame::Segment>* segments = nullptr;
  PyObject* channel = nullptr;  // borrowed: passed to export_object / make_ref
};

// Encodes `value` as the msgpack tether profile; returns false with a Python exception set.
bool encode_value(PyObject* value, wire::Packer& packer, EncodeContext& context);
// Encodes into a frame's payload (and segments) with the given encoding.
bool encode_into(PyObject* value, wire::Encoding encoding, wire::OutFrame& frame, PyObject* channel);

// Decodes a frame body; returns a new reference, or nullptr with a Python exception set. A pickle
// body is refused unless `pickle_allowed` (the connection negotiated pickle): unpickling runs code.
PyObject* decode_body(const wire::Frame& frame, PyObject* channel, bool pickle_allowed);

// Segment storage as a bytes object, so decoding hands the value over without a copy. Takes the
// GIL itself; called by the frame decoder on an io thread.
wire::SegmentBuffer allocate_bytes_segment(std::size_t size);

// Builds the Python exception for an ERROR frame or a core error (new reference).
PyObject* exception_from_error(const wire::ErrorBody& error);
PyObject* exception_from_error(const Error& error);
PyObject* exception_from_frame(const wire::Frame& frame);
// Raises (sets) the exception and returns nullptr, for `return raise_error(...)`.
std::nullptr_t raise_error(const Error& error);

// The ERROR body for the Python exception currently set (clears it).
std::vector<std::byte> error_body_from_current_exception(ErrorKind kind);

}  // namespace tether::python
