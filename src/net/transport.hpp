// A byte-stream transport: TCP, Unix domain socket, or the in-memory pipe used by fast tests.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include <asio.hpp>

#include "tether/error.hpp"

namespace tether::net {

using IoHandler = std::function<void(std::error_code, std::size_t)>;

// Thread contract: at most one read and one write are outstanding at a time, each started by its own
// chain; shutdown() may be called from any thread and makes outstanding operations finish.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual void async_read_some(std::span<std::byte> into, IoHandler handler) = 0;
  // Completes when every buffer has been written, or on error.
  virtual void async_write(std::vector<asio::const_buffer> buffers, IoHandler handler) = 0;
  // Writes what fits right now without blocking and returns the byte count (0 when it would block).
  virtual Result<std::size_t> try_write(std::span<const asio::const_buffer> buffers) = 0;
  // Reads what is there now without blocking; 0 when nothing is.
  virtual Result<std::size_t> try_read(std::span<std::byte> into) = 0;
  // Waits up to `timeout` until a read (or write) would not block. Transports without a file
  // descriptor return false at once, and callers fall back to the async operations.
  virtual bool wait_ready(bool for_write, std::chrono::milliseconds timeout) = 0;
  virtual void shutdown() = 0;
  virtual std::string describe() const = 0;
  // TLS: the peer certificate's subject ("CN=alice,O=tether") once verified; empty otherwise.
  virtual std::string peer_certificate_subject() const { return {}; }
  virtual bool encrypted() const { return false; }
  virtual asio::any_io_executor executor() = 0;
};

std::unique_ptr<Transport> make_tcp_transport(asio::ip::tcp::socket socket);
std::unique_ptr<Transport> make_unix_transport(asio::local::stream_protocol::socket socket);

}  // namespace tether::net
