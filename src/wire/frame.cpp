// Frame header encoding, segment layout and the incremental frame decoder.
#include "wire/frame.hpp"

#include <algorithm>
#include <cstring>

namespace tether::wire {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
// Bodies at least this large are read straight into their own buffer instead of the stream buffer.
constexpr std::size_t kDirectBodyThreshold = 256 * 1024;

template <typename T>
void store_le(std::byte* out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) out[i] = std::byte((value >> (8 * i)) & 0xff);
}

template <typename T>
T load_le(const std::byte* in) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= T(std::to_integer<std::uint8_t>(in[i])) << (8 * i);
  return value;
}

std::size_t pad8(std::size_t n) { return (8 - n % 8) % 8; }

}  // namespace

bool is_known(MessageType type) {
  auto raw = static_cast<std::uint8_t>(type);
  return raw >= 1 && raw <= 13;
}

std::array<std::byte, kHeaderSize> encode_header(const FrameHeader& h) {
  std::array<std::byte, kHeaderSize> out{};
  out[0] = std::byte{kMagic0};
  out[1] = std::byte{kMagic1};
  out[2] = std::byte{kVersion};
  out[3] = std::byte(static_cast<std::uint8_t>(h.type));
  store_le<std::uint16_t>(&out[4], h.flags);
  out[6] = std::byte(static_cast<std::uint8_t>(h.encoding));
  store_le<std::uint64_t>(&out[8], h.request_id);
  store_le<std::uint32_t>(&out[16], h.meta_length);
  store_le<std::uint32_t>(&out[20], h.timeout_ms);
  store_le<std::uint64_t>(&out[24], h.body_length);
  return out;
}

Result<FrameHeader> decode_header(std::span<const std::byte, kHeaderSize> b, const Limits& limits) {
  if (b[0] != std::byte{kMagic0} || b[1] != std::byte{kMagic1})
    return Error{ErrorKind::bad_request, "bad magic: not a tether frame"};
  auto version = std::to_integer<std::uint8_t>(b[2]);
  if (version != kVersion)
    return Error{ErrorKind::unimplemented, "unsupported protocol version " + std::to_string(version)};
  FrameHeader h;
  h.type = static_cast<MessageType>(std::to_integer<std::uint8_t>(b[3]));
  h.flags = load_le<std::uint16_t>(&b[4]);
  h.encoding = static_cast<Encoding>(std::to_integer<std::uint8_t>(b[6]));
  h.request_id = load_le<std::uint64_t>(&b[8]);
  h.meta_length = load_le<std::uint32_t>(&b[16]);
  h.timeout_ms = load_le<std::uint32_t>(&b[20]);
  h.body_length = load_le<std::uint64_t>(&b[24]);
  if (h.meta_length > kMaxMeta)
    return Error{ErrorKind::bad_request, "meta length " + std::to_string(h.meta_length) + " over the limit"};
  if (h.body_length > limits.max_body)
    return Error{ErrorKind::bad_request, "body length " + std::to_string(h.body_length) +
                                             " over the limit of " + std::to_string(limits.max_body)};
  return h;
}

Result<SegmentedBody> split_segments(std::span<const std::byte> body) {
  if (body.size() < 8) return Error{ErrorKind::bad_request, "segment table truncated"};
  auto count = load_le<std::uint32_t>(body.data());
  auto main_length = load_le<std::uint32_t>(body.data() + 4);
  std::size_t table_end = 8 + std::size_t(count) * 8;
  if (count > (body.size() - 8) / 8) return Error{ErrorKind::bad_request, "segment table truncated"};
  if (main_length > body.size() - table_end) return Error{ErrorKind::bad_request, "segment payload truncated"};
  SegmentedBody out;
  out.main = body.subspan(table_end, main_length);
  std::size_t offset = table_end + main_length;
  offset += pad8(offset);
  out.segments.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    auto length = load_le<std::uint64_t>(body.data() + 8 + 8 * std::size_t(i));
    if (offset > body.size() || length > body.size() - offset)
      return Error{ErrorKind::bad_request, "segment " + std::to_string(i) + " runs past the body"};
    out.segments.push_back(body.subspan(offset, length));
    offset += length;
    offset += pad8(offset);
  }
  return out;
}

void OutFrame::finalize() {
  header.meta_length = static_cast<std::uint32_t>(meta.size());
  if (segments.empty()) {
    header.flags &= ~kSegments;
    header.body_length = payload.size();
  } else {
    header.flags |= kSegments;
    segment_prefix.assign(8 + 8 * segments.size(), std::byte{0});
    store_le<std::uint32_t>(segment_prefix.data(), static_cast<std::uint32_t>(segments.size()));
    store_le<std::uint32_t>(segment_prefix.data() + 4, static_cast<std::uint32_t>(payload.size()));
    for (std::size_t i = 0; i < segments.size(); ++i)
      store_le<std::uint64_t>(segment_prefix.data() + 8 + 8 * i, segments[i].bytes.size());
    std::size_t length = segment_prefix.size() + payload.size();
    payload.resize(payload.size() + pad8(length));  // the main payload is padded in place
    length += pad8(length);
    for (const auto& segment : segments) length += segment.bytes.size() + pad8(segment.bytes.size());
    header.body_length = length;
  }
  header_bytes = encode_header(header);
}

std::size_t OutFrame::wire_size() const { return kHeaderSize + meta.size() + header.body_length; }

FrameDecoder::FrameDecoder(Limits limits, SegmentAllocator allocate_segment)
    : allocate_segment_(std::move(allocate_segment)), limits_(limits), buffer_(kReadChunk) {}

std::span<std::byte> FrameDecoder::prepare() {
  if (large_ && !large_->segment_buffers.empty()) return segment_target();
  if (large_) {
    auto& body = *large_->body;
    return {body.data() + large_filled_, body.size() - large_filled_};
  }
  if (buffer_.size() - end_ < kReadChunk / 4) compact(kReadChunk);
  return {buffer_.data() + end_, buffer_.size() - end_};
}

void FrameDecoder::compact(std::size_t needed) {
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buffer_.size() - end_ < needed) buffer_.resize(end_ + std::max(needed, kReadChunk));
}

Status FrameDecoder::commit(std::size_t count, std::vector<Frame>& out) {
  if (large_ && !large_->segment_buffers.empty()) {
    advance_segments(count);
    if (!segments_complete()) return ok_status();
    out.push_back(std::move(*large_));
    large_.reset();
    return ok_status();
  }
  if (large_) {
    large_filled_ += count;
    if (large_filled_ < large_->body->size()) return ok_status();
    out.push_back(std::move(*large_));
    large_.reset();
    large_filled_ = 0;
    return ok_status();
  }
  end_ += count;
  return decode_buffered(out);
}

Status FrameDecoder::decode_buffered(std::vector<Frame>& out) {
  while (end_ - begin_ >= kHeaderSize) {
    const std::byte* start = buffer_.data() + begin_;
    auto header = decode_header(std::span<const std::byte, kHeaderSize>(start, kHeaderSize), limits_);
    if (!header) return header.error();
    const FrameHeader& h = header.value();
    std::size_t available = end_ - begin_ - kHeaderSize;
    if (available < h.meta_length) {
      compact(kHeaderSize + h.meta_length);
      return ok_status();
    }
    std::size_t body_available = available - h.meta_length;
    bool complete = body_available >= h.body_length;
    if (!complete && allocate_segment_ && (h.flags & kSegments) && h.body_length >= kDirectBodyThreshold) {
      auto started = start_segmented(h);
      if (!started) return started.error();
      if (*started == Start::waiting) return ok_status();
      if (*started == Start::started) {
        if (!segments_complete()) return ok_status();
        out.push_back(std::move(*large_));
        large_.reset();
        continue;
      }
    }
    if (!complete && h.body_length < kDirectBodyThreshold) {
      compact(kHeaderSize + h.meta_length + h.body_length);
      return ok_status();
    }
    Frame frame;
    frame.header = h;
    frame.meta.assign(reinterpret_cast<const char*>(start + kHeaderSize), h.meta_length);
    if (h.body_length) frame.body = std::make_shared<Bytes>(h.body_length);
    std::size_t take = std::min<std::size_t>(body_available, h.body_length);
    if (take) std::memcpy(frame.body->data(), start + kHeaderSize + h.meta_length, take);
    begin_ += kHeaderSize + h.meta_length + take;
    if (!complete) {
      large_ = std::make_unique<Frame>(std::move(frame));
      large_filled_ = take;
      begin_ = end_ = 0;
      return ok_status();
    }
    out.push_back(std::move(frame));
  }
  if (begin_ == end_) begin_ = end_ = 0;
  return ok_status();
}

// The segment table and main payload are small and buffered; each segment is then read straight
// into storage from the allocator, so a large bytes value or array is never copied after the read.
Result<FrameDecoder::Start> FrameDecoder::start_segmented(const FrameHeader& h) {
  constexpr std::size_t kMaxSegments = 65536;
  constexpr std::size_t kMaxPrefix = 1 << 20;
  std::size_t at = begin_ + kHeaderSize + h.meta_length;  // where the body starts in buffer_
  std::size_t available = end_ - at;
  if (available < 8) {
    compact(kHeaderSize + h.meta_length + 8);
    return Start::waiting;
  }
  auto count = load_le<std::uint32_t>(buffer_.data() + at);
  auto main_length = load_le<std::uint32_t>(buffer_.data() + at + 4);
  if (count == 0 || count > kMaxSegments) return Start::fall_back;
  std::size_t table = 8 + 8 * std::size_t(count);
  // An inconsistent table falls back to reading the body whole; decoding then fails that request only.
  if (table > h.body_length) return Start::fall_back;
  if (available < table) {
    compact(kHeaderSize + h.meta_length + table);
    return Start::waiting;
  }
  std::size_t prefix = table + main_length;
  prefix += pad8(prefix);
  if (prefix > kMaxPrefix) return Start::fall_back;
  std::uint64_t total = prefix;
  std::vector<std::size_t> sizes(count);
  for (std::size_t i = 0; i < count; ++i) {
    sizes[i] = load_le<std::uint64_t>(buffer_.data() + at + 8 + 8 * i);
    if (sizes[i] > h.body_length) return Start::fall_back;
    total += sizes[i] + pad8(sizes[i]);
  }
  if (total != h.body_length) return Start::fall_back;
  if (available < prefix) {
    compact(kHeaderSize + h.meta_length + prefix);
    return Start::waiting;
  }
  auto frame = std::make_unique<Frame>();
  frame->header = h;
  frame->meta.assign(reinterpret_cast<const char*>(buffer_.data() + begin_ + kHeaderSize), h.meta_length);
  frame->body = std::make_shared<Bytes>(prefix);
  std::memcpy(frame->body->data(), buffer_.data() + at, prefix);
  for (auto size : sizes) {
    auto buffer = allocate_segment_(size);
    if (size && !buffer.data) return Error{ErrorKind::bad_request, "no memory for a segment of " + std::to_string(size) + " bytes"};
    frame->segment_buffers.push_back(std::move(buffer));
  }
  begin_ = at + prefix;
  large_ = std::move(frame);
  segment_index_ = 0;
  segment_filled_ = 0;
  advance_segments(0);  // steps over empty segments
  place_buffered_into_segments();
  return Start::started;
}

// Moves the bytes already buffered after the prefix into the segments.
void FrameDecoder::place_buffered_into_segments() {
  while (begin_ < end_ && !segments_complete()) {
    auto target = segment_target();
    std::size_t n = std::min(target.size(), end_ - begin_);
    std::memcpy(target.data(), buffer_.data() + begin_, n);
    begin_ += n;
    advance_segments(n);
  }
  if (begin_ == end_) begin_ = end_ = 0;
}

std::span<std::byte> FrameDecoder::segment_target() {
  auto& segment = large_->segment_buffers[segment_index_];
  if (segment_filled_ < segment.size) return {segment.data + segment_filled_, segment.size - segment_filled_};
  std::size_t padded = segment.size + pad8(segment.size);
  return {pad_.data(), padded - segment_filled_};
}

void FrameDecoder::advance_segments(std::size_t count) {
  segment_filled_ += count;
  auto& buffers = large_->segment_buffers;
  while (segment_index_ < buffers.size() &&
         segment_filled_ == buffers[segment_index_].size + pad8(buffers[segment_index_].size)) {
    ++segment_index_;
    segment_filled_ = 0;
  }
}

Result<SegmentedBody> split_segments(const Frame& frame) {
  if (frame.segment_buffers.empty()) return split_segments(frame.body_span());
  auto prefix = frame.body_span();
  if (prefix.size() < 8) return Error{ErrorKind::bad_request, "segment table truncated"};
  auto count = load_le<std::uint32_t>(prefix.data());
  auto main_length = load_le<std::uint32_t>(prefix.data() + 4);
  SegmentedBody out;
  out.main = prefix.subspan(8 + 8 * std::size_t(count), main_length);
  for (const auto& buffer : frame.segment_buffers) out.segments.emplace_back(buffer.data, buffer.size);
  return out;
}

}  // namespace tether::wire
