// Endpoints ("host:port", Unix socket paths) and tether URIs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tether/error.hpp"

namespace tether::net {

struct Endpoint {
  enum class Kind { tcp, unix_socket } kind = Kind::tcp;
  std::string host;  // tcp: a name or an address (IPv6 without brackets)
  std::uint16_t port = 0;
  std::string path;  // unix_socket
  bool tls = false;  // tcp: the server speaks TLS (tethers:// URIs)
  std::string to_string() const;  // "host:port", "[::1]:port" or the socket path
};

// "host:port" or "[v6]:port".
Result<Endpoint> parse_host_port(std::string_view text);

struct Uri {
  Endpoint endpoint;
  std::string object;
  bool via_name_server = false;  // tetherns://: `endpoint` is the name server, `object` the name
};

// tether://HOST:PORT/NAME, tether+unix://<percent-encoded path>/NAME, tetherns://HOST:PORT/NAME;
// tethers:// and tethernss:// are the same over TLS.
Result<Uri> parse_uri(std::string_view text);
std::string format_uri(const Endpoint& endpoint, std::string_view object);

}  // namespace tether::net
