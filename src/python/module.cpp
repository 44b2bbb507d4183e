// tether._core: the nanobind bindings. Conversion, GIL release and error mapping only; the logic
// lives in the core (src/rpc, src/net, src/wire) and in the Python-facing pieces beside this file.
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/set.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>

#include "net/address.hpp"
#include "net/certs.hpp"
#include "net/tls.hpp"
#include "python/coordination.hpp"
#include "python/pychannel.hpp"
#include "python/pycodec.hpp"
#include "python/pydispatch.hpp"
#include "python/pyfuture.hpp"
#include "python/pymethod.hpp"
#include "rpc/listener.hpp"
#include "rpc/runtime.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace tether::python {
namespace {

[[noreturn]] void throw_error(const Error& error) {
  raise_error(error);
  throw nb::python_error();
}

rpc::ConnectionOptions connection_options(double heartbeat, double idle_timeout, std::uint64_t max_frame) {
  rpc::ConnectionOptions options;
  options.heartbeat = std::chrono::milliseconds(static_cast<long long>(heartbeat * 1000));
  options.idle_timeout = std::chrono::milliseconds(static_cast<long long>(idle_timeout * 1000));
  options.limits.max_body = max_frame;
  options.allocate_segment = allocate_bytes_segment;
  return options;
}

std::string secret_text(const std::optional<nb::bytes>& secret) {
  return secret ? std::string(secret->c_str(), secret->size()) : std::string();
}

net::Endpoint endpoint_of(const std::string& host, int port, const std::optional<std::string>& unix_path) {
  net::Endpoint endpoint;
  if (unix_path) {
    endpoint.kind = net::Endpoint::Kind::unix_socket;
    endpoint.path = *unix_path;
  } else {
    endpoint.host = host;
    endpoint.port = static_cast<std::uint16_t>(port);
  }
  return endpoint;
}

// Each io thread keeps one Python thread state for its whole life. Without this every request
// would create and destroy a thread state (and its frame stack) when it takes the GIL.
rpc::Runtime::ThreadHooks python_thread_hooks() {
  return {
      [] {
        PyGILState_Ensure();
        PyEval_SaveThread();
      },
      [] {
        if (!Py_IsInitialized() || _Py_IsFinalizing()) return;  // the process is ending: leave it
        PyEval_RestoreThread(PyGILState_GetThisThreadState());
        PyGILState_Release(PyGILState_UNLOCKED);
      },
  };
}

// The process's client side: io threads plus a dispatcher for callbacks the peers make into us.
class ClientRuntime {
 public:
  // One io thread reads and writes for every proxy (no hand-offs between io threads on the reply
  // path); callbacks the servers make into this process run on their own threads, so a callback
  // that calls a server again never stops this process from reading the reply.
  //
  // With `serving`, the process mainly serves what its peer calls (a cluster worker): requests run
  // on the io thread that read them, with `callback_threads` + 1 io threads so one always reads,
  // which saves a thread hop per request, as a Server does.
  ClientRuntime(std::size_t callback_threads, bool serving)
      : runtime_(std::make_shared<rpc::Runtime>(serving ? std::max<std::size_t>(callback_threads, 1) + 1 : 1,
                                                python_thread_hooks())),
        callbacks_(serving ? nullptr
                           : std::make_shared<rpc::Runtime>(std::max<std::size_t>(callback_threads, 1), python_thread_hooks())),
        dispatcher_(std::make_shared<Dispatcher>(nullptr, (serving ? runtime_ : callbacks_)->executor(),
                                                 std::max<std::size_t>(callback_threads, 1), serving)) {}
  ~ClientRuntime() {
    nb::gil_scoped_release release;
    runtime_->stop();
    if (callbacks_) callbacks_->stop();
    dispatcher_->stop();
  }
  Channel connect(const std::string& uri_or_address, std::optional<nb::bytes> secret, bool want_pickle,
                  double timeout, double heartbeat, double idle_timeout, std::uint64_t max_frame,
                  const std::string& identity, std::shared_ptr<net::TlsContext> tls) {
    auto endpoint = net::parse_host_port(uri_or_address);
    if (!endpoint) {
      auto uri = net::parse_uri(uri_or_address);
      if (!uri) throw_error(uri.error());
      endpoint = uri->endpoint;
    }
    rpc::AuthConfig auth{secret_text(secret), false, want_pickle};
    auth.identity = identity;
    auth.tls = std::move(tls);
    Result<std::shared_ptr<rpc::Connection>> connection = Error{};
    {
      nb::gil_scoped_release release;
      connection = rpc::connect(*runtime_, *endpoint, auth, connection_options(heartbeat, idle_timeout, max_frame),
                                dispatcher_, std::chrono::milliseconds(static_cast<long long>(timeout * 1000)));
    }
    if (!connection) throw_error(connection.error());
    return Channel(*connection);
  }

 private:
  std::shared_ptr<rpc::Runtime> runtime_;  // shared: connections keep it alive (see rpc::Runtime)
  std::shared_ptr<rpc::Runtime> callbacks_;  // none when serving: requests run on the io threads
  std::shared_ptr<Dispatcher> dispatcher_;
};

// A listening server whose requests run on its own io threads (the bounded dispatch pool).
class Server {
 public:
  Server(nb::dict published, const std::string& host, int port, std::optional<std::string> unix_path,
         std::optional<nb::bytes> secret, bool allow_pickle, std::size_t threads, double heartbeat,
         double idle_timeout, std::uint64_t max_frame, bool coordination, std::size_t max_connections,
         std::size_t max_handshaking, std::map<std::string, nb::bytes> identities, std::set<std::string> pickle_from,
         std::shared_ptr<net::TlsContext> tls)
      : runtime_(std::make_shared<rpc::Runtime>(threads + 1, python_thread_hooks())),
        dispatcher_(std::make_shared<Dispatcher>(published.ptr(), runtime_->executor(), threads)) {
    std::shared_ptr<rpc::RequestHandler> handler = dispatcher_;
    rpc::AuthConfig auth{secret_text(secret), allow_pickle, false};
    for (auto& [name, key] : identities) auth.identities[name] = std::string(key.c_str(), key.size());
    auth.pickle_from = std::move(pickle_from);
    auth.tls = std::move(tls);
    Result<std::unique_ptr<rpc::Listener>> listener = Error{};
    {
      nb::gil_scoped_release release;
      if (coordination) {  // tuple spaces, topics and groups beside the Python objects
        coordination_ = std::make_shared<CoordinationServices>();
        handler = std::make_shared<RoutingHandler>(dispatcher_, coordination_);
      }
      listener = rpc::Listener::listen(*runtime_, endpoint_of(host, port, unix_path), auth,
                                       connection_options(heartbeat, idle_timeout, max_frame), handler,
                                       rpc::ListenerLimits{max_connections, max_handshaking});
    }
    if (!listener) {
      // The io threads take the GIL when they end, so they are stopped before this thread, which
      // holds it, unwinds (destroying a running runtime here would wait for them forever).
      {
        nb::gil_scoped_release release;
        runtime_->stop();
        dispatcher_->stop();
        if (coordination_) coordination_->stop();
      }
      throw_error(listener.error());
    }
    listener_ = std::move(*listener);
  }
  ~Server() { close(); }
  std::string address() const { return listener_ ? listener_->endpoint().to_string() : ""; }
  std::string uri(const std::string& name) const { return net::format_uri(listener_->endpoint(), name); }
  std::size_t connection_count() { return listener_ ? listener_->connection_count() : 0; }
  void close() {
    if (!runtime_) return;
    nb::gil_scoped_release release;
    if (listener_) listener_->close();
    runtime_->stop(std::chrono::milliseconds(2000));  // the closed connections' completions run first
    dispatcher_->stop();
    if (coordination_) coordination_->stop();
    listener_.reset();
    runtime_.reset();
  }

 private:
  std::shared_ptr<rpc::Runtime> runtime_;  // dispatch threads + 1 io threads: one always reads; shared:
                                           // connections outliving the server keep its io context
  std::shared_ptr<Dispatcher> dispatcher_;
  std::shared_ptr<CoordinationServices> coordination_;  // none unless asked for
  std::unique_ptr<rpc::Listener> listener_;
};

void set_hook(PyObject*& slot, nb::object value) {
  Py_XDECREF(slot);
  slot = value.is_none() ? nullptr : value.release().ptr();
}

}  // namespace
}  // namespace tether::python

NB_MODULE(_core, m) {
  using namespace tether::python;
  m.doc() = "tether's C++ engine";

  m.def("set_hooks", [](nb::object encoders, nb::object decoders, nb::object export_object, nb::object make_ref,
                        nb::object make_error, nb::object pickle_dumps, nb::object pickle_loads,
                        nb::object format_exception, nb::object run_async, nb::object future_type) {
        auto& h = hooks();
        set_hook(h.encoders, encoders);
        set_hook(h.decoders, decoders);
        set_hook(h.export_object, export_object);
        set_hook(h.make_ref, make_ref);
        set_hook(h.make_error, make_error);
        set_hook(h.pickle_dumps, pickle_dumps);
        set_hook(h.pickle_loads, pickle_loads);
        set_hook(h.format_exception, format_exception);
        set_hook(h.run_async, run_async);
        set_future_type(future_type.ptr());
      }, "encoders"_a, "decoders"_a, "export_object"_a, "make_ref"_a, "make_error"_a, "pickle_dumps"_a,
      "pickle_loads"_a, "format_exception"_a, "run_async"_a, "future_type"_a);

  m.def("parse_uri", [](const std::string& text) {
    auto uri = tether::net::parse_uri(text);
    if (!uri) throw_error(uri.error());
    bool is_unix = uri->endpoint.kind == tether::net::Endpoint::Kind::unix_socket;
    return nb::make_tuple(is_unix ? "unix" : "tcp", uri->endpoint.host, uri->endpoint.port, uri->endpoint.path,
                          uri->object, uri->via_name_server, uri->endpoint.to_string());
  });
  m.def("format_uri", [](const std::string& address, const std::string& name) {
    auto endpoint = tether::net::parse_host_port(address);
    if (!endpoint) {
      tether::net::Endpoint unix_endpoint;
      unix_endpoint.kind = tether::net::Endpoint::Kind::unix_socket;
      unix_endpoint.path = address;
      return tether::net::format_uri(unix_endpoint, name);
    }
    return tether::net::format_uri(*endpoint, name);
  });

  nb::class_<ClientRuntime>(m, "ClientRuntime")
      .def(nb::init<std::size_t, bool>(), "callback_threads"_a, "serving"_a = false)
      .def("connect", &ClientRuntime::connect, "address"_a, "secret"_a = nb::none(), "want_pickle"_a = false,
           "timeout"_a = 10.0, "heartbeat"_a = 5.0, "idle_timeout"_a = 30.0, "max_frame"_a = 1ull << 30,
           "identity"_a = "", "tls"_a.none() = nb::none());

  nb::class_<Server>(m, "Server")
      .def(nb::init<nb::dict, const std::string&, int, std::optional<std::string>, std::optional<nb::bytes>, bool,
                    std::size_t, double, double, std::uint64_t, bool, std::size_t, std::size_t,
                    std::map<std::string, nb::bytes>, std::set<std::string>, std::shared_ptr<tether::net::TlsContext>>(),
           "published"_a, "host"_a, "port"_a, "unix_path"_a = nb::none(), "secret"_a = nb::none(),
           "allow_pickle"_a = false, "threads"_a = 8, "heartbeat"_a = 5.0, "idle_timeout"_a = 30.0,
           "max_frame"_a = 1ull << 30, "coordination"_a = false, "max_connections"_a = 4096,
           "max_handshaking"_a = 256, "identities"_a = std::map<std::string, nb::bytes>{},
           "pickle_from"_a = std::set<std::string>{}, "tls"_a.none() = nb::none())
      .def_prop_ro("address", &Server::address)
      .def("uri", &Server::uri)
      .def("connection_count", &Server::connection_count)
      .def("close", &Server::close);

  nb::class_<Channel>(m, "Channel")
      .def("call", &Channel::call, "object"_a, "method"_a, "args"_a, "kwargs"_a.none(), "timeout"_a.none(), "encoding"_a)
      .def("call_oneway", &Channel::call_oneway, "object"_a, "method"_a, "args"_a, "kwargs"_a.none(), "encoding"_a)
      .def("call_future", &Channel::call_future, "object"_a, "method"_a, "args"_a, "kwargs"_a.none(), "timeout"_a.none(),
           "encoding"_a)
      .def("call_stream", &Channel::call_stream, "object"_a, "method"_a, "args"_a, "kwargs"_a.none(), "encoding"_a)
      .def("cancel", &Channel::cancel)
      .def("export", &Channel::export_object, "object"_a, "methods"_a.none())
      .def("close", &Channel::close, "reason"_a = "closed by the client")
      .def_prop_ro("is_open", &Channel::is_open)
      .def_prop_ro("pickle_allowed", &Channel::pickle_allowed)
      .def_prop_ro("authenticated", &Channel::authenticated)
      .def_prop_ro("peer", &Channel::peer)
      .def_prop_ro("peer_certificate", [](const Channel& c) { return c.connection()->negotiated().certificate_subject; })
      .def_prop_ro("pending_calls", [](const Channel& c) { return c.connection()->pending_calls(); });

  nb::class_<tether::net::TlsContext>(m, "TlsContext")
      .def_static("create", [](const std::string& cert, const std::string& key, const std::string& ca, bool mutual,
                               bool verify_server, bool check_host_name) {
        auto context = tether::net::TlsContext::create({cert, key, ca, mutual, verify_server, check_host_name});
        if (!context) throw_error(context.error());
        return *context;
      }, "cert"_a, "key"_a, "ca"_a, "mutual"_a, "verify_server"_a, "check_host_name"_a)
      .def_prop_ro("can_serve", &tether::net::TlsContext::can_serve);

  m.def("write_certificates", [](const std::string& directory, const std::vector<std::pair<std::string, std::vector<std::string>>>& requests, int days) {
    std::vector<tether::net::CertificateRequest> wanted;
    for (const auto& [name, hosts] : requests) wanted.push_back({name, hosts});
    tether::Status status = tether::ok_status();
    {
      nb::gil_scoped_release release;
      status = tether::net::write_certificates(directory, wanted, days);
    }
    if (!status) throw_error(status.error());
  }, "directory"_a, "requests"_a, "days"_a = 365);

  m.def("set_call_context", [](nb::object variable) { set_hook(hooks().call_context, variable); });

  add_remote_method_type(m);

  nb::class_<StreamIterator>(m, "StreamIterator")
      .def("__iter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__next__", &StreamIterator::next)
      .def("close", &StreamIterator::close);

  nb::class_<Responder>(m, "Responder")
      .def("reply", &Responder::reply, "value"_a.none())
      .def("fail", &Responder::fail);
}
