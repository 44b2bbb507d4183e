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
  bool named = !auth_.secret.empty() && !auth_.identity.empty();
  packer.pack_map(named ? 6 : 5);
  if (named) {
    wire::pack_str(packer, "identity");
    wire::pack_str(packer, auth_.identity);
  }
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
    if (auth_.secret.empty() && auth_.identities.empty()) return server_welcome();
    const auto* identity = wire::map_get(map, "identity");
    if (identity && identity->type == msgpack::type::STR)
      negotiated_.identity.assign(identity->via.str.ptr, identity->via.str.size);
    if (negotiated_.identity.empty()) negotiated_.identity = kDefaultIdentity;
    expected_secret_ = secret_for(negotiated_.identity);
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
  auto expected = make_proof(expected_secret_, kClientLabel, peer_nonce_, local_nonce_);
  if (!proofs_equal(proof, expected)) return fail_with_error_frame(ErrorKind::denied, "authentication failed");
  negotiated_.authenticated = true;
  proved_secret_ = true;
  return server_welcome();
}

std::string Handshake::secret_for(std::string_view identity) const {
  if (auto it = auth_.identities.find(std::string(identity)); it != auth_.identities.end()) return it->second;
  if (identity == kDefaultIdentity && !auth_.secret.empty()) return auth_.secret;
  // An unknown name fails at AUTH like a wrong secret, so names cannot be probed one by one.
  auto noise = random_nonce();
  return std::string(reinterpret_cast<const char*>(noise.data()), noise.size());
}

bool Handshake::trusted_with_pickle() const {
  if (auth_.pickle_from.empty()) return true;
  for (const auto& name : negotiated_.names())
    if (auth_.pickle_from.count(name)) return true;
  return false;
}

Handshake::Step Handshake::server_welcome() {
  if (!negotiated_.certificate_subject.empty()) negotiated_.authenticated = true;
  negotiated_.pickle_allowed = auth_.allow_pickle && negotiated_.authenticated && client_offered_pickle_ && trusted_with_pickle();
  std::vector<std::byte> body;
  wire::ByteSink sink{&body};
  wire::Packer packer(sink);
  packer.pack_map(proved_secret_ ? 6 : 5);
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
  wire::pack_str(packer, "authenticated");  // on the wire: the client proved a secret
  packer.pack(proved_secret_);
  if (proved_secret_) {
    wire::pack_str(packer, "proof");
    pack_bin(packer, make_proof(expected_secret_, kServerLabel, local_nonce_, peer_nonce_));
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
  bool proved = authenticated && authenticated->type == msgpack::type::BOOLEAN && authenticated->via.boolean;
  // The server is authenticated by its proof of the secret, or by its verified TLS certificate.
  negotiated_.authenticated = proved || !negotiated_.certificate_subject.empty();
  if (proved) {
    auto expected = make_proof(auth_.secret, kServerLabel, peer_nonce_, local_nonce_);
    if (!proofs_equal(bin_field(map, "proof"), expected))
      return fail_with_error_frame(ErrorKind::denied, "the server could not prove it knows the secret");
  } else if (!auth_.secret.empty()) {  // the server did not prove the secret back
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

std::vector<std::string> Negotiated::names() const {
  std::vector<std::string> names;
  if (!identity.empty()) names.push_back(identity);
  if (auto name = common_name(certificate_subject); !name.empty()) names.push_back(std::move(name));
  return names;
}

std::string common_name(std::string_view subject) {
  // RFC 2253: comma-separated, most specific first; a comma inside a value is escaped with '\'.
  std::size_t start = 0;
  while (start < subject.size()) {
    std::size_t end = start;
    while (end < subject.size() && subject[end] != ',') end += subject[end] == '\\' ? 2 : 1;
    auto part = subject.substr(start, std::min(end, subject.size()) - start);
    if (part.substr(0, 3) == "CN=") {
      std::string name;
      for (std::size_t i = 3; i < part.size(); ++i) {
        if (part[i] == '\\' && i + 1 < part.size()) ++i;
        name.push_back(part[i]);
      }
      return name;
    }
    start = end + 1;
  }
  return {};
}

}  // namespace tether::rpc
