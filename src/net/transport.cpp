// Socket transports over Asio; TCP and Unix sockets share one template.
#include "net/transport.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>

namespace tether::net {
namespace {

template <typename Protocol>
class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(typename Protocol::socket socket) : socket_(std::move(socket)) {
    socket_.non_blocking(true);
  }

  void async_read_some(std::span<std::byte> into, IoHandler handler) override {
    socket_.async_read_some(asio::buffer(into.data(), into.size()), std::move(handler));
  }

  void async_write(std::vector<asio::const_buffer> buffers, IoHandler handler) override {
    // The buffer vector must outlive the operation, so the handler owns it.
    auto owned = std::make_shared<std::vector<asio::const_buffer>>(std::move(buffers));
    asio::async_write(socket_, *owned, [owned, handler = std::move(handler)](std::error_code ec, std::size_t n) {
      handler(ec, n);
    });
  }

  Result<std::size_t> try_write(std::span<const asio::const_buffer> buffers) override {
    std::array<iovec, 64> vecs;
    std::size_t count = std::min(buffers.size(), vecs.size());
    for (std::size_t i = 0; i < count; ++i)
      vecs[i] = iovec{const_cast<void*>(buffers[i].data()), buffers[i].size()};
    msghdr message{};
    message.msg_iov = vecs.data();
    message.msg_iovlen = count;
    ssize_t written = ::sendmsg(socket_.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (written >= 0) return static_cast<std::size_t>(written);
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::size_t{0};
    return Error{ErrorKind::disconnected, std::error_code(errno, std::system_category()).message()};
  }

  Result<std::size_t> try_read(std::span<std::byte> into) override {
    ssize_t got = ::recv(socket_.native_handle(), into.data(), into.size(), MSG_DONTWAIT);
    if (got > 0) return static_cast<std::size_t>(got);
    if (got == 0) return Error{ErrorKind::disconnected, "connection closed by the peer"};
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::size_t{0};
    return Error{ErrorKind::disconnected, std::error_code(errno, std::system_category()).message()};
  }

  bool wait_ready(bool for_write, std::chrono::milliseconds timeout) override {
    pollfd fd{socket_.native_handle(), static_cast<short>(for_write ? POLLOUT : POLLIN), 0};
    return ::poll(&fd, 1, static_cast<int>(timeout.count())) == 1 && (fd.revents & (for_write ? POLLOUT : POLLIN));
  }

  void shutdown() override {
    // shutdown(2) is safe from any thread and wakes the outstanding operations; close happens in
    // the destructor once no operation can still refer to the socket.
    ::shutdown(socket_.native_handle(), SHUT_RDWR);
  }

  std::string describe() const override {
    std::error_code ec;
    auto endpoint = socket_.remote_endpoint(ec);
    if (ec) return "closed socket";
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>)
      return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
    else
      return "unix:" + endpoint.path();
  }

  asio::any_io_executor executor() override { return socket_.get_executor(); }

 private:
  typename Protocol::socket socket_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport(asio::ip::tcp::socket socket) {
  socket.set_option(asio::ip::tcp::no_delay(true));
  return std::make_unique<SocketTransport<asio::ip::tcp>>(std::move(socket));
}

std::unique_ptr<Transport> make_unix_transport(asio::local::stream_protocol::socket socket) {
  return std::make_unique<SocketTransport<asio::local::stream_protocol>>(std::move(socket));
}

}  // namespace tether::net
