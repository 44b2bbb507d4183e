// An in-memory transport pair for tests: bytes written on one end are read on the other.
#pragma once

#include <memory>
#include <utility>

#include "net/transport.hpp"

namespace tether::net {

// `capacity` bounds the bytes buffered per direction, so tests can exercise backpressure.
std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> make_memory_pipe(
    asio::any_io_executor executor, std::size_t capacity = 1 << 20);

}  // namespace tether::net
