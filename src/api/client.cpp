// tether::Client, Proxy, Stream and NameServer (see include/tether/client.hpp).
#include <deque>

#include "api/client_core.hpp"
#include "api/security.hpp"
#include "rpc/listener.hpp"
#include "wire/msgpack_util.hpp"

namespace tether {
namespace detail {

// ---- ClientCore ----

ClientCore::~ClientCore() { close(); }

void ClientCore::start_locked() {
  if (io_) return;
  io_ = std::make_shared<rpc::Runtime>(1);
  callbacks_ = std::make_shared<rpc::Runtime>(std::max<std::size_t>(options_.callback_threads, 1));
  handler_ = std::make_shared<api::ObjectHandler>(callbacks_->executor(), std::max<std::size_t>(options_.callback_threads, 1),
                                                  false, weak_from_this());
}

Result<std::shared_ptr<rpc::Connection>> ClientCore::connection_for(const net::Endpoint& endpoint) {
  std::lock_guard lock(mutex_);
  if (closed_) return Error{ErrorKind::disconnected, "the client is closed"};
  auto key = endpoint.to_string();
  if (auto it = connections_.find(key); it != connections_.end() && it->second->is_open()) return it->second;
  start_locked();
  rpc::ConnectionOptions connection_options;
  rpc::AuthConfig auth{options_.secret, false, false};
  auth.identity = options_.identity;
  if (options_.tls.enabled()) {
    if (!tls_) {
      auto made = api::tls_context_of(options_.tls);
      if (!made) return made.error();
      tls_ = *made;
    }
    auth.tls = tls_;
  }
  auto connection = rpc::connect(*io_, endpoint, auth, connection_options, handler_, options_.connect_timeout);
  if (!connection) return connection.error();
  connections_[key] = *connection;
  return *connection;
}

void ClientCore::close() {
  std::map<std::string, std::shared_ptr<rpc::Connection>> connections;
  std::shared_ptr<rpc::Runtime> io, callbacks;
  std::shared_ptr<api::ObjectHandler> handler;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    connections.swap(connections_);
    io = io_;
    callbacks = callbacks_;
    handler = handler_;
  }
  for (auto& [key, connection] : connections) connection->close("client closed");
  if (io) io->stop(std::chrono::milliseconds(2000));  // the closed connections' completions run first
  if (callbacks) callbacks->stop(std::chrono::milliseconds(2000));
  if (handler) handler->stop();
}

// ---- ProxyCore ----

Result<std::shared_ptr<rpc::Connection>> ProxyCore::connection() {
  if (client_) return client_->connection_for(endpoint_);
  auto connection = callback_.lock();
  if (!connection || !connection->is_open())
    return Error{ErrorKind::disconnected, "the connection of callback " + object_ + " is closed"};
  return connection;
}

std::string ProxyCore::uri() const { return client_ ? net::format_uri(endpoint_, object_) : "callback " + object_; }

// ---- replies ----

RemoteError error_of(const wire::Frame& frame) {
  auto body = wire::unpack_error_body(frame.body_span());
  return RemoteError(body.kind, std::move(body.message), std::move(body.type), std::move(body.traceback));
}

RemoteError error_of(const Error& error) { return RemoteError(error.kind, error.message); }

// The outcome of a REPLY or ERROR frame; a STREAM_ITEM here means the method streams.
Result<Value> outcome_of(wire::Frame&& frame, const std::weak_ptr<rpc::Connection>& connection, const std::weak_ptr<ClientCore>& home,
                         RemoteError& error) {
  if (frame.header.type == wire::MessageType::error) {
    error = error_of(frame);
    return Error{error.kind(), error.message()};
  }
  if (frame.header.type == wire::MessageType::stream_item) {
    error = RemoteError(ErrorKind::bad_request, "the method streams its result: call it with Proxy::stream");
    return Error{error.kind(), error.message()};
  }
  auto value = api::decode_frame_body(std::move(frame), api::DecodeContext{{}, {}, connection, home});
  if (!value) error = error_of(value.error());
  return value;
}

class FutureSink final : public rpc::ReplySink {
 public:
  FutureSink(std::shared_ptr<FutureState> state, std::weak_ptr<rpc::Connection> connection, std::weak_ptr<ClientCore> home)
      : state_(std::move(state)), connection_(std::move(connection)), home_(std::move(home)) {}
  void on_frame(wire::Frame&& frame) override {
    RemoteError error(ErrorKind::failed, "");
    auto value = outcome_of(std::move(frame), connection_, home_, error);
    if (value) state_->set_value(std::move(*value));
    else state_->set_error(std::move(error));
  }
  void on_failure(const Error& error) override { state_->set_error(error_of(error)); }

 private:
  std::shared_ptr<FutureState> state_;
  std::weak_ptr<rpc::Connection> connection_;
  std::weak_ptr<ClientCore> home_;
};

// ---- streams ----

// Half the initial credit: the producer never runs dry while the consumer keeps up.
constexpr std::uint64_t kCreditBatch = 32;

class StreamState final : public rpc::ReplySink {
 public:
  StreamState(std::weak_ptr<rpc::Connection> connection, std::weak_ptr<ClientCore> home)
      : connection_(std::move(connection)), home_(std::move(home)) {}
  void set_request_id(std::uint64_t id) { id_ = id; }

  void on_frame(wire::Frame&& frame) override {
    {
      std::lock_guard lock(mutex_);
      frames_.push_back(std::move(frame));
    }
    changed_.notify_all();
  }
  void on_failure(const Error& error) override {
    {
      std::lock_guard lock(mutex_);
      failure_ = error;
    }
    changed_.notify_all();
  }

  std::optional<Value> next() {
    wire::Frame frame;
    {
      std::unique_lock lock(mutex_);
      if (finished_) return std::nullopt;
      changed_.wait(lock, [&] { return !frames_.empty() || failure_; });
      if (frames_.empty()) {
        finished_ = true;
        throw error_of(*failure_);
      }
      frame = std::move(frames_.front());
      frames_.pop_front();
    }
    if (frame.header.type == wire::MessageType::stream_item) {
      grant_credit();
      auto value = api::decode_frame_body(std::move(frame), api::DecodeContext{{}, {}, connection_, home_});
      if (!value) throw error_of(value.error());
      return std::move(*value);
    }
    finish();
    if (frame.header.type == wire::MessageType::error) throw error_of(frame);
    return std::nullopt;  // the final REPLY
  }

  void cancel() {
    {
      std::lock_guard lock(mutex_);
      if (finished_) return;
      finished_ = true;
    }
    if (auto connection = connection_.lock()) connection->cancel_call(id_);
  }
  ~StreamState() override { cancel(); }

 private:
  void finish() {
    std::lock_guard lock(mutex_);
    finished_ = true;
  }
  // Items are granted back as the program consumes them, so a slow consumer slows the producer.
  void grant_credit() {
    if (++consumed_ < kCreditBatch) return;
    auto connection = connection_.lock();
    if (!connection) return;
    connection->send(wire::credit_frame(id_, std::exchange(consumed_, 0)));
  }

  std::weak_ptr<rpc::Connection> connection_;
  std::weak_ptr<ClientCore> home_;
  std::uint64_t id_ = 0;
  std::uint64_t consumed_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<wire::Frame> frames_;
  std::optional<Error> failure_;
  bool finished_ = false;
};

std::optional<Value> stream_next(StreamState& state) { return state.next(); }

std::uint64_t export_on(const Proxy& proxy, const std::shared_ptr<Servant>& servant) {
  auto connection = proxy.core()->connection();
  if (!connection) throw error_of(connection.error());
  auto* state = api::state_of(**connection);
  if (!state) throw RemoteError(ErrorKind::failed, "this connection cannot hold exported objects");
  return state->export_servant(servant);
}
void stream_cancel(StreamState& state) { state.cancel(); }

}  // namespace detail

// ---- Proxy ----

namespace {

struct PreparedCall {
  std::shared_ptr<rpc::Connection> connection;
  wire::OutFrame frame;
};

PreparedCall prepare(detail::ProxyCore& core, std::string_view method, const Value::Items& args, const Value::Entries& kwargs,
                     std::chrono::milliseconds timeout) {
  auto connection = core.connection();
  if (!connection) throw detail::error_of(connection.error());
  PreparedCall call{std::move(*connection), {}};
  call.frame.header.type = wire::MessageType::request;
  call.frame.header.encoding = wire::Encoding::msgpack;
  call.frame.header.timeout_ms = static_cast<std::uint32_t>(std::clamp<std::int64_t>(timeout.count(), 0, UINT32_MAX));
  call.frame.meta = core.object() + '\0' + std::string(method);
  api::EncodeContext context{api::state_of(*call.connection), call.connection.get()};
  if (auto encoded = api::encode_request_body(args, kwargs, call.frame, context); !encoded)
    throw RemoteError(ErrorKind::bad_request, std::string(method) + ": the arguments cannot be sent: " + encoded.error().message);
  return call;
}

std::optional<rpc::Clock::time_point> deadline_after(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return std::nullopt;
  return rpc::Clock::now() + timeout;
}

}  // namespace

Proxy::Proxy(std::shared_ptr<detail::ProxyCore> core, std::chrono::milliseconds timeout) : core_(std::move(core)), timeout_(timeout) {}

std::string Proxy::uri() const { return core_ ? core_->uri() : ""; }

Value Proxy::call_values(std::string_view method, Value::Items args, Value::Entries kwargs) const {
  auto prepared = prepare(*core_, method, args, kwargs, timeout_);
  auto sink = std::make_shared<rpc::WaitingSink>();
  auto sent = prepared.connection->call(std::move(prepared.frame), sink);
  if (!sent) throw detail::error_of(sent.error());
  auto outcome = sink->wait(deadline_after(timeout_));
  if (!outcome) {
    prepared.connection->cancel_call(*sent);
    throw RemoteError(ErrorKind::timeout, core_->object() + "." + std::string(method) + " timed out after " +
                                              std::to_string(timeout_.count()) + " ms");
  }
  if (!*outcome) throw detail::error_of(outcome->error());
  RemoteError error(ErrorKind::failed, "");
  auto value = detail::outcome_of(std::move(outcome->value()), prepared.connection, core_->home(), error);
  if (!value) throw error;
  return std::move(*value);
}

std::shared_ptr<detail::FutureState> Proxy::call_values_async(std::string_view method, Value::Items args, Value::Entries kwargs) const {
  auto state = std::make_shared<detail::FutureState>();
  try {
    auto prepared = prepare(*core_, method, args, kwargs, timeout_);
    auto sink = std::make_shared<detail::FutureSink>(state, prepared.connection, core_->home());
    // Like Nagle's algorithm: with nothing in flight the request leaves at once; while earlier
    // calls are in flight it joins the next flush, so a burst leaves in a few writes.
    auto* connection = prepared.connection.get();
    rpc::Connection::DeferFlush defer(connection->pending_calls() > 0 ? connection : nullptr);
    auto sent = connection->call(std::move(prepared.frame), sink, deadline_after(timeout_));
    if (!sent) state->set_error(detail::error_of(sent.error()));
  } catch (const RemoteError& e) {
    state->set_error(e);  // a failure to connect or to encode is the future's outcome too
  }
  return state;
}

void Proxy::oneway_values(std::string_view method, Value::Items args, Value::Entries kwargs) const {
  auto prepared = prepare(*core_, method, args, kwargs, std::chrono::milliseconds(0));
  prepared.frame.header.flags |= wire::kOneway;
  auto sent = prepared.connection->call(std::move(prepared.frame), nullptr);
  if (!sent) throw detail::error_of(sent.error());
}

std::shared_ptr<detail::StreamState> Proxy::stream_values(std::string_view method, Value::Items args, Value::Entries kwargs) const {
  auto prepared = prepare(*core_, method, args, kwargs, std::chrono::milliseconds(0));
  auto state = std::make_shared<detail::StreamState>(prepared.connection, core_->home());
  auto sent = prepared.connection->call(std::move(prepared.frame), state);
  if (!sent) throw detail::error_of(sent.error());
  state->set_request_id(*sent);
  return state;
}

// ---- references ----

Value Convert<Proxy>::to_value(const Proxy& proxy) {
  if (!proxy.valid()) return Value();
  if (proxy.core()->is_callback())
    throw TypeMismatch("a callback proxy belongs to its own connection and cannot be passed on");
  return Value::uri_ref(proxy.uri());
}

Proxy Convert<Proxy>::from_value(const Value& value) {
  if (value.kind() != Value::Kind::object_ref) throw TypeMismatch("expected an object reference, got " + std::string(value.kind_name()));
  const auto& ref = *value.ref();
  auto home = ref.home.lock();
  auto timeout = home ? home->options().timeout : std::chrono::milliseconds(30000);
  switch (ref.kind) {
    case detail::RefData::Kind::peer_callback:
      return Proxy(std::make_shared<detail::ProxyCore>(ref.connection, ref.id, ref.home), timeout);
    case detail::RefData::Kind::uri: {
      if (!home) throw TypeMismatch("a URI reference arrived where no client can make its proxy");
      auto uri = net::parse_uri(ref.uri);
      if (!uri || uri->via_name_server) throw TypeMismatch("a reference has an unusable URI '" + ref.uri + "'");
      return Proxy(std::make_shared<detail::ProxyCore>(home, uri->endpoint, uri->object), timeout);
    }
    case detail::RefData::Kind::local_servant: break;
  }
  throw TypeMismatch("a reference to a local servant is not a proxy");
}

// ---- NameServer ----

void NameServer::register_uri(const std::string& name, const std::string& uri, const std::vector<std::string>& tags) const {
  if (tags.empty()) proxy_.call<void>("register", name, uri);
  else proxy_.call<void>("register", name, uri, tags);
}

std::string NameServer::lookup(const std::string& name) const { return proxy_.call<std::string>("lookup", name); }

std::map<std::string, std::string> NameServer::list(const std::optional<std::string>& prefix) const {
  return proxy_.call<std::map<std::string, std::string>>("list", prefix);
}

bool NameServer::remove(const std::string& name) const { return proxy_.call<bool>("remove", name); }

// ---- Client ----

Client::Client(ClientOptions options) : core_(std::make_shared<detail::ClientCore>(std::move(options))) {}

Client::~Client() { core_->close(); }

Proxy Client::proxy(std::string_view text) {
  auto uri = net::parse_uri(text);
  if (!uri) throw std::invalid_argument(uri.error().message);
  if (uri->via_name_server) {
    std::string target = NameServer(proxy(net::format_uri(uri->endpoint, "tether.ns"))).lookup(uri->object);
    return proxy(target);
  }
  return Proxy(std::make_shared<detail::ProxyCore>(core_, uri->endpoint, uri->object), core_->options().timeout);
}

NameServer Client::name_server(std::string_view address) {
  auto endpoint = net::parse_host_port(address);
  if (!endpoint) throw std::invalid_argument(endpoint.error().message);
  return NameServer(proxy(net::format_uri(*endpoint, "tether.ns")));
}

void Client::close() { core_->close(); }

}  // namespace tether
