// From the public TlsOptions to the core's TLS context.
#pragma once

#include <memory>

#include "net/tls.hpp"
#include "tether/security.hpp"

namespace tether::api {

inline Result<std::shared_ptr<net::TlsContext>> tls_context_of(const TlsOptions& options) {
  return net::TlsContext::create(net::TlsConfig{options.cert_file, options.key_file, options.ca_file, options.mutual,
                                                options.verify_server, options.check_host_name});
}

}  // namespace tether::api
