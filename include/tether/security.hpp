// TLS options of clients and servers, and who is calling the servant method that runs now.
// See docs/security.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace tether {

// PEM files. A server needs cert_file and key_file; with ca_file it asks clients for a certificate
// signed by that CA (and refuses clients without one when `mutual`). A client verifies the server
// against ca_file (the system's trusted roots when empty) and that the certificate names the host
// it connects to, and presents cert_file/key_file when given. TLS is on when any file is given,
// and for tethers:// URIs (then TETHER_TLS_CA / _CERT / _KEY fill in what is not given here).
struct TlsOptions {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  bool mutual = false;         // server: refuse clients without a verified certificate
  bool verify_server = true;   // client: false only for tests (encryption without knowing who answers)
  bool check_host_name = true;  // client: the certificate must name the host connected to
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// The caller of the servant method running in this thread (plain, oneway and stream methods, and
// the body of an async method up to its return; not later completions through its Reply).
struct CallContext {
  std::string peer;                // its verified certificate's common name, else its secret's identity, else ""
  std::vector<std::string> names;  // every identity it proved
  std::string certificate;         // its verified certificate's subject ("CN=alice,O=tether"), or ""
  std::string address;             // where the call came from
  bool authenticated = false;      // it proved a secret or a certificate
};

// nullopt outside a servant method.
std::optional<CallContext> current_call();

}  // namespace tether
