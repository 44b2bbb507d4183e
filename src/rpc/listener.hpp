// Accepts connections on a TCP or Unix socket and hands each to the server's request handler.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>

#include "net/address.hpp"
#include "rpc/connection.hpp"
#include "rpc/runtime.hpp"

namespace tether::rpc {

class Listener {
 public:
  static Result<std::unique_ptr<Listener>> listen(Runtime& runtime, const net::Endpoint& endpoint,
                                                  AuthConfig auth, ConnectionOptions options,
                                                  std::shared_ptr<RequestHandler> handler);
  ~Listener();
  // The bound address (the real port when 0 was asked for).
  const net::Endpoint& endpoint() const { return endpoint_; }
  // Stops accepting and closes every connection; callers of the peer see `disconnected`.
  void close(const std::string& reason = "server closed");
  std::size_t connection_count();

 private:
  Listener(Runtime& runtime, AuthConfig auth, ConnectionOptions options, std::shared_ptr<RequestHandler> handler);
  template <typename Acceptor, typename MakeTransport>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, MakeTransport make_transport);
  void adopt(std::unique_ptr<net::Transport> transport);

  Runtime& runtime_;
  AuthConfig auth_;
  ConnectionOptions options_;
  std::shared_ptr<RequestHandler> handler_;
  net::Endpoint endpoint_;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp_acceptor_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections_;
  bool closed_ = false;
};

// Connects, runs the handshake and returns an established connection, all within `timeout`.
// Blocks the calling thread, which must not be one of the runtime's.
Result<std::shared_ptr<Connection>> connect(Runtime& runtime, const net::Endpoint& endpoint, AuthConfig auth,
                                            ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                                            std::chrono::milliseconds timeout);

}  // namespace tether::rpc
