// The client side: a Client owns the engine threads and the connections (one per server address,
// shared by its proxies, made on first use and made again after a loss); a Proxy calls one object.
//
//   tether::Client client;
//   auto greeter = client.proxy("tether://127.0.0.1:7000/greeter");
//   std::string s = greeter.call<std::string>("hello", "ann");
//   tether::Future<std::string> later = greeter.call_async<std::string>("hello", "bob");
//   greeter.oneway("log", "hi");
//   for (const tether::Value& item : greeter.stream("count", 10)) { ... }
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tether/convert.hpp"
#include "tether/future.hpp"
#include "tether/security.hpp"
#include "tether/servant.hpp"
#include "tether/value.hpp"

namespace tether {

namespace detail {
class ClientCore;
class ProxyCore;
class StreamState;
}  // namespace detail

struct ClientOptions {
  std::string secret;                                    // shared secret; empty: none
  std::string identity;                                  // the name the server knows `secret` by; empty: "default"
  TlsOptions tls;                                        // TLS for TCP connections (see security.hpp)
  std::chrono::milliseconds timeout{30000};              // each call's deadline; 0: none
  std::chrono::milliseconds connect_timeout{10000};      // connecting and the handshake
  std::size_t callback_threads = 2;                      // run the callbacks servers make into us
};

// The items of a streamed result, in order; the stream asks for more as they are consumed.
// Iterating throws RemoteError if the stream ends with an error. Leaving early cancels it.
template <typename T = Value>
class Stream {
 public:
  explicit Stream(std::shared_ptr<detail::StreamState> state) : state_(std::move(state)) {}
  // The next item, or nullopt at the end.
  std::optional<T> next();
  void cancel();

  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(Stream* stream) : stream_(stream) { ++*this; }
    const T& operator*() const { return *current_; }
    iterator& operator++() {
      current_ = stream_->next();
      if (!current_) stream_ = nullptr;
      return *this;
    }
    bool operator==(const iterator& other) const { return stream_ == other.stream_; }

   private:
    Stream* stream_ = nullptr;
    std::optional<T> current_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  std::shared_ptr<detail::StreamState> state_;
};

namespace detail {
std::optional<Value> stream_next(StreamState& state);
void stream_cancel(StreamState& state);
}  // namespace detail

template <typename T>
std::optional<T> Stream<T>::next() {
  auto item = detail::stream_next(*state_);
  if (!item) return std::nullopt;
  return from_value<T>(*item);
}
template <typename T>
void Stream<T>::cancel() {
  detail::stream_cancel(*state_);
}

// A remote object: calls go to it over its server's connection. Copies share the connection.
class Proxy {
 public:
  Proxy() = default;
  explicit Proxy(std::shared_ptr<detail::ProxyCore> core, std::chrono::milliseconds timeout);

  template <typename R = Value, typename... A>
  R call(std::string_view method, const A&... args) const {
    return from_value_or_void<R>(call_values(method, {to_value(args)...}));
  }
  template <typename R = Value, typename... A>
  Future<R> call_async(std::string_view method, const A&... args) const {
    return Future<R>(call_values_async(method, {to_value(args)...}));
  }
  template <typename... A>
  void oneway(std::string_view method, const A&... args) const {
    oneway_values(method, {to_value(args)...});
  }
  template <typename T = Value, typename... A>
  Stream<T> stream(std::string_view method, const A&... args) const {
    return Stream<T>(stream_values(method, {to_value(args)...}));
  }
  // A callback proxy (one the peer passed us) is called itself: method "__call__".
  template <typename R = Value, typename... A>
  R operator()(const A&... args) const {
    return call<R>("__call__", args...);
  }

  // The dynamic forms: positional and keyword arguments as Values.
  Value call_values(std::string_view method, Value::Items args, Value::Entries kwargs = {}) const;
  std::shared_ptr<detail::FutureState> call_values_async(std::string_view method, Value::Items args, Value::Entries kwargs = {}) const;
  void oneway_values(std::string_view method, Value::Items args, Value::Entries kwargs = {}) const;
  std::shared_ptr<detail::StreamState> stream_values(std::string_view method, Value::Items args, Value::Entries kwargs = {}) const;

  // The same object with another deadline for each call (0: none).
  Proxy with_timeout(std::chrono::milliseconds timeout) const { return Proxy(core_, timeout); }
  // tether://..., tether+unix://..., or "callback #id" for a callback proxy.
  std::string uri() const;
  bool valid() const { return core_ != nullptr; }
  const std::shared_ptr<detail::ProxyCore>& core() const { return core_; }

 private:
  template <typename R>
  static R from_value_or_void(const Value& v) {
    if constexpr (std::is_void_v<R>) return;
    else return from_value<R>(v);
  }
  std::shared_ptr<detail::ProxyCore> core_;
  std::chrono::milliseconds timeout_{0};
};

// A proxy travels as an object reference: the peer gets a proxy to the same object.
template <>
struct Convert<Proxy> {
  static Value to_value(const Proxy& proxy);
  static Proxy from_value(const Value& value);  // a reference received in a call or a reply
};
template <>
struct TypeName<Proxy> {
  static std::string get() { return "object reference"; }
};

// The name server (tether ns, or a cluster's head): names to URIs (docs/protocol.md section 12).
class NameServer {
 public:
  explicit NameServer(Proxy proxy) : proxy_(std::move(proxy)) {}
  void register_uri(const std::string& name, const std::string& uri, const std::vector<std::string>& tags = {}) const;
  std::string lookup(const std::string& name) const;  // throws RemoteError (KeyError) when absent
  std::map<std::string, std::string> list(const std::optional<std::string>& prefix = std::nullopt) const;
  bool remove(const std::string& name) const;
  const Proxy& proxy() const { return proxy_; }

 private:
  Proxy proxy_;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // tether://HOST:PORT/NAME, tether+unix://PATH/NAME, or tetherns://HOST:PORT/NAME (looked up
  // now). Connects on the first call. Throws std::invalid_argument for a malformed URI.
  Proxy proxy(std::string_view uri);
  // The name server at "HOST:PORT".
  NameServer name_server(std::string_view address);
  // Closes every connection; calls in flight fail with `disconnected`.
  void close();

 private:
  std::shared_ptr<detail::ClientCore> core_;
};

}  // namespace tether
