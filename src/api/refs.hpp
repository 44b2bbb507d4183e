// What the public headers keep opaque: a custom value's data, and an object reference, which is
// a URI, a servant this side exports when the reference travels, or a callback the peer exports
// on one connection.
#pragma once

#include <memory>
#include <string>

#include "rpc/connection.hpp"
#include "tether/servant.hpp"
#include "tether/value.hpp"

namespace tether::detail {

class ClientCore;

struct CustomData {
  std::string name;
  Value state;
};

struct RefData {
  enum class Kind { uri, local_servant, peer_callback };
  Kind kind = Kind::uri;
  std::string uri;                                // uri
  std::shared_ptr<Servant> servant;               // local_servant
  std::uint64_t id = 0;                           // peer_callback: the id the peer chose
  std::weak_ptr<rpc::Connection> connection;      // peer_callback: the connection it lives on
  std::weak_ptr<ClientCore> home;                 // the client that makes proxies of uri references
};

}  // namespace tether::detail
