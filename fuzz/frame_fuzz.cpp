// libFuzzer target: arbitrary bytes through everything that reads frames from a peer: the frame
// decoder (fed in uneven chunks), the segment table, the server handshake and the error body.
#include <cstring>

#include "rpc/handshake.hpp"
#include "wire/frame.hpp"
#include "wire/msgpack_util.hpp"

using namespace tether;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  wire::FrameDecoder decoder(wire::Limits{1 << 20});
  std::vector<wire::Frame> frames;
  std::size_t offset = 0;
  std::size_t chunk = size ? (data[0] % 61) + 1 : 1;
  while (offset < size) {
    auto into = decoder.prepare();
    std::size_t n = std::min({chunk, into.size(), size - offset});
    std::memcpy(into.data(), data + offset, n);
    offset += n;
    if (!decoder.commit(n, frames)) break;
  }
  rpc::Handshake server(rpc::Handshake::Role::server, rpc::AuthConfig{"secret", true, false}, {},
                        std::chrono::milliseconds(1000));
  for (const auto& frame : frames) {
    if (frame.header.flags & wire::kSegments) (void)wire::split_segments(frame.body_span());
    (void)wire::unpack_error_body(frame.body_span());
    (void)server.on_frame(frame);
  }
  return 0;
}
