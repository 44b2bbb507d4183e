// The engine behind tether::Client and tether::Proxy: io threads, one connection per server
// address, and the handler for the callbacks servers make into this process.
#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "api/dispatcher.hpp"
#include "net/address.hpp"
#include "rpc/runtime.hpp"
#include "tether/client.hpp"

namespace tether::detail {

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  explicit ClientCore(ClientOptions options) : options_(std::move(options)) {}
  ~ClientCore();
  // The open connection to `endpoint`, made now if there is none (threads start on first use).
  Result<std::shared_ptr<rpc::Connection>> connection_for(const net::Endpoint& endpoint);
  const ClientOptions& options() const { return options_; }
  void close();

 private:
  void start_locked();
  ClientOptions options_;
  std::mutex mutex_;
  std::shared_ptr<rpc::Runtime> io_;         // one io thread reads and writes for every proxy
  std::shared_ptr<rpc::Runtime> callbacks_;  // callbacks run here, so the io thread stays free
  std::shared_ptr<api::ObjectHandler> handler_;
  std::shared_ptr<net::TlsContext> tls_;     // from options_.tls, loaded on the first connection
  std::map<std::string, std::shared_ptr<rpc::Connection>> connections_;
  bool closed_ = false;
};

// One remote object: a URI's object on a connection the client makes, or a callback the peer
// exported on one connection.
class ProxyCore {
 public:
  ProxyCore(std::shared_ptr<ClientCore> client, net::Endpoint endpoint, std::string object)
      : client_(std::move(client)), endpoint_(std::move(endpoint)), object_(std::move(object)) {}
  ProxyCore(std::weak_ptr<rpc::Connection> connection, std::uint64_t id, std::weak_ptr<ClientCore> home)
      : object_("#" + std::to_string(id)), callback_(std::move(connection)), home_(std::move(home)) {}

  Result<std::shared_ptr<rpc::Connection>> connection();
  const std::string& object() const { return object_; }
  bool is_callback() const { return !client_; }
  std::string uri() const;
  std::weak_ptr<ClientCore> home() const { return client_ ? client_ : home_; }

 private:
  std::shared_ptr<ClientCore> client_;
  net::Endpoint endpoint_;
  std::string object_;
  std::weak_ptr<rpc::Connection> callback_;
  std::weak_ptr<ClientCore> home_;
};

// Exports `servant` on the connection `proxy` calls through and answers its id (the `sink` of the
// services' notify / subscribe / join). Throws RemoteError when there is no connection.
std::uint64_t export_on(const Proxy& proxy, const std::shared_ptr<Servant>& servant);

}  // namespace tether::detail
