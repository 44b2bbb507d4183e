// Tests for the frame header, the segment layout and the incremental decoder.
#include "wire/frame.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace tether::wire {
namespace {

std::vector<std::byte> serialize(OutFrame& frame) {
  frame.finalize();
  std::vector<std::byte> out(frame.header_bytes.begin(), frame.header_bytes.end());
  auto* meta = reinterpret_cast<const std::byte*>(frame.meta.data());
  out.insert(out.end(), meta, meta + frame.meta.size());
  out.insert(out.end(), frame.segment_prefix.begin(), frame.segment_prefix.end());
  out.insert(out.end(), frame.payload.begin(), frame.payload.end());
  for (auto& s : frame.segments) {
    out.insert(out.end(), s.bytes.begin(), s.bytes.end());
    out.resize(out.size() + (8 - s.bytes.size() % 8) % 8);
  }
  return out;
}

std::vector<std::byte> bytes_of(std::string_view text) {
  auto* p = reinterpret_cast<const std::byte*>(text.data());
  return {p, p + text.size()};
}

// Feeds `stream` to a decoder `chunk` bytes at a time, as a socket might deliver it.
Result<std::vector<Frame>> decode_in_chunks(const std::vector<std::byte>& stream, std::size_t chunk, Limits limits = {}) {
  FrameDecoder decoder(limits);
  std::vector<Frame> frames;
  std::size_t offset = 0;
  while (offset < stream.size()) {
    auto into = decoder.prepare();
    std::size_t n = std::min({chunk, into.size(), stream.size() - offset});
    std::memcpy(into.data(), stream.data() + offset, n);
    offset += n;
    auto status = decoder.commit(n, frames);
    if (!status) return status.error();
  }
  return frames;
}

// The header must round-trip every field, since both peers depend on the byte table in protocol.md.
TEST(FrameHeader, RoundTripsEveryField) {
  FrameHeader header{MessageType::stream_item, kOneway | kSegments, Encoding::pickle, 0x0102030405060708ull, 77, 1500, 1ull << 33};
  auto bytes = encode_header(header);
  EXPECT_EQ(bytes[0], std::byte{'T'});
  EXPECT_EQ(bytes[1], std::byte{'H'});
  auto decoded = decode_header(bytes, Limits{1ull << 34});
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->type, MessageType::stream_item);
  EXPECT_EQ(decoded->flags, kOneway | kSegments);
  EXPECT_EQ(decoded->encoding, Encoding::pickle);
  EXPECT_EQ(decoded->request_id, 0x0102030405060708ull);
  EXPECT_EQ(decoded->meta_length, 77u);
  EXPECT_EQ(decoded->timeout_ms, 1500u);
  EXPECT_EQ(decoded->body_length, 1ull << 33);
}

// A wrong magic means the peer is not speaking tether: a fatal, clearly worded error.
TEST(FrameHeader, RejectsWrongMagic) {
  auto bytes = encode_header(FrameHeader{});
  bytes[0] = std::byte{'X'};
  auto decoded = decode_header(bytes, Limits{});
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().kind, ErrorKind::bad_request);
  EXPECT_NE(decoded.error().message.find("magic"), std::string::npos);
}

// Unknown versions are answered with unimplemented so a newer peer knows to step down.
TEST(FrameHeader, RejectsUnknownVersion) {
  auto bytes = encode_header(FrameHeader{});
  bytes[2] = std::byte{9};
  auto decoded = decode_header(bytes, Limits{});
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.error().kind, ErrorKind::unimplemented);
}

// A length over the limit is refused before any memory is allocated for it.
TEST(FrameHeader, RejectsBodyOverTheLimit) {
  FrameHeader header;
  header.body_length = 1001;
  auto decoded = decode_header(encode_header(header), Limits{1000});
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error().message.find("over the limit"), std::string::npos);
}

// Frames split at every possible boundary must come out whole and in order.
TEST(FrameDecoder, ReassemblesFramesSplitAnywhere) {
  std::vector<std::byte> stream;
  for (int i = 0; i < 5; ++i) {
    OutFrame frame;
    frame.header.type = MessageType::request;
    frame.header.request_id = i + 1;
    frame.meta = "obj\0m" + std::to_string(i);
    frame.payload = bytes_of(std::string(i * 100, 'x'));
    auto bytes = serialize(frame);
    stream.insert(stream.end(), bytes.begin(), bytes.end());
  }
  for (std::size_t chunk : {1u, 7u, 32u, 33u, 4096u}) {
    auto frames = decode_in_chunks(stream, chunk);
    ASSERT_TRUE(frames.ok());
    ASSERT_EQ(frames->size(), 5u) << "chunk " << chunk;
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ((*frames)[i].header.request_id, std::uint64_t(i + 1));
      EXPECT_EQ((*frames)[i].body_span().size(), std::size_t(i * 100));
    }
  }
}

// Large bodies take the direct-read path; their bytes must arrive intact.
TEST(FrameDecoder, ReadsLargeBodiesIntact) {
  OutFrame frame;
  frame.header.type = MessageType::reply;
  frame.header.request_id = 9;
  std::string body(3 << 20, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 31);
  frame.payload = bytes_of(body);
  auto frames = decode_in_chunks(serialize(frame), 100000);
  ASSERT_TRUE(frames.ok());
  ASSERT_EQ(frames->size(), 1u);
  auto span = (*frames)[0].body_span();
  ASSERT_EQ(span.size(), body.size());
  EXPECT_EQ(std::memcmp(span.data(), body.data(), body.size()), 0);
}

// Out-of-band segments are laid out with padding and found again by split_segments.
TEST(Segments, RoundTripThroughTheBodyLayout) {
  std::string first(13, 'a'), second(70000, 'b');
  OutFrame frame;
  frame.header.type = MessageType::request;
  frame.payload = bytes_of("main");
  frame.segments.push_back({std::span(reinterpret_cast<const std::byte*>(first.data()), first.size()), nullptr});
  frame.segments.push_back({std::span(reinterpret_cast<const std::byte*>(second.data()), second.size()), nullptr});
  auto frames = decode_in_chunks(serialize(frame), 1 << 20);
  ASSERT_TRUE(frames.ok());
  auto& decoded = (*frames)[0];
  EXPECT_TRUE(decoded.header.flags & kSegments);
  auto split = split_segments(decoded.body_span());
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(split->main.data()), 4), "main");
  ASSERT_EQ(split->segments.size(), 2u);
  EXPECT_EQ(split->segments[0].size(), first.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(split->segments[1].data()), second.size()), second);
}

// A segment table that points past the body is rejected instead of reading out of bounds.
TEST(Segments, RejectsATableThatLies) {
  std::vector<std::byte> body(24, std::byte{0});
  body[0] = std::byte{1};   // one segment
  body[8] = std::byte{200};  // 200 bytes long, but the body has none left
  auto split = split_segments(body);
  ASSERT_FALSE(split.ok());
  EXPECT_EQ(split.error().kind, ErrorKind::bad_request);
}

}  // namespace
}  // namespace tether::wire
