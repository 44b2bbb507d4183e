// The frame format of docs/protocol.md: a 32-byte header, a meta section and a body, plus the
// incremental decoder that turns a byte stream into frames and the encoder that builds them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tether/error.hpp"

namespace tether::wire {

inline constexpr std::uint8_t kMagic0 = 0x54;  // 'T'
inline constexpr std::uint8_t kMagic1 = 0x48;  // 'H'
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 32;
inline constexpr std::uint32_t kMaxMeta = 65535;
inline constexpr std::uint64_t kDefaultMaxBody = 1ull << 30;

enum class MessageType : std::uint8_t {
  hello = 1,
  challenge = 2,
  auth = 3,
  welcome = 4,
  request = 5,
  reply = 6,
  error = 7,
  stream_item = 8,
  cancel = 9,
  ping = 10,
  pong = 11,
  close = 12,
  credit = 13,
};
bool is_known(MessageType type);

enum Flags : std::uint16_t {
  kOneway = 1u << 0,
  kSegments = 1u << 1,
};

enum class Encoding : std::uint8_t { raw = 0, msgpack = 1, pickle = 2 };

struct FrameHeader {
  MessageType type = MessageType::request;
  std::uint16_t flags = 0;
  Encoding encoding = Encoding::raw;
  std::uint64_t request_id = 0;
  std::uint32_t meta_length = 0;
  std::uint32_t timeout_ms = 0;
  std::uint64_t body_length = 0;
};

std::array<std::byte, kHeaderSize> encode_header(const FrameHeader& header);

struct Limits {
  std::uint64_t max_body = kDefaultMaxBody;
};

// Parses and validates a header; a failure here is fatal for the connection.
Result<FrameHeader> decode_header(std::span<const std::byte, kHeaderSize> bytes, const Limits& limits);

// An owning byte buffer whose contents start uninitialised (it is always filled right after).
class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(std::size_t size) : data_(size ? new std::byte[size] : nullptr), size_(size) {}
  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::span<const std::byte> span() const { return {data_.get(), size_}; }

 private:
  std::unique_ptr<std::byte[]> data_;
  std::size_t size_ = 0;
};

// Storage for one out-of-band segment that the decoder reads straight into, owned by `owner`
// (for Python, a bytes object that decoding then hands over without a copy; `object` points at it).
struct SegmentBuffer {
  std::byte* data = nullptr;
  std::size_t size = 0;
  std::shared_ptr<void> owner;
  void* object = nullptr;
};
using SegmentAllocator = std::function<SegmentBuffer(std::size_t size)>;

struct Frame {
  FrameHeader header;
  std::string meta;
  // With `segment_buffers`, the body holds only the segment table and the main payload.
  std::shared_ptr<Bytes> body;
  std::vector<SegmentBuffer> segment_buffers;

  std::span<const std::byte> body_span() const {
    return body ? body->span() : std::span<const std::byte>{};
  }
};

// A body with the SEGMENTS flag split into its main payload and out-of-band segments.
struct SegmentedBody {
  std::span<const std::byte> main;
  std::vector<std::span<const std::byte>> segments;
};
Result<SegmentedBody> split_segments(std::span<const std::byte> body);
// The same for any frame, including one whose segments were read into their own buffers.
Result<SegmentedBody> split_segments(const Frame& frame);

// A frame to send: the encoder owns the header, meta and main payload bytes; segments point into
// buffers kept alive by `keepalive` until the frame has been written.
struct OutFrame {
  FrameHeader header;
  std::string meta;
  std::vector<std::byte> payload;
  struct Segment {
    std::span<const std::byte> bytes;
    std::shared_ptr<void> keepalive;
  };
  std::vector<Segment> segments;

  // Lays out the body (segment table and padding) and fixes the header lengths.
  void finalize();
  std::size_t wire_size() const;
  std::array<std::byte, kHeaderSize> header_bytes{};
  std::vector<std::byte> segment_prefix;  // [n][main_length][lengths...], built by finalize()
};

// Turns a byte stream into frames. Large bodies are read straight into their final buffer.
class FrameDecoder {
 public:
  // With an allocator, large segmented frames are read segment by segment into its buffers.
  explicit FrameDecoder(Limits limits = {}, SegmentAllocator allocate_segment = {});
  // The region the next read should fill.
  std::span<std::byte> prepare();
  // Accounts for `count` bytes read into the prepared region and appends complete frames to `out`.
  Status commit(std::size_t count, std::vector<Frame>& out);
  // True while a large body is being read straight into its buffer.
  bool in_large_frame() const { return large_ != nullptr; }

 private:
  Status decode_buffered(std::vector<Frame>& out);
  void compact(std::size_t needed);
  // Starts a large segmented frame whose table and main payload are buffered; false to fall back.
  enum class Start { started, waiting, fall_back };
  Result<Start> start_segmented(const FrameHeader& header);
  void place_buffered_into_segments();
  std::span<std::byte> segment_target();
  void advance_segments(std::size_t count);
  bool segments_complete() const { return segment_index_ >= large_->segment_buffers.size(); }

  SegmentAllocator allocate_segment_;
  std::size_t segment_index_ = 0;    // the segment being read
  std::size_t segment_filled_ = 0;   // its bytes read so far, padding included
  std::array<std::byte, 8> pad_{};   // padding lands here
  Limits limits_;
  std::vector<std::byte> buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::unique_ptr<Frame> large_;  // a frame whose body is being read directly
  std::size_t large_filled_ = 0;
};

}  // namespace tether::wire
