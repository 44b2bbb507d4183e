// libFuzzer target: the handshake state machines of both sides fed arbitrary frames: a server that
// knows a secret and named identities (and trusts one with pickle), and a client with a named secret.
// The first byte picks whose turn each decoded frame is; the rest is decoded as frames.
#include <cstring>

#include "rpc/handshake.hpp"
#include "wire/frame.hpp"

using namespace tether;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::uint8_t turns = data[0];
  wire::FrameDecoder decoder(wire::Limits{1 << 16});
  std::vector<wire::Frame> frames;
  std::size_t offset = 1;
  while (offset < size) {
    auto into = decoder.prepare();
    std::size_t n = std::min(into.size(), size - offset);
    std::memcpy(into.data(), data + offset, n);
    offset += n;
    if (!decoder.commit(n, frames)) break;
  }
  rpc::AuthConfig server_auth{"default-secret", true, false};
  server_auth.identities = {{"alice", "alice-secret"}, {"node-7", "n7"}};
  server_auth.pickle_from = {"alice"};
  rpc::AuthConfig client_auth{"alice-secret", false, true};
  client_auth.identity = "alice";
  rpc::Handshake server(rpc::Handshake::Role::server, server_auth, {}, std::chrono::milliseconds(1000));
  rpc::Handshake client(rpc::Handshake::Role::client, client_auth, {}, std::chrono::milliseconds(1000));
  (void)client.start();
  if (turns & 0x80) server.set_peer_certificate("CN=alice,O=tether");  // as if TLS verified a certificate
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto& side = (turns >> (i % 7)) & 1 ? client : server;
    auto step = side.on_frame(frames[i]);
    (void)step;
    (void)rpc::common_name("CN=" + std::string(frames[i].meta));  // the subject parser, on peer-chosen text
  }
  return 0;
}
