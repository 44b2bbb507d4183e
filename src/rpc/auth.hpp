// Shared-secret challenge-response: nonces and HMAC-SHA256 proofs (OpenSSL).
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tether::rpc {

using Nonce = std::array<std::byte, 16>;
using Proof = std::array<std::byte, 32>;

Nonce random_nonce();
// HMAC-SHA256(secret, label || first || second).
Proof make_proof(std::string_view secret, std::string_view label, std::span<const std::byte> first,
                 std::span<const std::byte> second);
// Constant-time comparison, so a wrong proof leaks nothing through timing.
bool proofs_equal(std::span<const std::byte> a, std::span<const std::byte> b);

inline constexpr std::string_view kClientLabel = "tether-v1-client";
inline constexpr std::string_view kServerLabel = "tether-v1-server";

}  // namespace tether::rpc
