// Handshake state machine: version and encoding negotiation, and mutual shared-secret authentication.
#include "rpc/handshake.hpp"

#include "wire/msgpack_util.hpp"

namespace tether::rpc {
namespace {

using wire::MessageType;

wire::OutFrame msgpack_frame(MessageType type, std::vector<std::byte> body) {
  wire::OutFrame frame;
  frame.header.type = type;
  frame.header.encoding = wire::Encoding::msgpack;
  frame.payload = std::move(body);
  return frame;
}

void pack_bin(wire::Packer& packer, std::span<const std::byte> bytes) {
  packer.pack_bin(static_cast<std::uint32_t>(bytes.size()));
  packer.pack_bin_body(reinterpret_cast<const char*>(bytes.data()), static_cast<std::uint32_t>(bytes.size()));
}

std::vector<std::byte> bin_field(const msgpack::object& map, std::string_view key) {
  const auto* value = wire::map_get(map, key);
  if (!value || value->type != msgpack::type::BIN) return {};
  auto* p = reinterpret_cast<const std::byte*>(value->via.bin.ptr);
  return {p, p + value->via.bin.size};
}

std::uint64_t uint_field(const msgpack::object& map, std::string_view key, std::uint64_t fallback) {
  const auto* value = wire::map_get(map, key);
  if (!value || value->type != msgpack::type::POSITIVE_INTEGER) return fallback;
  return value->via.u64;
}

bool list_contains(const msgpack::object& map, std::string_view key, std::string_view wanted) {
  const auto* value = wire::map_get(map, key);
  if (!value || value->type != msgpack::type::ARRAY) return false;
  for (std::uint32_t i = 0; i < value->via.array.size; ++i) {
    const auto& item = value->via.array.ptr[i];
    if (item.type == msgpack::type::STR && std::string_view(item.via.str.ptr, item.via.str.size) == wanted) return true;
    if (item.type == msgpack::type::POSITIVE_INTEGER && std::to_string(item.via.u64) == wanted) return true;
  }
  return false;
}

}  // namespace

Handshake::Handshake(Role role, AuthConfig auth, wire::Limits limits, std::chrono::milliseconds heartbeat)
    : role_(role), auth_(std::move(auth)), limits_(limits), heartbeat_(heartbeat),
      state_(role == Role::server ? State::awaiting_hello : State::start) {}

Handshake::Step Handshake::start() {
  Step step;
  if (role_ == Role::server) return step;
  std::vector<std::byte> body;
  wire::ByteSink sink{&body};
  wire::Packer packer(sink);
  packer.pack_map(5);
  wire::pack_str(packer, "versions");
  packer.pack_array(1);
  packer.pack_uint8(wire::kVersion);
  wire::pack_str(packer, "encodings");
  packer.pack_array(auth_.want_pickle ? 2 : 1);
  wire::pack_str(packer, "msgpack");
  if (auth_.want_pickle) wire::pack_str(packer, "pickle");
  wire::pack_str(packer, "nonce");
  pack_bin(packer, local_nonce_);
  wire::pack_str(packer, "max_frame");
  packer.pack_uint64(limits_.max_body);
  wire::pack_str(packer, "heartbeat_ms");
  packer.pack_uint64(static_cast<std::uint64_t>(heartbeat_.count()));
  step.send.push_back(msgpack_frame(MessageType::hello, std::move(body)));
  state_ = State::awaiting_challenge_or_welcome;
  return step;
}

Handshake::Step Handshake::on_frame(const wire::Frame& frame) {
  if (state_ == State::done || state_ == State::failed) return fail_with_error_frame(ErrorKind::bad_request, "handshake already finished");
  return role_ == Role::server ? server_on_frame(frame) : client_on_frame(frame);
}

Handshake::Step Handshake::fail_with_error_frame(ErrorKind kind, std::string message) {
  state_ = State::failed;
  Step step;
  wire::ErrorBody body{kind, message, "", ""};
  auto frame = msgpack_frame(MessageType::error, wire::pack_error_body(body));
  step.send.push_back(std::move(frame));
  step.failure = Error{kind, std::move(message)};
  return step;
}

Handshake::Step Handshake::server_on_frame(const wire::Frame& frame) {
  auto type = frame.header.type;
  if (state_ == State::awaiting_hello && type != MessageType::hello)
    return fail_with_error_frame(ErrorKind::denied, "the handshake must come first (expected HELLO)");
  if (state_ == State::awaiting_auth && type != MessageType::auth)
    return fail_with_error_frame(ErrorKind::denied, "expected AUTH answering the challenge");
  auto handle = wire::unpack_body(frame.body_span());
  if (!handle) return fail_with_error_frame(ErrorKind::bad_request, handle.error().message);
  const auto& map = handle->get();

  if (type == MessageType::hello) {
    if (!list_contains(map, "versions", "1"))
      return fail_with_error_frame(ErrorKind::unimplemented, "no common protocol version (this server speaks 1)");
    peer_nonce_ = bin_field(map, "nonce");
    if (peer_nonce_.size() != 16) return fail_with_error_frame(ErrorKind::bad_request, "HELLO needs a 16-byte nonce");
    client_offered_pickle_ = list_contains(map, "encodings", "pickle");
    negotiated_.peer_max_body = uint_field(map, "max_frame", wire::kDefaultMaxBody);
    negotiated_.peer_heartbeat = std::chrono::milliseconds(uint_field(map, "heartbeat_ms", 0));
    if (auth_.secret.empty()) return server_welcome();
    std::vector<std::byte> body;
    wire::ByteSink sink{&body};
    wire::Packer packer(sink);
    packer.pack_map(1);
    wire::pack_str(packer, "nonce");
    pack_bin(packer, local_nonce_);
    Step step;
    step.send.push_back(msgpack_frame(MessageType::challenge, std::move(body)));
    state_ = State::awaiting_auth;
    return step;
  }
  auto proof = bin_field(map, "proof");
  auto expected = make_proof(auth_.secret, kClientLabel, peer_nonce_, local_nonce_);
  if (!proofs_equal(proof, expected)) return fail_with_error_frame(ErrorKind::denied, "authentication failed");
  negotiated_.authenticated = true;
  return server_welcome();
}

Handshake::Step Handshake::server_welcome() {
  negotiated_.pickle_allowed = auth_.allow_pickle && negotiated_.authenticated && client_offered_pickle_;
  std::vector<std::byte> body;
  wire::ByteSink sink{&body};
  wire::Packer packer(sink);
  packer.pack_map(negotiated_.authenticated ? 6 : 5);
  wire::pack_str(packer, "version");
  packer.pack_uint8(wire::kVersion);
  wire::pack_str(packer, "encodings");
  packer.pack_array(negotiated_.pickle_allowed ? 2 : 1);
  wire::pack_str(packer, "msgpack");
  if (negotiated_.pickle_allowed) wire::pack_str(packer, "pickle");
  wire::pack_str(packer, "max_frame");
  packer.pack_uint64(limits_.max_body);
  wire::pack_str(packer, "heartbeat_ms");
  packer.pack_uint64(static_cast<std::uint64_t>(heartbeat_.count()));
  wire::pack_str(packer, "authenticated");
  packer.pack(negotiated_.authenticated);
  if (negotiated_.authenticated) {
    wire::pack_str(packer, "proof");
    pack_bin(packer, make_proof(auth_.secret, kServerLabel, local_nonce_, peer_nonce_));
  }
  Step step;
  step.send.push_back(msgpack_frame(MessageType::welcome, std::move(body)));
  step.done = true;
  state_ = State::done;
  return step;
}

Handshake::Step Handshake::client_on_frame(const wire::Frame& frame) {
  auto type = frame.header.type;
  if (type == MessageType::error) {
    auto error = wire::unpack_error_body(frame.body_span());
    state_ = State::failed;
    Step step;
    step.failure = Error{error.kind, error.message};
    return step;
  }
  auto handle = wire::unpack_body(frame.body_span());
  if (!handle) return fail_with_error_frame(ErrorKind::bad_request, handle.error().message);
  const auto& map = handle->get();
  if (type == MessageType::challenge && state_ == State::awaiting_challenge_or_welcome) {
    if (auth_.secret.empty()) {
      state_ = State::failed;
      return Step{{}, Error{ErrorKind::denied, "the server requires authentication and no secret was given"}, false};
    }
    peer_nonce_ = bin_field(map, "nonce");
    if (peer_nonce_.size() != 16) return fail_with_error_frame(ErrorKind::bad_request, "CHALLENGE needs a 16-byte nonce");
    std::vector<std::byte> body;
    wire::ByteSink sink{&body};
    wire::Packer packer(sink);
    packer.pack_map(1);
    wire::pack_str(packer, "proof");
    pack_bin(packer, make_proof(auth_.secret, kClientLabel, local_nonce_, peer_nonce_));
    Step step;
    step.send.push_back(msgpack_frame(MessageType::auth, std::move(body)));
    state_ = State::awaiting_welcome;
    return step;
  }
  if (type != MessageType::welcome) return fail_with_error_frame(ErrorKind::bad_request, "unexpected frame during the handshake");
  const auto* authenticated = wire::map_get(map, "authenticated");
  negotiated_.authenticated = authenticated && authenticated->type == msgpack::type::BOOLEAN && authenticated->via.boolean;
  if (negotiated_.authenticated) {
    auto expected = make_proof(auth_.secret, kServerLabel, peer_nonce_, local_nonce_);
    if (!proofs_equal(bin_field(map, "proof"), expected))
      return fail_with_error_frame(ErrorKind::denied, "the server could not prove it knows the secret");
  } else if (!auth_.secret.empty()) {
    state_ = State::failed;
    return Step{{}, Error{ErrorKind::denied, "a secret was given but the server did not authenticate"}, false};
  }
  // Pickle only if this side asked for it and the connection is authenticated, whatever the server says.
  negotiated_.pickle_allowed = auth_.want_pickle && negotiated_.authenticated && list_contains(map, "encodings", "pickle");
  negotiated_.peer_max_body = uint_field(map, "max_frame", wire::kDefaultMaxBody);
  negotiated_.peer_heartbeat = std::chrono::milliseconds(uint_field(map, "heartbeat_ms", 0));
  state_ = State::done;
  Step step;
  step.done = true;
  return step;
}

}  // namespace tether::rpc
