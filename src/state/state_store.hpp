// The head's durable state (tetherd --state-dir): what the name server, the tuple spaces and the
// topics hold, kept as records that survive a restart of the head, even after SIGKILL. Services see
// only this interface; SQLite is behind it (state_store.cpp).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tether/error.hpp"

namespace tether::state {

// Records of several kinds ("names", "tuples", "retained"), each a map of key -> value bytes. A
// put or erase is durable when it returns: a service answers its caller only after that.
class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual Status put(std::string_view kind, std::string_view key, std::string_view value) = 0;
  virtual Status erase(std::string_view kind, std::string_view key) = 0;
  // Every record of `kind`, in key order (bytewise).
  virtual std::vector<std::pair<std::string, std::string>> load(std::string_view kind) = 0;
};

// DIRECTORY/head.sqlite3, made when missing. Write-ahead log, synchronous=NORMAL: a commit is in
// the log (in the OS's hands) when put returns, so a killed head loses nothing; a power cut may
// lose the last commits (see docs/reliability.md).
Result<std::unique_ptr<StateStore>> open_state_store(const std::filesystem::path& directory);

}  // namespace tether::state
