// Creates a private CA and certificates signed by it, for test clusters and development
// (`tether certs`); production deployments bring certificates from their own CA.
#pragma once

#include <string>
#include <vector>

#include "tether/error.hpp"

namespace tether::net {

struct CertificateRequest {
  std::string name;                // the common name, and the file names NAME.pem / NAME.key
  std::vector<std::string> hosts;  // DNS names and IP addresses the certificate is valid for
};

// Writes DIRECTORY/ca.pem and ca.key (reused when both exist, so certificates can be added later)
// and NAME.pem / NAME.key for each request. Keys are P-256, files of keys are mode 0600; every
// certificate serves both as a server's and as a client's (node daemons are both).
Status write_certificates(const std::string& directory, const std::vector<CertificateRequest>& requests, int days = 365);

}  // namespace tether::net
