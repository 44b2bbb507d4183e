// tether::Server (see include/tether/server.hpp): listeners, published servants, dispatch threads.
#include "tether/server.hpp"

#include "api/client_core.hpp"
#include "api/security.hpp"
#include "rpc/listener.hpp"

namespace tether {
namespace detail {

class ServerCore {
 public:
  explicit ServerCore(ServerOptions options)
      : options_(std::move(options)),
        home_(std::make_shared<ClientCore>([&] {
          ClientOptions home;
          home.secret = options_.secret;
          return home;
        }())),
        // One io thread more than methods may run at once, so one always reads (rpc::DispatchQueue):
        // a stream waiting for credit, or a method calling back its caller, needs a reader. (One
        // thread for everything, as Ice's default pool, would deadlock there.)
        runtime_(std::make_shared<rpc::Runtime>(std::max<std::size_t>(options_.threads, 1) + 1)),
        handler_(std::make_shared<api::ObjectHandler>(runtime_->executor(), options_.threads, true, home_)) {
    rpc::ConnectionOptions connection;
    connection.heartbeat = options_.heartbeat;
    connection.idle_timeout = options_.idle_timeout;
    rpc::AuthConfig auth{options_.secret, false, false};
    auth.identities = options_.identities;
    if (options_.tls.enabled()) {
      auto tls = api::tls_context_of(options_.tls);
      if (!tls) {
        close();
        throw std::runtime_error("tether::Server: " + tls.error().message);
      }
      auth.tls = *tls;
    }
    if (!options_.host.empty()) tcp_ = listen(net::Endpoint{net::Endpoint::Kind::tcp, options_.host, options_.port, ""}, auth, connection);
    if (!options_.unix_path.empty())
      unix_ = listen(net::Endpoint{net::Endpoint::Kind::unix_socket, "", 0, options_.unix_path}, auth, connection);
    if (!tcp_ && !unix_) {
      close();
      throw std::invalid_argument("tether::Server needs a host or a unix_path to listen on");
    }
  }
  ~ServerCore() { close(); }

  api::ObjectHandler& handler() { return *handler_; }
  const rpc::Listener* tcp() const { return tcp_.get(); }
  const rpc::Listener* unix_socket() const { return unix_.get(); }

  void close() {
    if (!runtime_) return;
    if (tcp_) tcp_->close();
    if (unix_) unix_->close();
    runtime_->stop(std::chrono::milliseconds(2000));  // the closed connections' completions run first
    handler_->stop();
    home_->close();
    tcp_.reset();
    unix_.reset();
    runtime_.reset();
  }

 private:
  std::unique_ptr<rpc::Listener> listen(const net::Endpoint& endpoint, const rpc::AuthConfig& auth, const rpc::ConnectionOptions& options) {
    auto listener = rpc::Listener::listen(*runtime_, endpoint, auth, options, handler_,
                                          rpc::ListenerLimits{options_.max_connections, options_.max_handshaking});
    if (!listener) {
      close();
      throw std::runtime_error("tether::Server cannot listen on " + endpoint.to_string() + ": " + listener.error().message);
    }
    return std::move(*listener);
  }

  ServerOptions options_;
  std::shared_ptr<ClientCore> home_;  // makes proxies of the URI references callers send
  std::shared_ptr<rpc::Runtime> runtime_;
  std::shared_ptr<api::ObjectHandler> handler_;
  std::unique_ptr<rpc::Listener> tcp_;
  std::unique_ptr<rpc::Listener> unix_;
};

}  // namespace detail

namespace {
void check_name(const std::string& name) {
  if (name.empty() || name[0] == '$' || name[0] == '#' || name.find('\0') != std::string::npos || name.find('/') != std::string::npos)
    throw std::invalid_argument("cannot serve an object as '" + name + "': names are non-empty, do not start with '$' or '#', "
                                "and hold no NUL or '/'");
}
}  // namespace

Server::Server(ServerOptions options) : core_(std::make_shared<detail::ServerCore>(std::move(options))) {}

Server::~Server() { close(); }

std::string Server::add(const std::string& name, Servant servant) {
  check_name(name);
  core_->handler().publish(name, std::make_shared<Servant>(std::move(servant)));
  return core_->tcp() ? uri(name) : unix_uri(name);
}

bool Server::remove(const std::string& name) { return core_->handler().unpublish(name); }

std::string Server::uri(const std::string& name) const {
  if (!core_->tcp()) throw std::logic_error("this server has no TCP listener");
  return net::format_uri(core_->tcp()->endpoint(), name);
}

std::string Server::unix_uri(const std::string& name) const {
  if (!core_->unix_socket()) throw std::logic_error("this server has no Unix socket");
  return net::format_uri(core_->unix_socket()->endpoint(), name);
}

std::uint16_t Server::port() const { return core_->tcp() ? core_->tcp()->endpoint().port : 0; }

void Server::close() { core_->close(); }

}  // namespace tether
