// TLS over TCP through OpenSSL (Asio's ssl::stream): the configuration of one side, and the
// transport that runs the TLS handshake before the first byte of tether's own handshake.
#pragma once

#include <memory>
#include <string>

#include <asio/ssl.hpp>

#include "net/transport.hpp"
#include "tether/error.hpp"

namespace tether::net {

// Files are PEM. One configuration serves both roles of a process (a node daemon accepts and
// connects): as a server it presents cert/key; as a client it verifies the server against `ca`
// (the system's trusted roots when empty) and presents cert/key when given (mutual TLS).
struct TlsConfig {
  std::string cert_file;  // this side's certificate chain (required to accept connections)
  std::string key_file;   // its private key
  std::string ca_file;    // the CA that signs the peers' certificates
  bool require_client_certificate = false;  // server: mutual TLS, a client without a certificate the CA signed is refused
  bool verify_server = true;                // client: refuse a server whose certificate does not verify
  bool check_host_name = true;              // client: the certificate must name the host connected to
};

class TlsContext {
 public:
  // Loads and checks the files now, so a bad path or a key that does not match fails at start-up.
  static Result<std::shared_ptr<TlsContext>> create(const TlsConfig& config);
  // From TETHER_TLS_CA / TETHER_TLS_CERT / TETHER_TLS_KEY when set, else the system's trusted roots:
  // used by a client that connects to a tethers:// URI without a configuration of its own.
  static Result<std::shared_ptr<TlsContext>> from_environment();

  bool can_serve() const { return server_ != nullptr; }
  const TlsConfig& config() const { return config_; }
  asio::ssl::context& server() { return *server_; }
  asio::ssl::context& client() { return *client_; }

 private:
  TlsConfig config_;
  std::unique_ptr<asio::ssl::context> server_;  // null without cert and key
  std::unique_ptr<asio::ssl::context> client_;
};

// `host` is the name the server's certificate must carry (client side; ignored by servers).
std::unique_ptr<Transport> make_tls_server_transport(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context);
std::unique_ptr<Transport> make_tls_client_transport(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context,
                                                     const std::string& host);

}  // namespace tether::net
