// Parsing and formatting of endpoints and URIs.
#include "net/address.hpp"

#include <charconv>

namespace tether::net {
namespace {

Error bad(std::string_view what, std::string_view text) {
  return Error{ErrorKind::bad_request, std::string(what) + ": '" + std::string(text) + "'"};
}

std::string percent_encode(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

Result<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= text.size() || std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16).ec != std::errc{})
      return bad("bad percent-encoding", text);
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

}  // namespace

std::string Endpoint::to_string() const {
  if (kind == Kind::unix_socket) return path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<Endpoint> parse_host_port(std::string_view text) {
  Endpoint endpoint;
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("expected [v6-address]:port", text);
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("expected host:port", text);
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return bad("bad host:port", text);
  endpoint.host = std::string(host);
  endpoint.port = static_cast<std::uint16_t>(value);
  return endpoint;
}

Result<Uri> parse_uri(std::string_view text) {
  Uri uri;
  std::string_view rest;
  auto starts = [&](std::string_view prefix) {
    if (text.substr(0, prefix.size()) != prefix) return false;
    rest = text.substr(prefix.size());
    return true;
  };
  bool unix_socket = false;
  bool tls = false;
  if (starts("tether://")) {
  } else if (starts("tethers://")) {
    tls = true;
  } else if (starts("tetherns://")) {
    uri.via_name_server = true;
  } else if (starts("tethernss://")) {
    uri.via_name_server = true;
    tls = true;
  } else if (starts("tether+unix://")) {
    unix_socket = true;
  } else {
    return bad("not a tether URI (tether://host:port/name)", text);
  }
  auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 >= rest.size()) return bad("the URI names no object", text);
  uri.object = std::string(rest.substr(slash + 1));
  auto location = rest.substr(0, slash);
  if (unix_socket) {
    auto path = percent_decode(location);
    if (!path || path->empty()) return bad("bad Unix socket path in URI", text);
    uri.endpoint.kind = Endpoint::Kind::unix_socket;
    uri.endpoint.path = std::move(*path);
    return uri;
  }
  auto endpoint = parse_host_port(location);
  if (!endpoint) return endpoint.error();
  uri.endpoint = std::move(*endpoint);
  uri.endpoint.tls = tls;
  return uri;
}

std::string format_uri(const Endpoint& endpoint, std::string_view object) {
  if (endpoint.kind == Endpoint::Kind::unix_socket)
    return "tether+unix://" + percent_encode(endpoint.path) + "/" + std::string(object);
  return (endpoint.tls ? "tethers://" : "tether://") + endpoint.to_string() + "/" + std::string(object);
}

}  // namespace tether::net
