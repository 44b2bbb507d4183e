// The server side: serves servants under names on TCP (and optionally a Unix socket), to Python and
// C++ callers alike.
//
//   tether::Server server({.host = "127.0.0.1", .port = 0});
//   std::string uri = server.add("calc", tether::Servant().method("add", [](int64_t a, int64_t b) { return a + b; }));
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <map>

#include "tether/security.hpp"
#include "tether/servant.hpp"

namespace tether {

namespace detail {
class ServerCore;
}

struct ServerOptions {
  std::string host = "127.0.0.1";  // "" for no TCP listener (with unix_path)
  std::uint16_t port = 0;           // 0: any free port (see Server::port)
  std::string unix_path;            // also listen on this Unix socket when not empty
  std::string secret;               // callers must know it; empty: none (its identity is "default")
  std::map<std::string, std::string> identities;  // more secrets, each the identity of whoever knows it
  TlsOptions tls;                   // serve TLS on TCP (cert_file and key_file needed); URIs become tethers://
  std::size_t threads = 4;          // methods running at once (plus one io thread that always reads)
  std::chrono::milliseconds heartbeat{5000};
  std::chrono::milliseconds idle_timeout{30000};
  std::size_t max_connections = 4096;  // more are refused with `overloaded` (docs/protocol.md 9)
  std::size_t max_handshaking = 256;   // connections not through their handshake yet; more are refused
};

class Server {
 public:
  // Listens at once; throws std::runtime_error when it cannot (for example a port in use).
  explicit Server(ServerOptions options = {});
  ~Server();  // close()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves `servant` as `name` and returns its URI. Throws std::invalid_argument for a name that
  // is empty, starts with '$' or '#', or holds NUL or '/'; a name in use is replaced.
  std::string add(const std::string& name, Servant servant);
  bool remove(const std::string& name);
  std::string uri(const std::string& name) const;       // TCP when there is a TCP listener
  std::string unix_uri(const std::string& name) const;  // tether+unix://...
  std::uint16_t port() const;
  // Stops listening and closes every connection (calls in flight on the peers fail).
  void close();

 private:
  std::shared_ptr<detail::ServerCore> core_;
};

}  // namespace tether
