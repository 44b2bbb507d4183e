// Accepts connections on a TCP or Unix socket and hands each to the server's request handler.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "net/address.hpp"
#include "rpc/connection.hpp"
#include "rpc/runtime.hpp"

namespace tether::rpc {

// What one listener lets in at once. A connection over either limit is refused at once: it gets
// ERROR(id 0, overloaded, why) and is closed, and the connections already in are not touched.
// Handshakes also end within ConnectionOptions::handshake_timeout, so a peer that never finishes
// one holds a slot for that long at most.
struct ListenerLimits {
  std::size_t max_connections = 4096;  // open connections
  std::size_t max_handshaking = 256;   // connections not through their handshake yet (unauthenticated)
};

class Listener {
 public:
  static Result<std::unique_ptr<Listener>> listen(Runtime& runtime, const net::Endpoint& endpoint,
                                                  AuthConfig auth, ConnectionOptions options,
                                                  std::shared_ptr<RequestHandler> handler,
                                                  ListenerLimits limits = {});
  ~Listener();
  // The bound address (the real port when 0 was asked for).
  const net::Endpoint& endpoint() const { return endpoint_; }
  // Stops accepting and closes every connection; callers of the peer see `disconnected`.
  void close(const std::string& reason = "server closed");
  std::size_t connection_count();

 private:
  Listener(Runtime& runtime, AuthConfig auth, ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
           ListenerLimits limits);
  void refuse(std::unique_ptr<net::Transport> transport, const std::string& why);
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
  ListenerLimits limits_;
  // Connections in their handshake; shared with their completion callbacks, which may outlive us.
  std::shared_ptr<std::atomic<std::size_t>> handshaking_ = std::make_shared<std::atomic<std::size_t>>(0);
  bool closed_ = false;
};

// Connects, runs the handshake and returns an established connection, all within `timeout`.
// Blocks the calling thread, which must not be one of the runtime's.
Result<std::shared_ptr<Connection>> connect(Runtime& runtime, const net::Endpoint& endpoint, AuthConfig auth,
                                            ConnectionOptions options, std::shared_ptr<RequestHandler> handler,
                                            std::chrono::milliseconds timeout);

}  // namespace tether::rpc
