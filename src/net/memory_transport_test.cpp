// Tests for the in-memory transport used by the fast protocol tests.
#include "net/memory_transport.hpp"

#include <gtest/gtest.h>

#include <future>

namespace tether::net {
namespace {

// Bytes written on one end are read on the other, and a full pipe pushes back on try_write.
TEST(MemoryTransport, CarriesBytesAndPushesBackWhenFull) {
  asio::io_context context;
  auto [a, b] = make_memory_pipe(context.get_executor(), 8);
  std::string text = "0123456789";
  asio::const_buffer buffer(text.data(), text.size());
  auto written = a->try_write(std::span(&buffer, 1));
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(*written, 8u) << "capacity 8 takes only 8 bytes";
  std::array<std::byte, 16> into{};
  std::size_t got = 0;
  b->async_read_some(into, [&](std::error_code ec, std::size_t n) {
    EXPECT_FALSE(ec);
    got = n;
  });
  context.run();
  EXPECT_EQ(got, 8u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(into.data()), got), "01234567");
}

// Shutting one end down makes a pending read on the other end finish with end of file.
TEST(MemoryTransport, ShutdownEndsPendingReads) {
  asio::io_context context;
  auto [a, b] = make_memory_pipe(context.get_executor());
  std::array<std::byte, 4> into{};
  std::error_code result;
  b->async_read_some(into, [&](std::error_code ec, std::size_t) { result = ec; });
  a->shutdown();
  context.run();
  EXPECT_EQ(result, asio::error::eof);
}

}  // namespace
}  // namespace tether::net
