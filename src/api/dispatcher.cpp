// Requests to C++ servants (see dispatcher.hpp).
#include "api/dispatcher.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>

#include "wire/msgpack_util.hpp"

namespace tether::detail {

CallData::~CallData() {
  if (!answered.exchange(true) && !oneway && connection)
    api::send_error(*connection, request_id, RemoteError(ErrorKind::failed, where + ": the async method dropped its Reply without answering"));
}

}  // namespace tether::detail

namespace tether::api {
namespace {

// Items a stream may send before the caller grants more (docs/protocol.md section 5).
constexpr std::int64_t kInitialStreamCredit = 64;
// Async methods answering later for one connection at once; more are refused (protocol.md 9).
constexpr std::size_t kMaxAsyncCallsInFlight = 1024;

std::string demangle(const char* name) {
  int status = 0;
  char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && readable ? readable : name;
  std::free(readable);
  return out;
}

template <typename T>
void forget(ConnectionState* state, std::unordered_map<std::uint64_t, std::weak_ptr<T>> ConnectionState::*table, std::uint64_t id) {
  if (!state) return;
  std::lock_guard lock(state->mutex);
  (state->*table).erase(id);
}

}  // namespace

// ---- per-connection state ----

std::uint64_t ConnectionState::export_servant(const std::shared_ptr<Servant>& servant) {
  std::lock_guard lock(mutex);
  auto [it, fresh] = export_ids.try_emplace(servant.get(), next_export);
  if (fresh) exports[next_export++] = servant;
  return it->second;
}

std::shared_ptr<Servant> ConnectionState::exported(std::uint64_t id) {
  std::lock_guard lock(mutex);
  auto it = exports.find(id);
  return it == exports.end() ? nullptr : it->second;
}

ConnectionState* state_of(const rpc::Connection& connection) { return dynamic_cast<ConnectionState*>(connection.attachment()); }

// ---- answers ----

void send_error(rpc::Connection& connection, std::uint64_t request_id, const RemoteError& error) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::error;
  frame.header.request_id = request_id;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = wire::pack_error_body(wire::ErrorBody{error.kind(), error.message(), error.remote_type(), error.traceback()});
  connection.send(std::move(frame));
}

RemoteError error_from_exception(std::exception_ptr exception, const std::string& where) {
  try {
    std::rethrow_exception(exception);
  } catch (const RemoteError& e) {
    return e;
  } catch (const OutOfRange& e) {
    return RemoteError(ErrorKind::failed, where + ": " + e.what(), "builtins.OverflowError");
  } catch (const TypeMismatch& e) {
    return RemoteError(ErrorKind::failed, where + ": " + e.what(), "builtins.TypeError");
  } catch (const std::exception& e) {
    return RemoteError(ErrorKind::failed, e.what(), demangle(typeid(e).name()));
  } catch (...) {
    return RemoteError(ErrorKind::failed, where + " threw something that is not a std::exception", "");
  }
}

void send_value(rpc::Connection& connection, std::uint64_t request_id, wire::MessageType type, const Value& value,
                const std::string& where) {
  wire::OutFrame frame;
  frame.header.type = type;
  frame.header.request_id = request_id;
  frame.header.encoding = wire::Encoding::msgpack;
  EncodeContext context{state_of(connection), &connection};
  if (auto encoded = encode_value(value, frame, context); !encoded)
    return send_error(connection, request_id, RemoteError(ErrorKind::bad_request, where + ": the result cannot be sent: " + encoded.error().message));
  connection.send(std::move(frame));
}

// ---- the handler ----

ObjectHandler::ObjectHandler(asio::any_io_executor executor, std::size_t limit, bool run_on_reader, std::weak_ptr<detail::ClientCore> home)
    : QueuingRequestHandler(executor, rpc::DispatchQueue::Options{std::max<std::size_t>(limit, 1), 256, std::chrono::microseconds(1000), run_on_reader}),
      home_(std::move(home)) {}

void ObjectHandler::publish(const std::string& name, std::shared_ptr<Servant> servant) {
  std::unique_lock lock(published_mutex_);
  published_[name] = std::move(servant);
}

bool ObjectHandler::unpublish(const std::string& name) {
  std::unique_lock lock(published_mutex_);
  return published_.erase(name) > 0;
}

void ObjectHandler::on_open(rpc::Connection& connection) { connection.set_attachment(std::make_unique<ConnectionState>()); }

std::shared_ptr<Servant> ObjectHandler::find_target(const std::shared_ptr<rpc::Connection>& connection, const std::string& object) {
  if (!object.empty() && object[0] == '#') {
    char* end = nullptr;
    auto id = std::strtoull(object.c_str() + 1, &end, 10);
    auto* state = state_of(*connection);
    return state && end && *end == '\0' ? state->exported(id) : nullptr;
  }
  std::shared_lock lock(published_mutex_);
  auto it = published_.find(object);
  return it == published_.end() ? nullptr : it->second;
}

namespace {

thread_local const rpc::Connection* current_caller = nullptr;

}  // namespace

const rpc::Connection* current_caller_connection() { return current_caller; }

CallScope::CallScope(const rpc::Connection& connection) : previous_(std::exchange(current_caller, &connection)) {}
CallScope::~CallScope() { current_caller = previous_; }

void ObjectHandler::on_request(const std::shared_ptr<rpc::Connection>& connection, wire::Frame&& frame) {
  const auto id = frame.header.request_id;
  const bool oneway = frame.header.flags & wire::kOneway;
  auto reject = [&](ErrorKind kind, std::string message, std::string type = "") {
    if (!oneway) send_error(*connection, id, RemoteError(kind, std::move(message), std::move(type)));
  };
  auto separator = frame.meta.find('\0');
  if (separator == std::string::npos) return reject(ErrorKind::bad_request, "request meta must be 'object\\0method'");
  std::string object = frame.meta.substr(0, separator);
  std::string method_name = frame.meta.substr(separator + 1);
  std::string where = object + "." + method_name;
  if (frame.header.encoding != wire::Encoding::msgpack)
    return reject(frame.header.encoding == wire::Encoding::pickle ? ErrorKind::denied : ErrorKind::bad_request,
                  "this C++ server accepts the msgpack encoding only");
  auto body = decode_frame_body(std::move(frame), DecodeContext{{}, {}, connection, home_});
  if (!body) return reject(ErrorKind::bad_request, where + ": " + body.error().message);
  const Value& b = *body;
  if (b.kind() != Value::Kind::list || b.size() != 2 || b[0].kind() != Value::Kind::list ||
      (b[1].kind() != Value::Kind::dict && !b[1].is_nil()))
    return reject(ErrorKind::bad_request, where + ": the request body must be [args, kwargs]");
  Value::Entries kwargs = b[1].is_nil() ? Value::Entries{} : b[1].entries();
  Args args(b[0].items(), std::move(kwargs));
  if (object == "$meta" && method_name == "describe") {
    if (!oneway) describe(connection, id, args);
    return;
  }
  bool calling_callback = !object.empty() && object[0] == '#' && method_name == "__call__";
  if (method_name.empty() || (method_name[0] == '_' && !calling_callback))
    return reject(ErrorKind::unimplemented, "method '" + method_name + "' is not remotely callable (private name)");
  auto servant = find_target(connection, object);
  if (!servant) return reject(ErrorKind::unimplemented, "no object '" + object + "' here", "builtins.LookupError");
  const auto* method = servant->find(method_name);
  if (!method) return reject(ErrorKind::unimplemented, "'" + object + "' has no method '" + method_name + "'");
  auto names = connection->negotiated().names();
  if (!servant->allows(method_name, names))
    return reject(ErrorKind::denied, (names.empty() ? std::string("an anonymous caller") : "caller " + names.front()) +
                                         " may not call '" + where + "'");
  CallScope scope(*connection);
  if (method->kind == Servant::Method::Kind::stream) {
    if (oneway) return;
    return run_stream(connection, id, where, *method, args);
  }
  run(connection, id, oneway, where, *method, std::move(args));
}

void ObjectHandler::run(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, bool oneway, const std::string& where,
                        const Servant::Method& method, Args&& args) {
  if (method.kind == Servant::Method::Kind::async) {
    auto call = std::make_shared<detail::CallData>();
    call->connection = connection;
    call->request_id = id;
    call->oneway = oneway;
    call->where = where;
    call->home = home_;
    if (auto* state = state_of(*connection)) {
      std::lock_guard lock(state->mutex);
      if (state->async_calls.size() >= kMaxAsyncCallsInFlight) {
        call->answered = true;  // refused, not dropped: no second answer from the destructor
        if (!oneway)
          send_error(*connection, id, RemoteError(ErrorKind::overloaded, "too many async calls in flight on this connection (limit " +
                                                                             std::to_string(kMaxAsyncCallsInFlight) + ")"));
        return;
      }
      state->async_calls[id] = call;
    }
    try {
      method.async(std::move(args), Reply(call));
    } catch (...) {
      Reply(call).fail(error_from_exception(std::current_exception(), where));
    }
    return;
  }
  try {
    Value result = method.plain(args);
    if (!oneway) send_value(*connection, id, wire::MessageType::reply, result, where);
  } catch (...) {
    if (!oneway) send_error(*connection, id, error_from_exception(std::current_exception(), where));
  }
}

void ObjectHandler::run_stream(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, const std::string& where,
                               const Servant::Method& method, const Args& args) {
  auto stream = std::make_shared<detail::StreamData>();
  stream->connection = connection;
  stream->request_id = id;
  stream->home = home_;
  stream->credit = kInitialStreamCredit;
  auto* state = state_of(*connection);
  if (state) {
    std::lock_guard lock(state->mutex);
    stream->gone = state->closed;
    state->streams[id] = stream;
  }
  StreamWriter writer(stream);
  try {
    method.streamed(args, writer);
    send_value(*connection, id, wire::MessageType::reply, Value(), where);
  } catch (...) {
    send_error(*connection, id, error_from_exception(std::current_exception(), where));
  }
  forget(state, &ConnectionState::streams, id);
}

void ObjectHandler::describe(const std::shared_ptr<rpc::Connection>& connection, std::uint64_t id, const Args& args) {
  std::shared_ptr<Servant> servant;
  std::string name = args.size() == 1 && args[0].kind() == Value::Kind::string ? args[0].as_string() : "";
  if (!name.empty() && name[0] != '$') servant = find_target(connection, name);
  if (!servant)
    return send_error(*connection, id, RemoteError(ErrorKind::failed, "no object '" + name + "' here", "builtins.LookupError"));
  using K = Servant::Method::Kind;
  auto list = [](std::vector<std::string> names) {
    Value::Items items(names.begin(), names.end());
    return Value(std::move(items));
  };
  Value answer{list(servant->names()), list(servant->names(K::oneway)), list(servant->names(K::stream))};
  send_value(*connection, id, wire::MessageType::reply, answer, "$meta.describe");
}

void ObjectHandler::on_cancel(rpc::Connection& connection, std::uint64_t request_id) {
  auto* state = state_of(connection);
  if (!state) return;
  std::shared_ptr<detail::StreamData> stream;
  {
    std::lock_guard lock(state->mutex);
    if (auto it = state->async_calls.find(request_id); it != state->async_calls.end())
      if (auto call = it->second.lock()) call->cancelled = true;
    if (auto it = state->streams.find(request_id); it != state->streams.end()) stream = it->second.lock();
  }
  if (!stream) return;
  {
    std::lock_guard lock(stream->mutex);
    stream->gone = true;
  }
  stream->changed.notify_all();
}

void ObjectHandler::on_credit(rpc::Connection& connection, std::uint64_t request_id, std::uint64_t count) {
  auto* state = state_of(connection);
  if (!state) return;
  std::shared_ptr<detail::StreamData> stream;
  {
    std::lock_guard lock(state->mutex);
    if (auto it = state->streams.find(request_id); it != state->streams.end()) stream = it->second.lock();
  }
  if (!stream) return;  // not a running stream: dropped, as the protocol says
  {
    std::lock_guard lock(stream->mutex);
    stream->credit += static_cast<std::int64_t>(std::min<std::uint64_t>(count, 1u << 30));
  }
  stream->changed.notify_all();
}

void ObjectHandler::on_closed(rpc::Connection& connection, const Error&) {
  auto* state = state_of(connection);
  if (!state) return;
  std::vector<std::shared_ptr<detail::StreamData>> streams;
  {
    std::lock_guard lock(state->mutex);
    state->closed = true;
    for (auto& [id, weak] : state->streams)
      if (auto stream = weak.lock()) streams.push_back(std::move(stream));
    for (auto& [id, weak] : state->async_calls)
      if (auto call = weak.lock()) call->cancelled = true;
    state->exports.clear();  // the peer can no longer call them; their servants may go
    state->export_ids.clear();
  }
  for (auto& stream : streams) {
    {
      std::lock_guard lock(stream->mutex);
      stream->gone = true;
    }
    stream->changed.notify_all();
  }
}

}  // namespace tether::api

namespace tether {

std::optional<CallContext> current_call() {
  const rpc::Connection* connection = api::current_caller_connection();
  if (!connection) return std::nullopt;
  const auto& negotiated = connection->negotiated();
  CallContext context;
  context.names = negotiated.names();
  auto common = rpc::common_name(negotiated.certificate_subject);
  context.peer = !common.empty() ? common : (context.names.empty() ? "" : context.names.front());
  context.certificate = negotiated.certificate_subject;
  context.address = connection->describe();
  context.authenticated = negotiated.authenticated;
  return context;
}

}  // namespace tether
