// The HELLO / CHALLENGE / AUTH / WELCOME handshake as a pure state machine (no I/O), one per side.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "rpc/auth.hpp"
#include "wire/frame.hpp"

namespace tether::rpc {

struct AuthConfig {
  std::string secret;        // empty: no authentication
  bool allow_pickle = false;  // server: accept pickle on authenticated connections
  bool want_pickle = false;   // client: offer pickle in HELLO
};

struct Negotiated {
  bool authenticated = false;
  bool pickle_allowed = false;
  std::uint64_t peer_max_body = wire::kDefaultMaxBody;
  std::chrono::milliseconds peer_heartbeat{0};
};

class Handshake {
 public:
  enum class Role { client, server };
  Handshake(Role role, AuthConfig auth, wire::Limits limits, std::chrono::milliseconds heartbeat);

  struct Step {
    std::vector<wire::OutFrame> send;
    std::optional<Error> failure;  // send the frames, then close
    bool done = false;
  };
  // The client's opening move (HELLO); empty for the server, which waits.
  Step start();
  Step on_frame(const wire::Frame& frame);
  const Negotiated& negotiated() const { return negotiated_; }

 private:
  Step client_on_frame(const wire::Frame& frame);
  Step server_on_frame(const wire::Frame& frame);
  Step server_welcome();
  Step fail_with_error_frame(ErrorKind kind, std::string message);

  Role role_;
  AuthConfig auth_;
  wire::Limits limits_;
  std::chrono::milliseconds heartbeat_;
  Nonce local_nonce_ = random_nonce();
  std::vector<std::byte> peer_nonce_;
  bool client_offered_pickle_ = false;
  enum class State { start, awaiting_hello, awaiting_auth, awaiting_welcome, awaiting_challenge_or_welcome, done, failed };
  State state_;
  Negotiated negotiated_;
};

}  // namespace tether::rpc
