// TLS contexts and the TLS transport. OpenSSL does the cryptography and the certificate checks;
// this file only configures it and keeps Asio's ssl::stream on one strand, which it requires.
#include "net/tls.hpp"

#include <sys/socket.h>

#include <cstdlib>
#include <functional>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace tether::net {
namespace {

Error tls_error(const std::string& what, const std::error_code& ec) {
  return Error{ErrorKind::denied, what + ": " + ec.message()};
}

// TLS 1.2 at least; older versions have known weaknesses and nothing of ours speaks them.
void set_safe_defaults(asio::ssl::context& context) {
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
}

Status use_identity(asio::ssl::context& context, const TlsConfig& config) {
  std::error_code ec;
  context.use_certificate_chain_file(config.cert_file, ec);
  if (ec) return tls_error("cannot load the TLS certificate " + config.cert_file, ec);
  context.use_private_key_file(config.key_file, asio::ssl::context::pem, ec);
  if (ec) return tls_error("cannot load the TLS key " + config.key_file + " (or it does not match " + config.cert_file + ")", ec);
  if (SSL_CTX_check_private_key(context.native_handle()) != 1)
    return Error{ErrorKind::denied, "the TLS key " + config.key_file + " does not match the certificate " + config.cert_file};
  return ok_status();
}

Status trust(asio::ssl::context& context, const TlsConfig& config) {
  std::error_code ec;
  if (config.ca_file.empty())
    context.set_default_verify_paths(ec);
  else
    context.load_verify_file(config.ca_file, ec);
  if (ec) return tls_error("cannot load the TLS CA " + (config.ca_file.empty() ? "(system roots)" : config.ca_file), ec);
  return ok_status();
}

// RFC 2253 form, for example "CN=alice,O=tether"; empty without a verified certificate.
std::string verified_peer_subject(SSL* ssl) {
  X509* certificate = SSL_get1_peer_certificate(ssl);
  if (!certificate) return {};
  std::string subject;
  if (SSL_get_verify_result(ssl) == X509_V_OK) {
    BIO* out = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(out, X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long length = BIO_get_mem_data(out, &data);
    subject.assign(data, static_cast<std::size_t>(length));
    BIO_free(out);
  }
  X509_free(certificate);
  return subject;
}

using Stream = asio::ssl::stream<asio::ip::tcp::socket>;

// Every operation on the ssl::stream runs on strand_, as Asio requires; reads and writes asked for
// before the TLS handshake finished wait for it (the handshake starts with the first of them).
class TlsTransport final : public Transport {
 public:
  TlsTransport(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context, Stream::handshake_type role,
               const std::string& host)
      : context_(std::move(context)),
        executor_(socket.get_executor()),
        strand_(asio::make_strand(socket.get_executor())),
        stream_(std::move(socket), role == Stream::server ? context_->server() : context_->client()),
        role_(role) {
    stream_.next_layer().set_option(asio::ip::tcp::no_delay(true));
    if (role == Stream::client) configure_client(host);
  }

  // The completion handler of an operation on the stream: the operation's own steps run on the
  // strand (Asio takes the final handler's executor for them), and the caller's handler runs off
  // it, because the caller may block there (a server method runs on the thread that read its
  // request and may wait for a callback's reply, which needs the strand to be read).
  template <typename Handler>
  auto off_strand(Handler handler) {
    return asio::bind_executor(strand_, [executor = executor_, handler = std::move(handler)](std::error_code ec, std::size_t n) mutable {
      asio::post(executor, [handler = std::move(handler), ec, n]() mutable { handler(ec, n); });
    });
  }

  void async_read_some(std::span<std::byte> into, IoHandler handler) override {
    when_handshaken([this, into, handler = std::move(handler)](std::error_code ec) mutable {
      if (ec) return off_strand(std::move(handler))(ec, 0);
      stream_.async_read_some(asio::buffer(into.data(), into.size()), off_strand(std::move(handler)));
    });
  }

  void async_write(std::vector<asio::const_buffer> buffers, IoHandler handler) override {
    // OpenSSL makes one record per buffer; small frames are joined first so a burst of them costs
    // one record, not one per header and per payload.
    auto owned = std::make_shared<Outgoing>();
    std::size_t total = asio::buffer_size(buffers);
    if (buffers.size() > 1 && total <= kJoinLimit) {
      owned->joined.resize(total);
      asio::buffer_copy(asio::buffer(owned->joined), buffers);
      owned->buffers.push_back(asio::buffer(owned->joined));
    } else {
      owned->buffers = std::move(buffers);
    }
    when_handshaken([this, owned, handler = std::move(handler)](std::error_code ec) mutable {
      if (ec) return off_strand(std::move(handler))(ec, 0);
      asio::async_write(stream_, owned->buffers, off_strand([owned, handler = std::move(handler)](std::error_code ec, std::size_t n) {
                          handler(ec, n);
                        }));
    });
  }

  // The record layer keeps state that a write from another thread would race with: everything
  // goes through the async operations (the connection falls back to them when these return 0).
  Result<std::size_t> try_write(std::span<const asio::const_buffer>) override { return std::size_t{0}; }
  Result<std::size_t> try_read(std::span<std::byte>) override { return std::size_t{0}; }
  bool wait_ready(bool, std::chrono::milliseconds) override { return false; }

  void shutdown() override {
    // Safe from any thread; outstanding operations (the TLS handshake too) end with an error.
    ::shutdown(stream_.lowest_layer().native_handle(), SHUT_RDWR);
  }

  std::string describe() const override {
    std::error_code ec;
    auto endpoint = stream_.lowest_layer().remote_endpoint(ec);
    if (ec) return "closed socket";
    return endpoint.address().to_string() + ":" + std::to_string(endpoint.port()) + " (TLS)";
  }

  std::string peer_certificate_subject() const override { return peer_subject_; }
  bool encrypted() const override { return true; }
  asio::any_io_executor executor() override { return executor_; }

 private:
  static constexpr std::size_t kJoinLimit = 64 * 1024;
  struct Outgoing {
    std::vector<std::byte> joined;
    std::vector<asio::const_buffer> buffers;
  };
  using Continuation = std::function<void(std::error_code)>;

  void configure_client(const std::string& host) {
    const auto& config = context_->config();
    std::error_code ec;
    asio::ip::make_address(host, ec);
    if (ec && !host.empty()) SSL_set_tlsext_host_name(stream_.native_handle(), host.c_str());  // SNI takes names only
    if (config.verify_server && config.check_host_name && !host.empty())
      stream_.set_verify_callback(asio::ssl::host_name_verification(host));
  }

  // Runs `next` on the strand once the TLS handshake is over (at once if it is).
  void when_handshaken(Continuation next) {
    asio::dispatch(strand_, [this, next = std::move(next)]() mutable {
      switch (state_) {
        case State::ready:
          return next({});
        case State::failed:
          return next(handshake_error_);
        case State::handshaking:
          waiting_.push_back(std::move(next));
          return;
        case State::idle:
          waiting_.push_back(std::move(next));
          state_ = State::handshaking;
          stream_.async_handshake(role_, asio::bind_executor(strand_, [this](std::error_code ec) { on_handshake(ec); }));
      }
    });
  }

  void on_handshake(std::error_code ec) {
    if (ec) {
      state_ = State::failed;
      handshake_error_ = ec;
    } else {
      state_ = State::ready;
      peer_subject_ = verified_peer_subject(stream_.native_handle());
    }
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& next : waiting) next(ec);
  }

  std::shared_ptr<TlsContext> context_;  // the ssl::context must outlive the stream
  asio::any_io_executor executor_;
  asio::strand<asio::any_io_executor> strand_;
  Stream stream_;
  Stream::handshake_type role_;
  enum class State { idle, handshaking, ready, failed } state_ = State::idle;
  std::error_code handshake_error_;
  std::vector<Continuation> waiting_;
  std::string peer_subject_;
};

}  // namespace

Result<std::shared_ptr<TlsContext>> TlsContext::create(const TlsConfig& config) {
  auto context = std::make_shared<TlsContext>();
  context->config_ = config;
  if (config.cert_file.empty() != config.key_file.empty())
    return Error{ErrorKind::bad_request, "TLS needs both a certificate and its key, or neither"};
  if (!config.cert_file.empty()) {
    context->server_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    auto& server = *context->server_;
    set_safe_defaults(server);
    if (auto status = use_identity(server, config); !status) return status.error();
    if (!config.ca_file.empty()) {
      if (auto status = trust(server, config); !status) return status.error();
      // A client certificate is asked for; one that is sent must verify. Mutual TLS also refuses
      // a client that sends none.
      server.set_verify_mode(asio::ssl::verify_peer |
                             (config.require_client_certificate ? asio::ssl::verify_fail_if_no_peer_cert : 0));
      static const unsigned char kSessionContext[] = "tether";
      SSL_CTX_set_session_id_context(server.native_handle(), kSessionContext, sizeof kSessionContext - 1);
    } else if (config.require_client_certificate) {
      return Error{ErrorKind::bad_request, "mutual TLS needs a CA file to verify client certificates"};
    }
  }
  context->client_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  auto& client = *context->client_;
  set_safe_defaults(client);
  if (auto status = trust(client, config); !status) return status.error();
  client.set_verify_mode(config.verify_server ? asio::ssl::verify_peer : asio::ssl::verify_none);
  if (!config.cert_file.empty())
    if (auto status = use_identity(client, config); !status) return status.error();
  return context;
}

Result<std::shared_ptr<TlsContext>> TlsContext::from_environment() {
  auto text = [](const char* name) {
    const char* value = std::getenv(name);
    return std::string(value ? value : "");
  };
  return create(TlsConfig{text("TETHER_TLS_CERT"), text("TETHER_TLS_KEY"), text("TETHER_TLS_CA")});
}

std::unique_ptr<Transport> make_tls_server_transport(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context) {
  return std::make_unique<TlsTransport>(std::move(socket), std::move(context), Stream::server, "");
}

std::unique_ptr<Transport> make_tls_client_transport(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context,
                                                     const std::string& host) {
  return std::make_unique<TlsTransport>(std::move(socket), std::move(context), Stream::client, host);
}

}  // namespace tether::net
