// The HELLO / CHALLENGE / AUTH / WELCOME handshake as a pure state machine (no I/O), one per side.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include "rpc/auth.hpp"
#include "wire/frame.hpp"

namespace tether::net {
class TlsContext;
}

namespace tether::rpc {

struct AuthConfig {
  std::string secret;        // empty: no authentication (server: the secret of the identity "default")
  bool allow_pickle = false;  // server: accept pickle from authenticated peers it trusts for it
  bool want_pickle = false;   // client: offer pickle in HELLO
  std::string identity;       // client: the name its secret is known by at the server (empty: "default")
  std::map<std::string, std::string> identities;  // server: secrets by identity name, beside `secret`
  std::set<std::string> pickle_from;              // server: identities trusted with pickle (empty: all authenticated)
  std::shared_ptr<net::TlsContext> tls;           // TCP links accepted or made with this config use TLS
};

inline constexpr std::string_view kDefaultIdentity = "default";

struct Negotiated {
  bool authenticated = false;  // the peer proved a secret, or its certificate verified
  bool pickle_allowed = false;
  std::uint64_t peer_max_body = wire::kDefaultMaxBody;
  std::chrono::milliseconds peer_heartbeat{0};
  std::string identity;             // server: the identity whose secret the client proved (empty: none)
  std::string certificate_subject;  // the peer's verified TLS certificate subject (empty: none)
  // Every name the peer is known by: its secret's identity and its certificate's common name.
  std::vector<std::string> names() const;
};

// "CN=alice,O=tether" -> "alice"; empty when the subject has no common name.
std::string common_name(std::string_view subject);

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
  // The peer's verified certificate subject, known once TLS is up (before the first frame arrives).
  void set_peer_certificate(std::string subject) { negotiated_.certificate_subject = std::move(subject); }
  const Negotiated& negotiated() const { return negotiated_; }

 private:
  Step client_on_frame(const wire::Frame& frame);
  Step server_on_frame(const wire::Frame& frame);
  Step server_welcome();
  bool trusted_with_pickle() const;
  // The secret the client must prove: its identity's, or a random one no client knows.
  std::string secret_for(std::string_view identity) const;
  Step fail_with_error_frame(ErrorKind kind, std::string message);

  Role role_;
  AuthConfig auth_;
  wire::Limits limits_;
  std::chrono::milliseconds heartbeat_;
  Nonce local_nonce_ = random_nonce();
  std::vector<std::byte> peer_nonce_;
  std::string expected_secret_;  // server: chosen at HELLO from the identity the client names
  bool client_offered_pickle_ = false;
  bool proved_secret_ = false;  // server: the client proved the secret of negotiated_.identity
  enum class State { start, awaiting_hello, awaiting_auth, awaiting_welcome, awaiting_challenge_or_welcome, done, failed };
  State state_;
  Negotiated negotiated_;
};

}  // namespace tether::rpc
