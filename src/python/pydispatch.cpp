// Dispatcher: decode a request, find the object and method, call it, and send what comes back.
#include "python/pydispatch.hpp"

#include "python/pychannel.hpp"
#include "python/pycodec.hpp"
#include "python/pyfuture.hpp"

namespace tether::python {
namespace {

class Gil {
 public:
  Gil() : state_(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state_); }

 private:
  PyGILState_STATE state_;
};

wire::OutFrame frame_of(wire::MessageType type, std::uint64_t request_id) {
  wire::OutFrame frame;
  frame.header.type = type;
  frame.header.request_id = request_id;
  return frame;
}

void send_error(rpc::Connection& connection, std::uint64_t id, ErrorKind kind, std::string message) {
  auto frame = frame_of(wire::MessageType::error, id);
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = wire::pack_error_body(wire::ErrorBody{kind, std::move(message), "", ""});
  connection.send(std::move(frame));
}

// Sends a value as REPLY or STREAM_ITEM; an unencodable value becomes a bad_request error.
bool send_value(rpc::Connection& connection, std::uint64_t id, wire::MessageType type, PyObject* value,
                wire::Encoding encoding, PyObject* channel) {
  auto frame = frame_of(type, id);
  if (!encode_into(value, encoding, frame, channel)) {
    send_current_exception(connection, id, ErrorKind::bad_request);
    return false;
  }
  std::size_t size = frame.payload.size();
  for (const auto& segment : frame.segments) size += segment.bytes.size();
  Status status = ok_status();
  if (size < (1u << 20)) {
    status = connection.send(std::move(frame));
  } else {
    // A large reply may keep this thread writing for a while: other Python threads run meanwhile.
    Py_BEGIN_ALLOW_THREADS
    status = connection.send(std::move(frame));
    Py_END_ALLOW_THREADS
  }
  // A reply the caller would refuse (over its frame limit) is answered with that error instead.
  if (!status && status.error().kind == ErrorKind::bad_request) send_error(connection, id, ErrorKind::bad_request, status.error().message);
  return status.ok();
}

// Waits (GIL released) until the stream may send one more item; false when the caller cancelled
// or the connection closed. Credit is spent here.
bool take_stream_credit(rpc::Connection& connection, std::uint64_t id) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  bool granted = false;
  Py_BEGIN_ALLOW_THREADS
  {
    // The lock is released before the GIL is taken back: never hold a core lock while waiting for it.
    std::unique_lock lock(state->stream_mutex);
    state->stream_changed.wait(lock, [&] {
      return state->closed || state->cancelled.count(id) || state->credits[id] > 0;
    });
    granted = !state->closed && !state->cancelled.count(id);
    if (granted) --state->credits[id];
  }
  Py_END_ALLOW_THREADS
  return granted;
}

void end_stream(rpc::Connection& connection, std::uint64_t id) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  std::lock_guard lock(state->stream_mutex);
  state->cancelled.erase(id);
  state->credits.erase(id);
}

// Streams a generator's items within the caller's credit; the caller's CANCEL stops it.
void stream_items(rpc::Connection& connection, std::uint64_t id, PyObject* iterator, wire::Encoding encoding, PyObject* channel) {
  {
    auto* state = static_cast<ConnectionState*>(connection.attachment());
    std::lock_guard lock(state->stream_mutex);
    state->credits[id] += kInitialStreamCredit;
  }
  for (;;) {
    if (!take_stream_credit(connection, id)) return end_stream(connection, id);
    PyObject* item = PyIter_Next(iterator);
    if (!item) break;
    bool sent = send_value(connection, id, wire::MessageType::stream_item, item, encoding, channel);
    Py_DECREF(item);
    if (!sent) return end_stream(connection, id);
  }
  end_stream(connection, id);
  if (PyErr_Occurred()) {
    send_current_exception(connection, id, ErrorKind::failed);
    return;
  }
  send_value(connection, id, wire::MessageType::reply, Py_None, encoding, channel);
}

// The caller as Python sees it (tether.current_context()); built once per connection.
PyObject* peer_of(rpc::Connection& connection, ConnectionState& state) {
  if (state.peer) return state.peer;
  const auto& negotiated = connection.negotiated();
  PyRef names(PyFrozenSet_New(nullptr));
  for (const auto& name : negotiated.names()) {
    PyRef text(PyUnicode_DecodeUTF8(name.data(), static_cast<Py_ssize_t>(name.size()), "replace"));
    if (!text.p || PySet_Add(names.p, text.p) != 0) return nullptr;
  }
  state.peer = Py_BuildValue("(Os#s#O)", names.p, negotiated.certificate_subject.data(),
                             static_cast<Py_ssize_t>(negotiated.certificate_subject.size()), connection.describe().data(),
                             static_cast<Py_ssize_t>(connection.describe().size()),
                             negotiated.authenticated ? Py_True : Py_False);
  return state.peer;
}

// Whether the object's allow-list (entry[5]) lets the caller run `method`: its own set, else "*".
bool access_allowed(PyObject* entry, const std::string& method, PyObject* peer) {
  if (PyTuple_GET_SIZE(entry) < 6 || PyTuple_GET_ITEM(entry, 5) == Py_None) return true;
  PyObject* access = PyTuple_GET_ITEM(entry, 5);
  PyObject* allowed = PyDict_GetItemString(access, method.c_str());
  if (!allowed) allowed = PyDict_GetItemString(access, "*");
  if (!allowed) return true;
  PyObject* names = PyTuple_GET_ITEM(peer, 0);
  PyObject* iterator = PyObject_GetIter(names);
  bool found = false;
  while (PyObject* name = iterator ? PyIter_Next(iterator) : nullptr) {
    found = found || PySet_Contains(allowed, name) == 1;
    Py_DECREF(name);
  }
  Py_XDECREF(iterator);
  PyErr_Clear();
  return found;
}

// Sets tether.current_context()'s variable for the length of one call (async methods copy it).
class CallContext {
 public:
  explicit CallContext(PyObject* peer) {
    if (hooks().call_context && peer) token_ = PyContextVar_Set(hooks().call_context, peer);
  }
  ~CallContext() {
    if (!token_) return;
    if (PyContextVar_Reset(hooks().call_context, token_) != 0) PyErr_Clear();
    Py_DECREF(token_);
  }

 private:
  PyObject* token_ = nullptr;
};

std::string describe_caller(PyObject* peer) {
  PyObject* names = PyTuple_GET_ITEM(peer, 0);
  if (PySet_GET_SIZE(names) == 0) return "an anonymous caller";
  PyRef joined(PyUnicode_Join(PyRef(PyUnicode_FromString(", ")).p, names));
  const char* text = joined.p ? PyUnicode_AsUTF8(joined.p) : nullptr;
  PyErr_Clear();
  return text ? std::string("caller ") + text : "the caller";
}

}  // namespace

void send_current_exception(rpc::Connection& connection, std::uint64_t id, ErrorKind kind) {
  auto frame = frame_of(wire::MessageType::error, id);
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = error_body_from_current_exception(kind);
  connection.send(std::move(frame));
}

ConnectionState::~ConnectionState() {
  if (Py_IsInitialized()) {
    Gil gil;
    clear();
  }
}

void ConnectionState::clear() {
  Py_CLEAR(peer);
  Py_CLEAR(exports);
  Py_CLEAR(sessions);
  Py_CLEAR(channel);
  Py_CLEAR(async_calls);
}

void forget_async_call(rpc::Connection& connection, std::uint64_t request_id) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  if (!state || !state->async_calls) return;
  PyObject* key = PyLong_FromUnsignedLongLong(request_id);
  if (PyDict_DelItem(state->async_calls, key) != 0) PyErr_Clear();
  Py_DECREF(key);
}

PyObject* channel_for(const std::shared_ptr<rpc::Connection>& connection) {
  auto* state = static_cast<ConnectionState*>(connection->attachment());
  if (!state->channel) state->channel = make_channel_object(connection);
  return state->channel;
}

Dispatcher::Dispatcher(PyObject* published, asio::any_io_executor executor, std::size_t limit, bool run_on_reader)
    : QueuingRequestHandler(executor, rpc::DispatchQueue::Options{limit, 256, std::chrono::microseconds(1000), run_on_reader}),
      published_(published) {
  Py_XINCREF(published_);
}

Dispatcher::~Dispatcher() {
  if (Py_IsInitialized()) {
    Gil gil;
    Py_CLEAR(published_);
  }
}

void Dispatcher::on_open(rpc::Connection& connection) {
  connection.set_attachment(std::make_unique<ConnectionState>());
}

void Dispatcher::on_cancel(rpc::Connection& connection, std::uint64_t request_id) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  {
    // A running stream stops at its next item; a request not yet started is skipped. Cancels of
    // finished requests are dropped, and the set is capped against a peer that floods it.
    constexpr std::size_t kMaxRemembered = 4096;
    std::lock_guard lock(state->stream_mutex);
    bool running_stream = state->credits.count(request_id) > 0;
    bool not_started = request_id > state->highest_started && state->cancelled.size() < kMaxRemembered;
    if (running_stream || not_started) state->cancelled.insert(request_id);
  }
  state->stream_changed.notify_all();
  Gil gil;
  if (!state->async_calls) return;
  // An async method: its future leaves the table (held by us) before cancel() runs, because
  // cancel() runs Python code, during which the connection may close and clear the table.
  PyObject* key = PyLong_FromUnsignedLongLong(request_id);
  PyObject* running = PyDict_GetItem(state->async_calls, key);
  if (running == Py_None) PyDict_SetItem(state->async_calls, key, Py_False);  // still being scheduled
  if (running == Py_None || running == Py_False) running = nullptr;
  Py_XINCREF(running);
  if (running && PyDict_DelItem(state->async_calls, key) != 0) PyErr_Clear();
  Py_DECREF(key);
  if (!running) return;
  PyObject* cancelled = PyObject_CallMethod(running, "cancel", nullptr);
  Py_XDECREF(cancelled);
  PyErr_Clear();
  Py_DECREF(running);
}

void Dispatcher::on_batch_end(rpc::Connection& connection) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  std::vector<PendingCompletion> completions;
  {
    std::lock_guard lock(state->completions_mutex);
    if (state->completions.empty()) return;
    completions.swap(state->completions);
  }
  Gil gil;
  for (auto& pending : completions) pending.sink->complete_with(pending.frame);
  completions.clear();  // the futures' references are dropped while the GIL is still held
}

void Dispatcher::on_credit(rpc::Connection& connection, std::uint64_t request_id, std::uint64_t count) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  {
    std::lock_guard lock(state->stream_mutex);
    auto it = state->credits.find(request_id);
    if (it == state->credits.end()) return;  // not a running stream: dropped, as the protocol says
    it->second += static_cast<std::int64_t>(std::min<std::uint64_t>(count, 1u << 30));
  }
  state->stream_changed.notify_all();
}

void Dispatcher::on_closed(rpc::Connection& connection, const Error&) {
  auto* state = static_cast<ConnectionState*>(connection.attachment());
  {
    std::lock_guard lock(state->stream_mutex);
    state->closed = true;
  }
  state->stream_changed.notify_all();  // streams waiting for credit give up
  if (!Py_IsInitialized()) return;
  Gil gil;
  state->clear();
}

void Dispatcher::on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) {
  Gil gil;
  dispatch(connection, frame);
  if (PyErr_Occurred()) PyErr_Clear();
  // A request that ran after its connection closed (it was queued, or oneway) may have made the
  // state's Channel again, which owns the connection: cleared here, or the three keep each other.
  auto* state = static_cast<ConnectionState*>(connection->attachment());
  bool closed;
  {
    std::lock_guard lock(state->stream_mutex);
    closed = state->closed;
  }
  if (closed) state->clear();
}

void Dispatcher::dispatch(const std::shared_ptr<rpc::Connection>& connection, wire::Frame& frame) {
  auto id = frame.header.request_id;
  bool oneway = frame.header.flags & wire::kOneway;
  auto separator = frame.meta.find('\0');
  if (separator == std::string::npos) {
    if (!oneway) send_error(*connection, id, ErrorKind::bad_request, "request meta must be 'object\\0method'");
    return;
  }
  std::string object_name = frame.meta.substr(0, separator);
  std::string method = frame.meta.substr(separator + 1);
  auto reject = [&](ErrorKind kind, std::string message) {
    if (!oneway) send_error(*connection, id, kind, std::move(message));
  };
  bool calling_callback = !object_name.empty() && object_name[0] == '#' && method == "__call__";
  if (method.empty() || (method[0] == '_' && !calling_callback)) return reject(ErrorKind::unimplemented, "method '" + method + "' is not remotely callable (private name)");
  if (frame.header.encoding == wire::Encoding::pickle && !connection->negotiated().pickle_allowed)
    return reject(ErrorKind::denied, "pickle is not allowed on this connection");
  auto* state = static_cast<ConnectionState*>(connection->attachment());
  {
    std::lock_guard lock(state->stream_mutex);
    state->highest_started = std::max(state->highest_started, id);
    if (state->cancelled.erase(id)) return;  // cancelled before it started: the caller has moved on
  }

  // Find the target: an exported callback ("#id") or a published object.
  PyObject* target = nullptr;  // borrowed from the entry, which held_entry keeps alive
  PyObject* entry = nullptr;   // (target, mode, methods, oneway, streams) for published objects
  PyRef held_entry;
  // Held for the whole call: the state's reference goes when the connection closes (on_closed, or
  // on_request after a request that ran late), which may happen while this call has the GIL released.
  PyRef held_channel(Py_XNewRef(channel_for(connection)));
  PyObject* channel = held_channel.p;
  if (!object_name.empty() && object_name[0] == '#') {
    PyObject* key = PyLong_FromString(object_name.c_str() + 1, nullptr, 10);
    PyObject* exported = key && state->exports ? PyDict_GetItem(state->exports, key) : nullptr;  // (object, methods)
    Py_XDECREF(key);
    PyErr_Clear();
    if (!exported) return reject(ErrorKind::unimplemented, "no exported callback " + object_name + " on this connection");
    held_entry.p = Py_NewRef(exported);  // user code below may close the connection and clear the table
    target = PyTuple_GET_ITEM(exported, 0);
    PyObject* methods = PyTuple_GET_ITEM(exported, 1);
    // A function is called as a whole; an object only through the methods it exposes.
    bool allowed = false;
    if (methods == Py_None) {
      allowed = calling_callback;
    } else if (!calling_callback) {
      PyObject* name = PyUnicode_FromStringAndSize(method.data(), static_cast<Py_ssize_t>(method.size()));
      allowed = name && PySet_Contains(methods, name) == 1;
      Py_XDECREF(name);
      PyErr_Clear();
    }
    if (!allowed) return reject(ErrorKind::unimplemented, "callback " + object_name + " exposes no method '" + method + "'");
  } else {
    PyObject* key = PyUnicode_FromStringAndSize(object_name.data(), static_cast<Py_ssize_t>(object_name.size()));
    entry = key && published_ ? PyDict_GetItem(published_, key) : nullptr;
    Py_XDECREF(key);
    if (!entry) return reject(ErrorKind::unimplemented, "no object named '" + object_name + "' on this server");
    held_entry.p = Py_NewRef(entry);  // user code below may unregister the object
    PyObject* method_name = PyUnicode_FromStringAndSize(method.data(), static_cast<Py_ssize_t>(method.size()));
    int exposed = PySet_Contains(PyTuple_GET_ITEM(entry, 2), method_name);
    Py_DECREF(method_name);
    if (exposed != 1) return reject(ErrorKind::unimplemented, "object '" + object_name + "' has no exposed method '" + method + "'");
    PyObject* peer = peer_of(*connection, *state);
    if (!peer) return reject(ErrorKind::failed, "cannot describe the caller");
    if (!access_allowed(entry, method, peer))
      return reject(ErrorKind::denied, describe_caller(peer) + " may not call '" + object_name + "." + method + "'");
    target = PyTuple_GET_ITEM(entry, 0);
  }
  CallContext call_context(peer_of(*connection, *state));

  PyObject* request = decode_body(frame, channel, connection->negotiated().pickle_allowed);
  if (!request || !PyList_Check(request) || PyList_GET_SIZE(request) != 2 || !PyList_Check(PyList_GET_ITEM(request, 0))) {
    Py_XDECREF(request);
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "request body must be [args, kwargs]");
    if (oneway) return;
    return send_current_exception(*connection, id, ErrorKind::bad_request);
  }
  PyObject* kwargs = PyList_GET_ITEM(request, 1);
  if (kwargs == Py_None) kwargs = nullptr;
  if (kwargs && !PyDict_Check(kwargs)) {
    Py_DECREF(request);
    if (!oneway) send_error(*connection, id, ErrorKind::bad_request, "request kwargs must be a map or nil");
    return;
  }
  PyObject* args = PyList_AsTuple(PyList_GET_ITEM(request, 0));

  // The instance: shared, one per connection, or one per call.
  PyObject* instance = target;
  Py_INCREF(instance);
  if (entry) {
    const char* mode = PyUnicode_AsUTF8(PyTuple_GET_ITEM(entry, 1));
    if (mode && std::string_view(mode) == "percall") {
      Py_DECREF(instance);
      instance = PyObject_CallNoArgs(target);
    } else if (mode && std::string_view(mode) == "session") {
      if (!state->sessions) state->sessions = PyDict_New();
      PyObject* key = PyUnicode_FromString(object_name.c_str());
      PyObject* existing = PyDict_GetItem(state->sessions, key);
      Py_DECREF(instance);
      if (existing) {
        instance = Py_NewRef(existing);
      } else {
        instance = PyObject_CallNoArgs(target);
        if (instance) PyDict_SetItem(state->sessions, key, instance);
      }
      Py_DECREF(key);
    }
  }
  PyObject* result = nullptr;
  PyObject* bound = nullptr;
  if (instance) {
    bound = object_name[0] == '#' && method == "__call__" ? Py_NewRef(instance) : PyObject_GetAttrString(instance, method.c_str());
    if (bound) result = PyObject_Call(bound, args, kwargs);
    Py_DECREF(instance);
  }
  Py_DECREF(args);
  Py_DECREF(request);
  auto encoding = frame.header.encoding;
  if (!result && oneway) {
    // Nobody waits for the answer: the server's sys.unraisablehook gets the error, naming the method.
    PyErr_WriteUnraisable(bound);
    Py_XDECREF(bound);
    return;
  }
  Py_XDECREF(bound);
  if (!result) return send_current_exception(*connection, id, ErrorKind::failed);
  if (oneway) {
    Py_DECREF(result);
    return;
  }
  if (PyCoro_CheckExact(result) && hooks().run_async) {
    // The event loop finishes it and answers through the responder. Its table entry is reserved
    // (None) before scheduling, which runs Python and may let a CANCEL in: that CANCEL marks the
    // entry (False), and the future is cancelled as soon as we have it. The responder forgets the
    // entry when it answers.
    if (!state->async_calls) state->async_calls = PyDict_New();
    if (static_cast<std::size_t>(PyDict_Size(state->async_calls)) >= kMaxAsyncCallsInFlight) {
      // A peer that starts coroutines without end would hold unbounded memory: refused, not queued.
      PyRef closed(PyObject_CallMethod(result, "close", nullptr));
      PyErr_Clear();
      Py_DECREF(result);
      return send_error(*connection, id, ErrorKind::overloaded,
                        "too many async calls in flight on this connection (limit " + std::to_string(kMaxAsyncCallsInFlight) + ")");
    }
    PyRef key(PyLong_FromUnsignedLongLong(id));
    PyDict_SetItem(state->async_calls, key.p, Py_None);
    PyObject* responder = make_responder_object(connection, id, encoding);
    PyRef scheduled(PyObject_CallFunctionObjArgs(hooks().run_async, result, responder, nullptr));
    Py_DECREF(responder);
    Py_DECREF(result);
    PyObject* entry_now = state->async_calls ? PyDict_GetItem(state->async_calls, key.p) : nullptr;
    if (!scheduled) {
      if (entry_now && PyDict_DelItem(state->async_calls, key.p) != 0) PyErr_Clear();
      return send_current_exception(*connection, id, ErrorKind::failed);
    }
    if (entry_now == Py_False) {
      if (PyDict_DelItem(state->async_calls, key.p) != 0) PyErr_Clear();
      PyRef cancelled(PyObject_CallMethod(scheduled.p, "cancel", nullptr));
      PyErr_Clear();
    } else if (entry_now) {
      PyDict_SetItem(state->async_calls, key.p, scheduled.p);
    }
    return;
  }
  if (PyGen_Check(result)) {
    stream_items(*connection, id, result, encoding, channel);
    Py_DECREF(result);
    return;
  }
  send_value(*connection, id, wire::MessageType::reply, result, encoding, channel);
  Py_DECREF(result);
}

}  // namespace tether::python
