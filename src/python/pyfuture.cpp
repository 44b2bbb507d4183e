// tether.Future from C++ (see python/tether/future.py for the Python side of the contract).
#include "python/pyfuture.hpp"

#include "python/pycodec.hpp"
#include "python/pydispatch.hpp"

namespace tether::python {
namespace {

struct FutureNames {
  PyObject* type = nullptr;  // tether.Future
  PyObject* pending = nullptr;
  PyObject* finished = nullptr;
  PyObject* state = PyUnicode_InternFromString("_state");
  PyObject* result = PyUnicode_InternFromString("_result");
  PyObject* exception = PyUnicode_InternFromString("_exception");
  PyObject* contended = PyUnicode_InternFromString("_contended");
  PyObject* channel = PyUnicode_InternFromString("_channel");
  PyObject* request_id = PyUnicode_InternFromString("_request_id");
  PyObject* settle = PyUnicode_InternFromString("_settle");
};

FutureNames& names() {
  static FutureNames instance;  // built on first use, under the GIL, and kept for the process
  return instance;
}

bool set_attr(PyObject* object, PyObject* name, PyObject* value) { return PyObject_SetAttr(object, name, value) == 0; }

// The base class's path, through Future._settle: locked against cancel(), wakes waiters, runs
// done-callbacks; a future already done (cancelled by its caller) keeps its state.
void complete_slowly(PyObject* future, PyObject* outcome, bool is_exception) {
  PyObject* r = PyObject_CallMethodObjArgs(future, names().settle, outcome, is_exception ? Py_True : Py_False, nullptr);
  if (!r) PyErr_WriteUnraisable(future);  // a broken future is a bug worth seeing, not hiding
  Py_XDECREF(r);
}

}  // namespace

void set_future_type(PyObject* type) {
  auto& n = names();
  Py_XINCREF(type);
  Py_XSETREF(n.type, type);
  if (!n.pending) {
    PyObject* base = PyImport_ImportModule("concurrent.futures._base");
    if (!base) return;
    n.pending = PyObject_GetAttrString(base, "PENDING");
    n.finished = PyObject_GetAttrString(base, "FINISHED");
    Py_DECREF(base);
  }
}

PyObject* new_future(PyObject* channel, std::uint64_t request_id) {
  auto& n = names();
  if (!n.type || !n.finished) {
    PyErr_SetString(PyExc_RuntimeError, "tether.Future is not registered with the engine");
    return nullptr;
  }
  // object.__new__(tether.Future): its attributes are class defaults until they change.
  auto* type = reinterpret_cast<PyTypeObject*>(n.type);
  PyObject* no_args = PyTuple_New(0);
  PyObject* future = no_args ? type->tp_new(type, no_args, nullptr) : nullptr;
  Py_XDECREF(no_args);
  if (!future) return nullptr;
  PyObject* id = PyLong_FromUnsignedLongLong(request_id);
  bool ok = id && set_attr(future, n.channel, channel) && set_attr(future, n.request_id, id);
  Py_XDECREF(id);
  if (!ok) Py_CLEAR(future);
  return future;
}

void set_future_request_id(PyObject* future, std::uint64_t request_id) {
  PyObject* id = PyLong_FromUnsignedLongLong(request_id);
  if (!id || !set_attr(future, names().request_id, id)) PyErr_Clear();
  Py_XDECREF(id);
}

void complete_future(PyObject* future, PyObject* outcome, bool is_exception) {
  auto& n = names();
  // Nothing here may run Python code, so no other thread sees the future between the checks and
  // the stores; a thread that starts waiting later takes the lock, finds it finished and returns.
  // A store can allocate (the future's attribute dict), and in Python 3.11 an allocation can start
  // the cyclic GC, whose finalizers run Python code and may hand the GIL to a thread waiting on this
  // very future: it would change the future's dict while this store is half done (the soak crashed
  // so). The GC waits until the stores are done.
  int gc_was_enabled = PyGC_Disable();
  PyObject* contended = PyObject_GetAttr(future, n.contended);
  PyObject* state = contended == Py_False ? PyObject_GetAttr(future, n.state) : nullptr;
  bool fast = state == n.pending;
  Py_XDECREF(contended);
  Py_XDECREF(state);
  PyErr_Clear();
  if (fast) fast = set_attr(future, is_exception ? n.exception : n.result, outcome) && set_attr(future, n.state, n.finished);
  if (gc_was_enabled) PyGC_Enable();
  if (!fast) complete_slowly(future, outcome, is_exception);
  Py_DECREF(outcome);
}

FutureSink::FutureSink(PyObject* future, PyObject* channel, ConnectionState* state, bool pickle_allowed)
    : future_(Py_NewRef(future)), channel_(Py_XNewRef(channel)), state_(state), pickle_allowed_(pickle_allowed) {}

FutureSink::~FutureSink() {
  if (!Py_IsInitialized()) return;
  PyGILState_STATE gil = PyGILState_Ensure();
  Py_XDECREF(future_);
  Py_XDECREF(channel_);
  PyGILState_Release(gil);
}

void FutureSink::on_frame(wire::Frame&& frame) {
  std::lock_guard lock(state_->completions_mutex);
  state_->completions.push_back(PendingCompletion{shared_from_this(), std::move(frame)});
}

void FutureSink::on_failure(const Error& error) {
  PyGILState_STATE gil = PyGILState_Ensure();
  if (PyObject* exception = exception_from_error(error)) complete_future(future_, exception, true);
  PyErr_Clear();
  PyGILState_Release(gil);
}

void FutureSink::complete_with(const wire::Frame& frame) {
  if (frame.header.type == wire::MessageType::error) {
    if (PyObject* exception = exception_from_frame(frame)) complete_future(future_, exception, true);
    PyErr_Clear();
    return;
  }
  if (PyObject* value = decode_body(frame, channel_, pickle_allowed_)) return complete_future(future_, value, false);
  // The reply could not be decoded: the caller gets that error instead of a value.
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  Py_XDECREF(type);
  Py_XDECREF(traceback);
  if (value) complete_future(future_, value, true);
}

}  // namespace tether::python
