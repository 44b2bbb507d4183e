// HMAC and randomness from OpenSSL; nothing cryptographic is written by hand.
#include "rpc/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "tether/error.hpp"

namespace tether::rpc {

Nonce random_nonce() {
  Nonce nonce;
  TETHER_ASSERT(RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), nonce.size()) == 1,
                "OpenSSL could not produce random bytes");
  return nonce;
}

Proof make_proof(std::string_view secret, std::string_view label, std::span<const std::byte> first,
                 std::span<const std::byte> second) {
  std::vector<unsigned char> message;
  message.reserve(label.size() + first.size() + second.size());
  message.insert(message.end(), label.begin(), label.end());
  for (auto b : first) message.push_back(std::to_integer<unsigned char>(b));
  for (auto b : second) message.push_back(std::to_integer<unsigned char>(b));
  Proof proof;
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message.data(), message.size(),
       reinterpret_cast<unsigned char*>(proof.data()), &length);
  TETHER_ASSERT(length == proof.size(), "HMAC-SHA256 must give 32 bytes");
  return proof;
}

bool proofs_equal(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tether::rpc
