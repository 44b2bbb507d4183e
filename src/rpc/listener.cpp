// Listener: the accept loops (C++20 coroutines) and the set of live connections.
#include "rpc/listener.hpp"

#include <array>
#include <filesystem>

#include "net/tls.hpp"
#include "wire/msgpack_util.hpp"

namespace tether::rpc {

Listener::Listener(Runtime& runtime, AuthConfig auth, ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                   ListenerLimits limits)
    : runtime_(runtime), auth_(std::move(auth)), options_(options), handler_(std::move(handler)), limits_(limits) {}

Listener::~Listener() { close(); }

Result<std::unique_ptr<Listener>> Listener::listen(Runtime& runtime, const net::Endpoint& endpoint, AuthConfig auth,
                                                   ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                                                   ListenerLimits limits) {
  if (auth.tls && !auth.tls->can_serve())
    return Error{ErrorKind::bad_request, "a TLS server needs a certificate and its key"};
  std::unique_ptr<Listener> listener(new Listener(runtime, std::move(auth), options, std::move(handler), limits));
  std::error_code ec;
  if (endpoint.kind == net::Endpoint::Kind::unix_socket) {
    std::filesystem::remove(endpoint.path, ec);  // a stale socket file from a dead server
    auto acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(runtime.context());
    asio::local::stream_protocol::endpoint where(endpoint.path);
    acceptor->open(where.protocol(), ec);
    if (!ec) acceptor->bind(where, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Error{ErrorKind::disconnected, "cannot listen on " + endpoint.path + ": " + ec.message()};
    listener->endpoint_ = endpoint;
    listener->unix_acceptor_ = std::move(acceptor);
    asio::co_spawn(runtime.executor(),
                   listener->accept_loop(*listener->unix_acceptor_, [](auto socket) { return net::make_unix_transport(std::move(socket)); }),
                   asio::detached);
    return listener;
  }
  asio::ip::tcp::resolver resolver(runtime.context());
  auto results = resolver.resolve(endpoint.host, std::to_string(endpoint.port), asio::ip::tcp::resolver::passive, ec);
  if (ec || results.empty()) return Error{ErrorKind::disconnected, "cannot resolve " + endpoint.to_string() + ": " + ec.message()};
  auto where = results.begin()->endpoint();
  auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(runtime.context());
  acceptor->open(where.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(where, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error{ErrorKind::disconnected, "cannot listen on " + endpoint.to_string() + ": " + ec.message()};
  listener->endpoint_ = endpoint;
  listener->endpoint_.host = where.address().to_string();
  listener->endpoint_.port = acceptor->local_endpoint().port();
  listener->endpoint_.tls = listener->auth_.tls != nullptr;
  listener->tcp_acceptor_ = std::move(acceptor);
  asio::co_spawn(runtime.executor(),
                 listener->accept_loop(*listener->tcp_acceptor_,
                                       [tls = listener->auth_.tls](auto socket) -> std::unique_ptr<net::Transport> {
                                         if (tls) return net::make_tls_server_transport(std::move(socket), tls);
                                         return net::make_tcp_transport(std::move(socket));
                                       }),
                 asio::detached);
  return listener;
}

template <typename Acceptor, typename MakeTransport>
asio::awaitable<void> Listener::accept_loop(Acceptor& acceptor, MakeTransport make_transport) {
  for (;;) {
    std::error_code ec;
    auto socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) continue;  // a failed accept (for example EMFILE) costs that client only
    adopt(make_transport(std::move(socket)));
  }
}

void Listener::adopt(std::unique_ptr<net::Transport> transport) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    std::erase_if(connections_, [](const auto& entry) { return entry.second.expired(); });
    if (connections_.size() >= limits_.max_connections)
      return refuse(std::move(transport), "the server has its maximum of " + std::to_string(limits_.max_connections) + " connections");
    if (handshaking_->load() >= limits_.max_handshaking)
      return refuse(std::move(transport), "the server has its maximum of " + std::to_string(limits_.max_handshaking) +
                                              " connections in their handshake; try again shortly");
  }
  auto connection = Connection::create(std::move(transport), Connection::Role::server, auth_, options_, handler_,
                                       runtime_.weak_from_this().lock());
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    connections_.emplace(connection->id(), connection);
  }
  ++*handshaking_;
  connection->start([handshaking = handshaking_](const Result<Negotiated>&) { --*handshaking; });
}

// Best effort: the ERROR goes out if the socket takes it now; the socket closes either way.
void Listener::refuse(std::unique_ptr<net::Transport> transport, const std::string& why) {
  wire::OutFrame frame;
  frame.header.type = wire::MessageType::error;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = wire::pack_error_body(wire::ErrorBody{ErrorKind::overloaded, why, "", ""});
  frame.finalize();
  std::array<asio::const_buffer, 2> buffers{asio::buffer(frame.header_bytes), asio::buffer(frame.payload)};
  transport->try_write(buffers);
}

void Listener::close(const std::string& reason) {
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    connections.swap(connections_);
  }
  // Acceptors are closed on their own executor so no accept is racing with the close.
  std::promise<void> closed;
  asio::post(runtime_.executor(), [&] {
    std::error_code ignored;
    if (tcp_acceptor_) tcp_acceptor_->close(ignored);
    if (unix_acceptor_) unix_acceptor_->close(ignored);
    closed.set_value();
  });
  if (!runtime_.running_in_this_thread()) closed.get_future().wait();
  if (unix_acceptor_) {
    std::error_code ignored;
    std::filesystem::remove(endpoint_.path, ignored);
  }
  for (auto& [id, weak] : connections)
    if (auto connection = weak.lock()) connection->close(reason);
}

std::size_t Listener::connection_count() {
  std::lock_guard lock(mutex_);
  std::erase_if(connections_, [](const auto& entry) { return entry.second.expired(); });
  return connections_.size();
}

namespace {

template <typename Socket, typename Endpoints>
asio::awaitable<std::error_code> connect_socket(Socket& socket, const Endpoints& endpoints) {
  std::error_code ec;
  co_await asio::async_connect(socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

}  // namespace

Result<std::shared_ptr<Connection>> connect(Runtime& runtime, const net::Endpoint& endpoint, AuthConfig auth,
                                            ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                                            std::chrono::milliseconds timeout) {
  TETHER_ASSERT(!runtime.running_in_this_thread(), "connect() blocks and cannot run on an io thread");
  auto deadline = Clock::now() + timeout;
  std::unique_ptr<net::Transport> transport;
  std::error_code ec;
  if (endpoint.kind == net::Endpoint::Kind::unix_socket) {
    asio::local::stream_protocol::socket socket(runtime.context());
    socket.connect(asio::local::stream_protocol::endpoint(endpoint.path), ec);
    if (ec) return Error{ErrorKind::disconnected, "cannot connect to " + endpoint.path + ": " + ec.message()};
    transport = net::make_unix_transport(std::move(socket));
  } else {
    asio::ip::tcp::resolver resolver(runtime.context());
    auto endpoints = resolver.resolve(endpoint.host, std::to_string(endpoint.port), ec);
    if (ec) return Error{ErrorKind::disconnected, "cannot resolve " + endpoint.to_string() + ": " + ec.message()};
    asio::ip::tcp::socket socket(runtime.context());
    auto connected = asio::co_spawn(runtime.executor(), connect_socket(socket, endpoints), asio::use_future);
    if (connected.wait_until(deadline) != std::future_status::ready) {
      asio::post(runtime.executor(), [&socket] { socket.close(); });
      connected.wait();
      return Error{ErrorKind::timeout, "connecting to " + endpoint.to_string() + " timed out"};
    }
    ec = connected.get();
    if (ec) return Error{ErrorKind::disconnected, "cannot connect to " + endpoint.to_string() + ": " + ec.message()};
    if (endpoint.tls && !auth.tls) {
      auto tls = net::TlsContext::from_environment();
      if (!tls) return tls.error();
      auth.tls = *tls;
    }
    if (auth.tls)
      transport = net::make_tls_client_transport(std::move(socket), auth.tls, endpoint.host);
    else
      transport = net::make_tcp_transport(std::move(socket));
  }
  bool uses_tls = auth.tls != nullptr;
  auto connection = Connection::create(std::move(transport), Connection::Role::client, std::move(auth), options,
                                       std::move(handler), runtime.weak_from_this().lock());
  auto outcome = std::make_shared<std::promise<Result<Negotiated>>>();
  auto done = outcome->get_future();
  connection->start([outcome](const Result<Negotiated>& result) { outcome->set_value(result); });
  if (done.wait_until(deadline) != std::future_status::ready) {
    connection->close("handshake timed out");
    return Error{ErrorKind::timeout, "handshake with " + endpoint.to_string() + " timed out"};
  }
  auto negotiated = done.get();
  if (!negotiated) {
    connection->close("handshake failed");
    auto error = negotiated.error();
    if (!uses_tls && error.kind == ErrorKind::disconnected && endpoint.kind == net::Endpoint::Kind::tcp)
      error.message += " during the handshake (if the server uses TLS, connect with a tethers:// URI or a TLS configuration)";
    return error;
  }
  return connection;
}

}  // namespace tether::rpc
