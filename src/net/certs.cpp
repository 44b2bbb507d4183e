// Certificate creation through OpenSSL's X509 API (see certs.hpp).
#include "net/certs.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <memory>

#include <asio/ip/address.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

namespace tether::net {
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertFree {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Certificate = std::unique_ptr<X509, CertFree>;

Error failure(const std::string& what) { return Error{ErrorKind::failed, "cannot create certificates: " + what}; }

bool add_extension(X509* certificate, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
  if (!extension) return false;
  bool added = X509_add_ext(certificate, extension, -1) == 1;
  X509_EXTENSION_free(extension);
  return added;
}

std::string subject_alt_names(const std::vector<std::string>& hosts) {
  std::string names;
  for (const auto& host : hosts) {
    std::error_code ec;
    asio::ip::make_address(host, ec);
    names += (names.empty() ? "" : ",") + std::string(ec ? "DNS:" : "IP:") + host;
  }
  return names;
}

// Signed by `issuer_key` (itself when issuer is null: the CA).
Result<Certificate> make_certificate(const std::string& common_name, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key,
                                     const std::vector<std::string>& hosts, int days) {
  Certificate certificate(X509_new());
  X509* x = certificate.get();
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // a positive serial number
  BIGNUM* number = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(number, X509_get_serialNumber(x));
  BN_free(number);
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);  // tolerates clocks a little behind
  X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(days) * 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("tether"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  bool is_ca = issuer == nullptr;
  X509_set_issuer_name(x, is_ca ? name : X509_get_subject_name(issuer));
  X509* signer = is_ca ? x : issuer;
  bool ok = add_extension(x, signer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
            add_extension(x, signer, NID_subject_key_identifier, "hash") &&
            add_extension(x, signer, NID_authority_key_identifier, "keyid:always");
  if (is_ca) {
    ok = ok && add_extension(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && add_extension(x, signer, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         add_extension(x, signer, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!hosts.empty()) ok = ok && add_extension(x, signer, NID_subject_alt_name, subject_alt_names(hosts));
  }
  if (!ok) return failure("bad certificate extension for " + common_name);
  if (X509_sign(x, is_ca ? key : issuer_key, EVP_sha256()) == 0) return failure("signing " + common_name);
  return certificate;
}

Status write_pem(const std::filesystem::path& path, X509* certificate, EVP_PKEY* key) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) return failure("cannot write " + path.string());
  if (key) ::fchmod(fileno(file), 0600);  // before any key byte is in it
  bool ok = certificate ? PEM_write_X509(file, certificate) == 1
                        : PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  ok = std::fclose(file) == 0 && ok;
  return ok ? ok_status() : Status(failure("cannot write " + path.string()));
}

Key read_key(const std::filesystem::path& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return nullptr;
  Key key(PEM_read_PrivateKey(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  return key;
}

Certificate read_certificate(const std::filesystem::path& path) {
  FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return nullptr;
  Certificate certificate(PEM_read_X509(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  return certificate;
}

Status write_pair(const std::filesystem::path& directory, const std::string& stem, X509* certificate, EVP_PKEY* key) {
  if (auto status = write_pem(directory / (stem + ".key"), nullptr, key); !status) return status;
  return write_pem(directory / (stem + ".pem"), certificate, nullptr);
}

}  // namespace

Status write_certificates(const std::string& directory, const std::vector<CertificateRequest>& requests, int days) {
  std::filesystem::path dir(directory);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return failure("cannot create " + directory + ": " + ec.message());
  Key ca_key = read_key(dir / "ca.key");
  Certificate ca = read_certificate(dir / "ca.pem");
  if (!ca_key || !ca) {
    ca_key.reset(EVP_EC_gen("P-256"));
    if (!ca_key) return failure("key generation");
    auto made = make_certificate("tether test CA", ca_key.get(), nullptr, nullptr, {}, days);
    if (!made) return made.error();
    ca = std::move(*made);
    if (auto status = write_pair(dir, "ca", ca.get(), ca_key.get()); !status) return status;
  }
  for (const auto& request : requests) {
    if (request.name.empty() || request.name == "ca" || request.name.find('/') != std::string::npos)
      return failure("bad certificate name '" + request.name + "'");
    Key key(EVP_EC_gen("P-256"));
    if (!key) return failure("key generation");
    auto made = make_certificate(request.name, key.get(), ca.get(), ca_key.get(), request.hosts, days);
    if (!made) return made.error();
    if (auto status = write_pair(dir, request.name, made->get(), key.get()); !status) return status;
  }
  return ok_status();
}

}  // namespace tether::net
